#pragma once

// Logging: spdlog, human-readable, to stderr. SLUICE_BUG marks a broken
// invariant of our own code: abort in debug builds, log and count in release.
// Never use it for network input: bad input gets an SMTP error, not a bug report.

#include <atomic>
#include <cstdint>

#include <spdlog/spdlog.h>

namespace sluice {

// Sets up the default logger ("info", "debug", ...). Safe to call twice.
void InitLogging(const char* level);

// Count of SLUICE_BUG hits in this process (release builds), exported as sluice_bugs_total.
extern std::atomic<uint64_t> g_bug_count;

[[noreturn]] void BugAbort(const char* file, int line, const char* what);

}  // namespace sluice

#ifdef NDEBUG
#define SLUICE_BUG(what)                                              \
  do {                                                                \
    ::sluice::g_bug_count.fetch_add(1, std::memory_order_relaxed);    \
    spdlog::critical("BUG at {}:{}: {}", __FILE__, __LINE__, (what)); \
  } while (0)
#else
#define SLUICE_BUG(what) ::sluice::BugAbort(__FILE__, __LINE__, (what))
#endif

// CHECK: the invariant must hold in every build; violation aborts.
#define SLUICE_CHECK(cond)                           \
  do {                                               \
    if (!(cond))                                     \
      ::sluice::BugAbort(__FILE__, __LINE__, #cond); \
  } while (0)
