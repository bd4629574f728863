#pragma once

// Time sources. Code with timeouts takes a Clock& so tests can inject a
// ManualClock instead of sleeping (docs/design.md §10.2).

#include <chrono>
#include <cstdint>

namespace sluice {

using MonoTime = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  MonoTime Now() const override { return std::chrono::steady_clock::now(); }
  static SystemClock& Instance();
};

class ManualClock final : public Clock {
 public:
  MonoTime Now() const override { return now_; }
  void Advance(Duration d) { now_ += d; }

 private:
  MonoTime now_{};
};

// Wall-clock microseconds since the Unix epoch (message ids, Received dates).
uint64_t UnixMicros();

}  // namespace sluice
