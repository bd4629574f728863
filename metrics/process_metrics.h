#pragma once

// Process metrics with the names every Prometheus client library uses, read from /proc at scrape
// time, and sluice_build_info.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::metrics {

class Registry;

// Adds a collector for:
//   process_cpu_seconds_total      user + system CPU time (/proc/self/stat utime, stime)
//   process_resident_memory_bytes  resident set size (/proc/self/statm)
//   process_virtual_memory_bytes   virtual memory size (/proc/self/statm)
//   process_open_fds               entries in /proc/self/fd
//   process_max_fds                RLIMIT_NOFILE soft limit
//   process_start_time_seconds     start time since the Unix epoch (stat starttime + boot time)
//   sluice_build_info{version,revision} 1
// A value that cannot be read is left out of that scrape rather than reported as 0.
void RegisterProcessMetrics(Registry& registry, std::string version, std::string git_revision);

namespace detail {

// The fields of /proc/<pid>/stat we use, in clock ticks.
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_ticks = 0;  // since boot
};
// Parses the text of /proc/<pid>/stat. The command name (field 2) is in parentheses and may itself
// contain spaces and parentheses, so fields are counted from the last ')'.
std::optional<ProcStat> ParseProcStat(std::string_view text);

// Whitespace-separated fields of a /proc file.
std::vector<std::string_view> SplitSpaces(std::string_view text);
std::optional<uint64_t> ParseU64(std::string_view text);

}  // namespace detail

}  // namespace sluice::metrics
