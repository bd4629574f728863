#include "metrics/process_metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <vector>

#include <sys/resource.h>

#include "metrics/exposition.h"
#include "metrics/registry.h"

namespace sluice::metrics {

namespace detail {

std::vector<std::string_view> SplitSpaces(std::string_view text) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n')) {
      ++i;
    }
    const size_t start = i;
    while (i < text.size() && text[i] != ' ' && text[i] != '\n') {
      ++i;
    }
    if (i > start) {
      fields.push_back(text.substr(start, i - start));
    }
  }
  return fields;
}

std::optional<uint64_t> ParseU64(std::string_view s) {
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

std::optional<ProcStat> ParseProcStat(std::string_view text) {
  const size_t paren = text.rfind(')');
  if (paren == std::string_view::npos) {
    return std::nullopt;
  }
  // After ')': field 3 (state) is fields[0]; proc(5): utime is field 14, stime 15, starttime 22.
  const std::vector<std::string_view> fields = SplitSpaces(text.substr(paren + 1));
  constexpr size_t kFirstField = 3;
  const auto field = [&](size_t number) -> std::optional<uint64_t> {
    if (number - kFirstField >= fields.size()) {
      return std::nullopt;
    }
    return ParseU64(fields[number - kFirstField]);
  };
  const auto utime = field(14);
  const auto stime = field(15);
  const auto start = field(22);
  if (!utime || !stime || !start) {
    return std::nullopt;
  }
  return ProcStat{*utime, *stime, *start};
}

}  // namespace detail

namespace {

std::optional<std::string> ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

// Boot time (seconds since the epoch) from the btime line of /proc/stat.
std::optional<uint64_t> BootTime() {
  const auto text = ReadFile("/proc/stat");
  if (!text) {
    return std::nullopt;
  }
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("btime ")) {
      uint64_t v = 0;
      const std::string_view rest = std::string_view(line).substr(6);
      if (std::from_chars(rest.data(), rest.data() + rest.size(), v).ec == std::errc()) {
        return v;
      }
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    return std::nullopt;
  }
  uint64_t n = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') {
      ++n;
    }
  }
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // not counting the descriptor of the listing itself
}

}  // namespace

void RegisterProcessMetrics(Registry& registry, std::string version, std::string git_revision) {
  const long ticks = sysconf(_SC_CLK_TCK);       // NOLINT(google-runtime-int): POSIX type
  const long page_size = sysconf(_SC_PAGESIZE);  // NOLINT(google-runtime-int)
  // The start time does not change: compute it once.
  std::optional<double> start_time;
  const auto stat_text = ReadFile("/proc/self/stat");
  const auto boot = BootTime();
  if (stat_text && boot && ticks > 0) {
    if (const auto stat = detail::ParseProcStat(*stat_text)) {
      start_time = static_cast<double>(*boot) +
                   static_cast<double>(stat->start_ticks) / static_cast<double>(ticks);
    }
  }

  registry.AddCollector([ticks, page_size, start_time, version = std::move(version),
                         revision = std::move(git_revision)](Exposition& out) {
    if (ticks > 0) {
      const auto text = ReadFile("/proc/self/stat");
      if (const auto stat = text ? detail::ParseProcStat(*text) : std::nullopt) {
        out.Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                   MetricType::kCounter);
        out.Sample("process_cpu_seconds_total", {},
                   static_cast<double>(stat->utime_ticks + stat->stime_ticks) /
                       static_cast<double>(ticks));
      }
    }
    // statm(5): size resident shared text lib data dt, in pages.
    const auto statm = ReadFile("/proc/self/statm");
    const std::vector<std::string_view> pages =
        statm ? detail::SplitSpaces(*statm) : std::vector<std::string_view>{};
    const auto size = pages.size() >= 2 ? detail::ParseU64(pages[0]) : std::nullopt;
    const auto resident = pages.size() >= 2 ? detail::ParseU64(pages[1]) : std::nullopt;
    if (resident && page_size > 0) {
      out.Family("process_resident_memory_bytes", "Resident memory size in bytes.",
                 MetricType::kGauge);
      out.Sample("process_resident_memory_bytes", {}, *resident * static_cast<uint64_t>(page_size));
    }
    if (size && page_size > 0) {
      out.Family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                 MetricType::kGauge);
      out.Sample("process_virtual_memory_bytes", {}, *size * static_cast<uint64_t>(page_size));
    }
    if (const auto fds = CountOpenFds()) {
      out.Family("process_open_fds", "Number of open file descriptors.", MetricType::kGauge);
      out.Sample("process_open_fds", {}, *fds);
    }
    if (rlimit limit{}; getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      out.Family("process_max_fds", "Maximum number of open file descriptors.", MetricType::kGauge);
      if (limit.rlim_cur == RLIM_INFINITY) {
        out.Sample("process_max_fds", {}, std::numeric_limits<double>::infinity());
      } else {
        out.Sample("process_max_fds", {}, static_cast<uint64_t>(limit.rlim_cur));
      }
    }
    if (start_time) {
      out.Family("process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", MetricType::kGauge);
      out.Sample("process_start_time_seconds", {}, *start_time);
    }
    out.Family("sluice_build_info",
               "Always 1; the labels name the version and the git revision of this build.",
               MetricType::kGauge);
    out.Sample("sluice_build_info", {{"version", version}, {"revision", revision}}, 1);
  });
}

}  // namespace sluice::metrics
