#include "base/log.h"

#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace sluice {

std::atomic<uint64_t> g_bug_count{0};

void InitLogging(const char* level) {
  static bool done = false;
  if (!done) {
    auto logger = spdlog::stderr_color_mt("sluice");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
    done = true;
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

void BugAbort(const char* file, int line, const char* what) {
  spdlog::critical("BUG at {}:{}: {}", file, line, what);
  spdlog::default_logger()->flush();
  std::abort();
}

}  // namespace sluice
