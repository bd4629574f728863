#pragma once

// FailureThrottle: slows down and then stops password guessing from one
// client address. Shared by all shards (a client's connections land on any
// shard), so it is guarded by a mutex; it is only touched on AUTH, a few
// hundred nanoseconds per call.
//
// A key's failures are forgotten once `window` has passed since its most
// recent failure, and only then: a successful login does not clear them, or
// an attacker holding one valid account would get max_failures - 1 guesses
// per success, forever. After n failures the next attempt should wait
// DelayFor = min(1 s << (n-1), 8 s); once n reaches `max_failures` the key is
// Blocked (the session answers 421 4.7.0 and closes) until the window has
// passed.
//
// Memory is bounded: at most `max_entries` keys, the least recently failed
// one evicted first. An attacker with more addresses than that can flush the
// table; per-address limits cannot stop such an attacker anyway. Callers
// key IPv6 clients by their network (/64 by default), since one host usually
// owns all of it.

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace sluice::auth {

class FailureThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  static constexpr std::chrono::milliseconds kFirstDelay{1000};
  static constexpr std::chrono::milliseconds kMaxDelay{8000};

  // max_failures >= 1 and max_entries >= 1 (0 is taken as 1).
  explicit FailureThrottle(size_t max_failures = 5,
                           std::chrono::seconds window = std::chrono::minutes(10),
                           size_t max_entries = 65536);
  FailureThrottle(const FailureThrottle&) = delete;
  FailureThrottle& operator=(const FailureThrottle&) = delete;

  std::chrono::milliseconds DelayFor(std::string_view ip, Clock::time_point now) const;
  bool Blocked(std::string_view ip, Clock::time_point now) const;
  void RecordFailure(std::string_view ip, Clock::time_point now);

  // Keys held, expired ones included until evicted or looked at by
  // RecordFailure. For tests and metrics.
  size_t size() const;

 private:
  struct Entry {
    std::string key;
    size_t failures = 0;
    Clock::time_point last_failure;
  };
  using Lru = std::list<Entry>;  // front: most recently failed

  // Failures of `ip` still inside the window; caller holds mu_.
  size_t LiveFailures(std::string_view ip, Clock::time_point now) const;

  // Immutable after construction.
  const size_t max_failures_;
  const Clock::duration window_;
  const size_t max_entries_;

  // Written by any thread, under mu_.
  mutable std::mutex mu_;
  Lru lru_;
  std::unordered_map<std::string_view, Lru::iterator> index_;  // keys view Entry::key
};

}  // namespace sluice::auth
