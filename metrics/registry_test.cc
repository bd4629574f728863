#include "metrics/registry.h"

#include <atomic>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::metrics {
namespace {

// The lines of the built-in overflow family, always first in a scrape.
constexpr std::string_view kOverflowHeader =
    "# HELP sluice_metrics_series_overflow_total WithLabels calls that found their metric family "
    "at its series limit and were answered with the series whose labels are all \"other\".\n"
    "# TYPE sluice_metrics_series_overflow_total counter\n";

// Sample lines of a scrape: "name{labels}" → value.
std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    const size_t space = line.rfind(' ');
    const std::string key = line.substr(0, space);
    const std::string value = line.substr(space + 1);
    EXPECT_FALSE(samples.contains(key)) << "duplicate series " << key;
    samples[key] = value == "+Inf" ? INFINITY : std::stod(value);
  }
  return samples;
}

TEST(RegistryTest, CounterSumsShardCellsAndTheOtherThreadCell) {
  Registry registry(4);
  EXPECT_EQ(registry.other_thread(), 4u);
  Counter& c = registry.AddCounter("sluice_test_events_total", "Events.").WithLabels({});
  c.Inc(0);
  c.Inc(1, 10);
  c.Inc(3, 100);
  c.Inc(registry.other_thread(), 1000);
  EXPECT_EQ(c.Value(), 1111u);
}

TEST(RegistryTest, GaugeAddsSignedSharesAndSetOverwritesTheOtherCell) {
  Registry registry(2);
  Gauge& g = registry.AddGauge("sluice_test_connections", "Connections.").WithLabels({});
  g.Add(0, 5);
  g.Add(1, -2);
  EXPECT_EQ(g.Value(), 3);
  g.Add(1, -10);
  EXPECT_EQ(g.Value(), -7);
  Gauge& set = registry.AddGauge("sluice_test_depth", "Depth.").WithLabels({});
  set.Set(42);
  set.Set(7);
  EXPECT_EQ(set.Value(), 7);
}

TEST(RegistryTest, HistogramBucketsUseLessOrEqual) {
  Registry registry(2);
  Histogram& h =
      registry.AddHistogram("sluice_test_seconds", "Latency.", {}, {0.1, 1, 10}).WithLabels({});
  h.Observe(0, 0.1);  // le=0.1 (bounds are inclusive)
  h.Observe(1, 0.5);  // le=1
  h.Observe(0, 10);   // le=10
  h.Observe(1, 11);   // +Inf
  h.Observe(registry.other_thread(), 0.01);
  h.Observe(0, std::nan(""));  // ignored
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.buckets, (std::vector<uint64_t>{2, 1, 1, 1}));
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.sum, 0.1 + 0.5 + 10 + 11 + 0.01);
}

TEST(RegistryTest, ScrapeIsInRegistrationOrderWithCollectorsInterleaved) {
  Registry registry(2);
  auto& counter = registry.AddCounter("sluice_a_total", "A.", {"kind"});
  registry.AddCollector([](Exposition& out) {
    out.Family("sluice_b", "B.", MetricType::kGauge);
    out.Sample("sluice_b", {}, 0.5);
  });
  auto& hist = registry.AddHistogram("sluice_c_seconds", "C.", {"side"}, {0.5, 1});
  registry.AddGauge("sluice_d", "D.").WithLabels({}).Add(1, -3);
  counter.WithLabels({"x"}).Inc(0, 2);
  counter.WithLabels({"y\"z"}).Inc(1);
  hist.WithLabels({"in"}).Observe(0, 0.25);
  hist.WithLabels({"in"}).Observe(1, 2);

  // Families with labels show their overflow counter at 0 from the start.
  EXPECT_EQ(registry.Scrape(),
            std::string(kOverflowHeader) +
                "sluice_metrics_series_overflow_total{family=\"sluice_a_total\"} 0\n"
                "sluice_metrics_series_overflow_total{family=\"sluice_c_seconds\"} 0\n" +
                "# HELP sluice_a_total A.\n"
                "# TYPE sluice_a_total counter\n"
                "sluice_a_total{kind=\"x\"} 2\n"
                "sluice_a_total{kind=\"y\\\"z\"} 1\n"
                "# HELP sluice_b B.\n"
                "# TYPE sluice_b gauge\n"
                "sluice_b 0.5\n"
                "# HELP sluice_c_seconds C.\n"
                "# TYPE sluice_c_seconds histogram\n"
                "sluice_c_seconds_bucket{side=\"in\",le=\"0.5\"} 1\n"
                "sluice_c_seconds_bucket{side=\"in\",le=\"1\"} 1\n"
                "sluice_c_seconds_bucket{side=\"in\",le=\"+Inf\"} 2\n"
                "sluice_c_seconds_sum{side=\"in\"} 2.25\n"
                "sluice_c_seconds_count{side=\"in\"} 2\n"
                "# HELP sluice_d D.\n"
                "# TYPE sluice_d gauge\n"
                "sluice_d -3\n");
}

