#include "metrics/process_metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "metrics/registry.h"

namespace sluice::metrics {
namespace {

TEST(ProcStatTest, CountsFieldsFromTheLastParenthesis) {
  // The command name may contain spaces and parentheses.
  const std::string stat =
      "1234 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 98765 20 21\n";
  const auto parsed = detail::ParseProcStat(stat);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->utime_ticks, 111u);
  EXPECT_EQ(parsed->stime_ticks, 222u);
  EXPECT_EQ(parsed->start_ticks, 98765u);
}

TEST(ProcStatTest, RejectsTruncatedInput) {
  EXPECT_FALSE(detail::ParseProcStat("1234 (x) S 1 2 3").has_value());
  EXPECT_FALSE(detail::ParseProcStat("no parenthesis").has_value());
}

std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != '#') {
      const size_t space = line.rfind(' ');
      out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
  }
  return out;
}

TEST(ProcessMetricsTest, ReportsThisProcess) {
  Registry registry(1);
  RegisterProcessMetrics(registry, "1.2.3", "abc123");
  const auto before = Samples(registry.Scrape());
  EXPECT_GT(before.at("process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(before.at("process_virtual_memory_bytes"), before.at("process_resident_memory_bytes"));
  EXPECT_GE(before.at("process_cpu_seconds_total"), 0);
  EXPECT_GT(before.at("process_max_fds"), 0);
  EXPECT_EQ(before.at("sluice_build_info{version=\"1.2.3\",revision=\"abc123\"}"), 1);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double start = before.at("process_start_time_seconds");
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 24 * 3600);

  // Three more descriptors show up as three more open fds.
  int fds[3];
  for (int& fd : fds) {
    fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
  }
  const auto after = Samples(registry.Scrape());
  for (int fd : fds) {
    ::close(fd);
  }
  EXPECT_EQ(after.at("process_open_fds"), before.at("process_open_fds") + 3);
}

}  // namespace
}  // namespace sluice::metrics
