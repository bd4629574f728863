// Spool enqueue throughput and latency with sync=true (every batch fdatasync'd), keeping N
// requests in flight: the group commit of docs/design.md §5.2. 1 KiB body and an envelope of
// ~300 B per message, as in the measurements there.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/clock.h"
#include "base/log.h"
#include "queue/spool.h"

namespace sluice::queue {
namespace {

using Clock = std::chrono::steady_clock;

// Ring of enqueue times indexed by token; larger than any in-flight count.
constexpr size_t kRing = 1 << 16;

class BenchSink final : public CompletionSink {
 public:
  BenchSink() : starts_(kRing) {
    latencies_ns_.reserve(1 << 22);
  }

  void Started(uint64_t token) {
    starts_[token % kRing] = Clock::now();
  }

  // Writer thread. Only this thread touches latencies_ns_ until the benchmark has drained.
  void OnCommitted(uint64_t token, CommitStatus status) override {
    if (status != CommitStatus::kOk)
      failed_.fetch_add(1, std::memory_order_relaxed);
    latencies_ns_.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - starts_[token % kRing])
            .count());
    completed_.fetch_add(1, std::memory_order_release);
    if (waiting_.load(std::memory_order_acquire)) {
      std::lock_guard lock(mu_);
      cv_.notify_one();
    }
  }

  // Bench thread: blocks until fewer than limit requests are in flight.
  void WaitBelow(uint64_t issued, uint64_t limit) {
    if (issued - completed_.load(std::memory_order_acquire) < limit)
      return;
    std::unique_lock lock(mu_);
    waiting_.store(true, std::memory_order_release);
    cv_.wait(lock, [&] { return issued - completed_.load(std::memory_order_acquire) < limit; });
    waiting_.store(false, std::memory_order_release);
  }

  uint64_t failed() const {
    return failed_.load();
  }

  double Percentile(double p) {
    if (latencies_ns_.empty())
      return 0;
    const size_t k = static_cast<size_t>(p * static_cast<double>(latencies_ns_.size() - 1));
    std::nth_element(latencies_ns_.begin(), latencies_ns_.begin() + static_cast<long>(k),
                     latencies_ns_.end());
    return static_cast<double>(latencies_ns_[k]) / 1000.0;
  }

 private:
  std::vector<Clock::time_point> starts_;
  std::vector<int64_t> latencies_ns_;
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<bool> waiting_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s)
    c = static_cast<char>(rng());  // incompressible, like real mail at flush
  return s;
}

void BM_SpoolEnqueueSynced(benchmark::State& state) {
  const auto in_flight = static_cast<uint64_t>(state.range(0));
  char dir[] = "/tmp/sluice-spool-bench-XXXXXX";  // ext4 here; tmpfs would make fsync free
  SLUICE_CHECK(mkdtemp(dir) != nullptr);

  SpoolOptions options;
  options.path = std::string(dir) + "/spool";
  options.sync = true;
  options.max_pending_messages = std::max<size_t>(10000, in_flight);
  Result<std::unique_ptr<Spool>> opened = Spool::Open(options);
  SLUICE_CHECK(opened.ok());
  std::unique_ptr<Spool> spool = std::move(*opened);

  Envelope envelope;
  envelope.sender = "bounces+1234567@mailer.example.org";
  envelope.recipients.push_back(
      {"someone.with.a.long.name@destination.example.com", 0, "", RecipientState::kPending, 0, ""});
  envelope.client_ip = "2001:db8:1234::42";
  envelope.helo = "mta-out-17.mailer.example.org";
  envelope.auth_user = "newsletter-app";
  envelope.listener = "submission";
  envelope.envid = "ENV-0123456789abcdef0123456789abcdef";
  envelope.auth_param = "<>";
  envelope.received_at_us = UnixMicros();
  envelope.expires_at_us = envelope.received_at_us + 5ULL * 86400 * 1'000'000;
  envelope.body_size = 1024;
  std::string meta = EncodeEnvelope(envelope);
  meta += RandomBytes(300 - std::min<size_t>(meta.size(), 300), 1);  // pad to ~300 B
  const std::string body = RandomBytes(1024, 2);

  BenchSink sink;
  MessageIdGenerator ids(1, 0);
  uint64_t issued = 0;
  for (auto _ : state) {
    sink.WaitBelow(issued, in_flight);
    sink.Started(issued);
    Admit admit;
    while ((admit = spool->Enqueue(ids.Next(), std::string(meta), std::string(body), &sink,
                                   issued)) == Admit::kFull) {
      std::this_thread::yield();
    }
    SLUICE_CHECK(admit == Admit::kAccepted);
    ++issued;
  }
  sink.WaitBelow(issued, 1);  // drain: everything completed
  const SpoolStats stats = spool->stats();
  spool->Shutdown();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  state.SetItemsProcessed(static_cast<int64_t>(issued));
  state.SetBytesProcessed(static_cast<int64_t>(issued * (meta.size() + body.size())));
  state.counters["p50_us"] = sink.Percentile(0.50);
  state.counters["p99_us"] = sink.Percentile(0.99);
  state.counters["avg_batch"] = stats.batches > 0 ? static_cast<double>(stats.committed_messages) /
                                                        static_cast<double>(stats.batches)
                                                  : 0;
  if (sink.failed() > 0)
    state.SkipWithError("some enqueues did not complete kOk");
}

BENCHMARK(BM_SpoolEnqueueSynced)
    ->Arg(1)
    ->Arg(16)
    ->Arg(128)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(2.0);

}  // namespace
}  // namespace sluice::queue

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // no "spool opened" line per run
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
