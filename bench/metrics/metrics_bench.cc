// metrics/ micro-benchmarks: the hot-path cost of Counter::Inc and Histogram::Observe on a shard
// cell (single writer, no lock prefix), the shared other-thread cell for comparison, and the
// cost of Scrape() with 10k series.

#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "metrics/registry.h"

namespace sluice::metrics {
namespace {

void BM_CounterInc(benchmark::State& state) {
  Registry registry(8);
  Counter& c = registry.AddCounter("sluice_bench_total", "Bench.").WithLabels({});
  for (auto _ : state) {
    c.Inc(3);
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(c.Value());
}
BENCHMARK(BM_CounterInc);

// The other_thread() cell uses an atomic fetch_add (a lock-prefixed add): what Inc would cost
// without per-shard cells.
void BM_CounterIncOtherThread(benchmark::State& state) {
  Registry registry(8);
  Counter& c = registry.AddCounter("sluice_bench_total", "Bench.").WithLabels({});
  for (auto _ : state) {
    c.Inc(registry.other_thread());
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(c.Value());
}
BENCHMARK(BM_CounterIncOtherThread);

// Every thread increments the same series on its own shard cell: no cache-line ping-pong, so the
// per-increment cost should stay flat as threads are added.
void BM_CounterIncPerShardThreads(benchmark::State& state) {
  static Registry* registry = nullptr;
  static Counter* c = nullptr;
  if (state.thread_index() == 0) {
    registry = new Registry(static_cast<unsigned>(state.threads()));
    c = &registry->AddCounter("sluice_bench_total", "Bench.").WithLabels({});
  }
  // Benchmark's threads start the timed loop together, after thread 0's setup.
  const auto shard = static_cast<unsigned>(state.thread_index());
  for (auto _ : state) {
    c->Inc(shard);
    benchmark::ClobberMemory();
  }
  if (state.thread_index() == 0) {  // all threads have left the loop (benchmark's barrier)
    state.counters["total"] = static_cast<double>(c->Value());
    delete registry;
    registry = nullptr;
  }
}
BENCHMARK(BM_CounterIncPerShardThreads)->Threads(1)->Threads(4)->UseRealTime();

void BM_HistogramObserve(benchmark::State& state) {
  Registry registry(8);
  Histogram& h =
      registry.AddHistogram("sluice_bench_seconds", "Bench.", {}, DefaultLatencyBuckets())
          .WithLabels({});
  double v = 0.0001;
  for (auto _ : state) {
    h.Observe(3, v);
    v = v < 20 ? v * 1.7 : 0.0001;  // walk across all buckets
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(h.Read().count);
}
BENCHMARK(BM_HistogramObserve);

// Scrape() of 10k series in an 8-shard registry: 5k counter series with two labels and 5k gauge
// series with one (each series sums 9 cells).
void BM_Scrape10kSeries(benchmark::State& state) {
  Registry registry(8);
  auto& counters =
      registry.AddCounter("sluice_bench_deliveries_total", "Bench.", {"destination", "result"});
  counters.SetMaxSeries(100000);
  auto& gauges = registry.AddGauge("sluice_bench_queue_messages", "Bench.", {"destination"});
  gauges.SetMaxSeries(100000);
  const int series_count = static_cast<int>(state.range(0));
  for (int i = 0; i < series_count / 2; ++i) {
    const std::string dest = "mx" + std::to_string(i) + ".example.net";
    counters.WithLabels({dest, i % 2 == 0 ? "delivered" : "transfail"}).Inc(i % 8, i);
    gauges.WithLabels({dest}).Add(i % 8, i);
  }
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = registry.Scrape();
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  state.SetItemsProcessed(state.iterations() * series_count);
}
BENCHMARK(BM_Scrape10kSeries)->Arg(10000)->Unit(benchmark::kMicrosecond);

void BM_ScrapeHistograms(benchmark::State& state) {
  Registry registry(8);
  auto& hist = registry.AddHistogram("sluice_bench_delivery_seconds", "Bench.", {"destination"},
                                     DefaultLatencyBuckets());
  hist.SetMaxSeries(100000);
  const int series_count = static_cast<int>(state.range(0));
  for (int i = 0; i < series_count; ++i) {
    hist.WithLabels({"mx" + std::to_string(i) + ".example.net"}).Observe(i % 8, i * 0.001);
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(registry.Scrape().data());
  }
  state.SetItemsProcessed(state.iterations() * series_count);
}
BENCHMARK(BM_ScrapeHistograms)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sluice::metrics

BENCHMARK_MAIN();