TEST(RegistryTest, SameLabelsGiveTheSameSeriesAndReferencesStayValid) {
  Registry registry(1);
  auto& family = registry.AddCounter("sluice_dest_total", "Per destination.", {"dest"});
  family.SetMaxSeries(100000);
  Counter& first = family.WithLabels({"d0"});
  first.Inc(0, 7);
  for (int i = 1; i < 20000; ++i) {
    family.WithLabels({std::to_string(i)}).Inc(0);
  }
  EXPECT_EQ(&family.WithLabels({"d0"}), &first);
  EXPECT_EQ(first.Value(), 7u);
  EXPECT_EQ(family.series_count(), 20000u);
}

TEST(RegistryTest, RegisteringTheSameFamilyAgainReturnsIt) {
  Registry registry(1);
  auto& a = registry.AddCounter("sluice_x_total", "X.", {"k"});
  auto& b = registry.AddCounter("sluice_x_total", "X again.", {"k"});
  EXPECT_EQ(&a, &b);
}

TEST(RegistryTest, CardinalityCapSendsNewLabelSetsToOther) {
  Registry registry(2);
  auto& family = registry.AddCounter("sluice_domain_total", "Per domain.", {"domain", "result"});
  family.SetMaxSeries(2);
  Counter& a = family.WithLabels({"a.example", "ok"});
  Counter& b = family.WithLabels({"b.example", "ok"});
  Counter& c = family.WithLabels({"c.example", "ok"});  // past the limit
  Counter& d = family.WithLabels({"d.example", "fail"});
  Counter& other = family.WithLabels({"other", "other"});
  EXPECT_NE(&a, &b);
  EXPECT_EQ(&c, &other);
  EXPECT_EQ(&d, &other);
  EXPECT_EQ(&family.WithLabels({"a.example", "ok"}), &a);  // existing sets keep their series
  a.Inc(0);
  c.Inc(1);
  d.Inc(1);
  const auto samples = ParseSamples(registry.Scrape());
  EXPECT_EQ(samples.at("sluice_domain_total{domain=\"a.example\",result=\"ok\"}"), 1);
  EXPECT_EQ(samples.at("sluice_domain_total{domain=\"other\",result=\"other\"}"), 2);
  EXPECT_FALSE(samples.contains("sluice_domain_total{domain=\"c.example\",result=\"ok\"}"));
  EXPECT_EQ(samples.at("sluice_metrics_series_overflow_total{family=\"sluice_domain_total\"}"), 2);
  EXPECT_EQ(family.series_count(), 3u);  // two real series and the overflow series
}

TEST(RegistryTest, ExponentialBuckets) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(DefaultLatencyBuckets().front(), 0.005);
  EXPECT_EQ(DefaultLatencyBuckets().back(), 10);
}

TEST(RegistryDeathTest, RegistrationRulesAreEnforced) {
  EXPECT_DEATH({ Registry(1).AddCounter("sluice_no_suffix", "h"); }, "end in _total");
  EXPECT_DEATH({ Registry(1).AddGauge("sluice_x_total", "h"); }, "only counter");
  EXPECT_DEATH({ Registry(1).AddGauge("bad-name", "h"); }, "invalid metric name");
  EXPECT_DEATH({ Registry(1).AddGauge("g", "h", {"__reserved"}); }, "invalid label name");
  EXPECT_DEATH({ Registry(1).AddHistogram("h_seconds", "h", {"le"}, {1}); }, "reserve le");
  EXPECT_DEATH(
      {
        Registry r(1);
        r.AddHistogram("h_seconds", "h", {}, {1});
        r.AddGauge("h_seconds_count", "h");
      },
      "already used");
  EXPECT_DEATH(
      {
        Registry r(1);
        r.AddGauge("g", "h", {"a"});
        r.AddGauge("g", "h", {"b"});
      },
      "different types or labels");
  EXPECT_DEATH({ Registry(1).AddHistogram("h_seconds", "h", {}, {2, 1}); }, "");
}

