// An independent check of the exposition: Prometheus' own `promtool check metrics` parses a
// realistic scrape and runs its lint rules (naming, units, help text, histogram shape).

#include <stdio.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "base/temp_dir.h"
#include "metrics/event_log.h"
#include "metrics/process_metrics.h"
#include "metrics/registry.h"

namespace sluice::metrics {
namespace {

std::string FindPromtool() {
  if (const char* env = std::getenv("PROMTOOL"); env != nullptr && *env != '\0') {
    return env;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  dirs += ":/usr/bin:/usr/local/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::filesystem::path candidate =
        std::filesystem::path(dirs.substr(start, end - start)) / "promtool";
    std::error_code ec;
    if (end > start && std::filesystem::is_regular_file(candidate, ec)) {
      return candidate.string();
    }
    start = end + 1;
  }
  return "";
}

// Runs `promtool check metrics < file`; returns its exit status and combined output.
std::pair<int, std::string> CheckMetrics(const std::string& promtool, const std::string& file) {
  const std::string command = "'" + promtool + "' check metrics < '" + file + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return {-1, "popen failed"};
  }
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) {
    output.append(buf, n);
  }
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// A registry shaped like the daemon's: counters, gauges and histograms with and without labels,
// hostile label values, an overflowed family, a collector, the process metrics.
std::string RealisticScrape(const std::string& dir) {
  Registry registry(4);
  auto& connections = registry.AddCounter("sluice_smtpd_connections_total",
                                          "SMTP connections accepted.", {"listener", "tls"});
  connections.WithLabels({"mx", "none"}).Inc(0, 120);
  connections.WithLabels({"submission", "starttls"}).Inc(1, 7);
  auto& replies =
      registry.AddCounter("sluice_smtpd_replies_total", "SMTP replies sent.", {"class"});
  for (const char* c : {"2xx", "4xx", "5xx"}) {
    replies.WithLabels({c}).Inc(2, 3);
  }
  auto& domains = registry.AddCounter("sluice_delivery_attempts_total",
                                      "Delivery attempts by destination domain and result.",
                                      {"domain", "result"});
  domains.SetMaxSeries(2);
  domains.WithLabels({"gmail.com", "delivered"}).Inc(0);
  domains.WithLabels({"we\"ird\\dom\nain", "transfail"}).Inc(1);
  domains.WithLabels({"overflow.example", "permfail"}).Inc(3);  // → other
  registry.AddGauge("sluice_smtpd_connections", "Open SMTP connections.").WithLabels({}).Add(1, 5);
  registry.AddGauge("sluice_queue_messages", "Messages in the queue.", {"state"})
      .WithLabels({"ready"})
      .Set(42);
  auto& commit = registry.AddHistogram("sluice_spool_commit_duration_seconds",
                                       "Enqueue to fsync done.", {}, DefaultLatencyBuckets());
  for (double v : {0.001, 0.004, 0.02, 0.3, 12.0}) {
    commit.WithLabels({}).Observe(0, v);
  }
  auto& sizes = registry.AddHistogram("sluice_smtpd_message_size_bytes", "Received sizes.",
                                      {"listener"}, ExponentialBuckets(1024, 4, 8));
  sizes.WithLabels({"mx"}).Observe(1, 5000);
  sizes.WithLabels({"submission"}).Observe(registry.other_thread(), 1e9);
  registry.AddCollector([](Exposition& out) {
    out.Family("sluice_spool_oldest_message_age_seconds", "Age of the oldest queued message.",
               MetricType::kGauge);
    out.Sample("sluice_spool_oldest_message_age_seconds", {{"queue", "deferred"}}, 3600.5);
    out.Family("sluice_rocksdb_live_sst_files_size_bytes", "RocksDB live SST bytes.",
               MetricType::kGauge);
    out.Sample("sluice_rocksdb_live_sst_files_size_bytes", {}, uint64_t{1} << 40);
  });
  RegisterProcessMetrics(registry, "0.1.0", "deadbeef");
  auto log = EventLog::Open(dir + "/events.log", {.metrics = &registry});
  EXPECT_TRUE(log.ok());
  (*log)->Write(Event("reception"));
  (*log)->Stop();
  return registry.Scrape();
}

TEST(PromtoolTest, ScrapePassesPromtoolCheckMetricsWithoutLintWarnings) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty())
      << "promtool not found: install the Debian package `prometheus` "
         "(apt-get install -y prometheus), or set PROMTOOL=/path/to/promtool";
  TempDir dir;
  const std::string scrape = RealisticScrape(dir.path());
  const std::string file = dir.path() + "/scrape.txt";
  std::ofstream(file) << scrape;
  ASSERT_NE(scrape.find("sluice_delivery_attempts_total{domain=\"other\",result=\"other\"} 1"),
            std::string::npos);
  ASSERT_NE(scrape.find("process_open_fds "), std::string::npos);

  const auto [status, output] = CheckMetrics(promtool, file);
  EXPECT_EQ(status, 0) << output << "\n--- scrape ---\n" << scrape;
  EXPECT_EQ(output, "") << "promtool lint output:\n" << output << "\n--- scrape ---\n" << scrape;
}

// The checker itself works: a broken exposition is refused (otherwise the test above could not
// fail).
TEST(PromtoolTest, PromtoolRejectsABrokenExposition) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty()) << "promtool not found: install the Debian package `prometheus`";
  TempDir dir;
  const std::string file = dir.path() + "/bad.txt";
  std::ofstream(file) << "# TYPE x counter\nx_total 1\nx_total 1\nbroken line{\n";
  const auto [status, output] = CheckMetrics(promtool, file);
  EXPECT_NE(status, 0) << output;
  std::ofstream(file) << "# HELP sluice_things Things.\n# TYPE sluice_things counter\n"
                         "sluice_things 1\n";  // lint: counter without _total
  const auto [lint_status, lint_output] = CheckMetrics(promtool, file);
  EXPECT_NE(lint_output, "");
  (void)lint_status;
}

}  // namespace
}  // namespace sluice::metrics