// 4 shard threads make 1M increments each on their own cells while another thread scrapes: the
// final totals are exact, every counter scrape is >= the previous one, and every histogram scrape
// is internally consistent (cumulative buckets non-decreasing, +Inf == _count).
TEST(RegistryTest, ConcurrentWritersAndScraper) {
  constexpr unsigned kShards = 4;
  constexpr uint64_t kIncrements = 1'000'000;
  Registry registry(kShards);
  Counter& counter = registry.AddCounter("sluice_ops_total", "Ops.").WithLabels({});
  Gauge& gauge = registry.AddGauge("sluice_open", "Open.").WithLabels({});
  Histogram& hist =
      registry.AddHistogram("sluice_size_bytes", "Sizes.", {}, {10, 100, 1000}).WithLabels({});

  std::atomic<bool> done{false};
  std::atomic<bool> go{false};
  std::atomic<int> scrapes{0};
  std::string failure;
  std::thread scraper([&] {
    double last_counter = 0;
    double last_count = 0;
    while (!done.load(std::memory_order_acquire)) {
      const auto s = ParseSamples(registry.Scrape());
      const double c = s.at("sluice_ops_total");
      const double b10 = s.at("sluice_size_bytes_bucket{le=\"10\"}");
      const double b100 = s.at("sluice_size_bytes_bucket{le=\"100\"}");
      const double b1000 = s.at("sluice_size_bytes_bucket{le=\"1000\"}");
      const double inf = s.at("sluice_size_bytes_bucket{le=\"+Inf\"}");
      const double count = s.at("sluice_size_bytes_count");
      if (c < last_counter) {
        failure = "counter went backwards";
      } else if (!(b10 <= b100 && b100 <= b1000 && b1000 <= inf)) {
        failure = "histogram buckets not cumulative";
      } else if (inf != count) {
        failure = "+Inf bucket differs from _count";
      } else if (count < last_count) {
        failure = "histogram count went backwards";
      }
      if (!failure.empty()) {
        return;
      }
      last_counter = c;
      last_count = count;
      scrapes.fetch_add(1, std::memory_order_relaxed);
      go.store(true, std::memory_order_release);  // writers start after the first scrape
    }
  });

  std::vector<std::thread> shards;
  for (unsigned shard = 0; shard < kShards; ++shard) {
    shards.emplace_back([&, shard] {
      while (!go.load(std::memory_order_acquire)) {
      }
      for (uint64_t i = 0; i < kIncrements; ++i) {
        counter.Inc(shard);
        gauge.Add(shard, (i % 2 == 0) ? 1 : -1);
        hist.Observe(shard, static_cast<double>(i % 2000));
      }
    });
  }
  for (auto& t : shards) {
    t.join();
  }
  done.store(true, std::memory_order_release);
  scraper.join();
  EXPECT_EQ(failure, "");
  EXPECT_GE(scrapes.load(), 2);

  EXPECT_EQ(counter.Value(), kShards * kIncrements);
  EXPECT_EQ(gauge.Value(), 0);
  const Histogram::Snapshot snap = hist.Read();
  EXPECT_EQ(snap.count, kShards * kIncrements);
  // Per shard, i % 2000 cycles 500 times through 0..1999.
  constexpr uint64_t kCycles = uint64_t{kShards} * 500;
  EXPECT_EQ(snap.buckets,
            (std::vector<uint64_t>{kCycles * 11, kCycles * 90, kCycles * 900, kCycles * 999}));
  EXPECT_DOUBLE_EQ(snap.sum, kShards * 500.0 * (1999.0 * 2000.0 / 2));
  const auto final_samples = ParseSamples(registry.Scrape());
  EXPECT_EQ(final_samples.at("sluice_ops_total"), kShards * kIncrements);
}

// Registration from several threads while scraping: no crash, no torn family, every series
// appears exactly once at the end.
TEST(RegistryTest, ConcurrentRegistrationAndScrape) {
  Registry registry(2);
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done.load()) {
      ParseSamples(registry.Scrape());
    }
  });
  std::vector<std::thread> writers;
  for (unsigned t = 0; t < 2; ++t) {
    writers.emplace_back([&registry, t] {
      auto& family = registry.AddCounter("sluice_reg_total", "R.", {"n"});
      for (int i = 0; i < 500; ++i) {
        family.WithLabels({std::to_string(t) + "-" + std::to_string(i)}).Inc(t);
        registry.AddGauge("sluice_g" + std::to_string(t) + "_" + std::to_string(i), "G.");
      }
    });
  }
  for (auto& w : writers) {
    w.join();
  }
  done = true;
  scraper.join();
  const auto samples = ParseSamples(registry.Scrape());
  // 1000 counter series, 1000 gauges, and sluice_reg_total's overflow counter.
  EXPECT_EQ(samples.size(), 1000u + 1000u + 1u);
}

}  // namespace
}  // namespace sluice::metrics
