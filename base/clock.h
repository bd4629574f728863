#pragma once

// Time sources. Code with timeouts or due times reads a Clock (an io::Shard carries one) so
// tests can run it in virtual time with a ManualClock instead of sleeping.

#include <chrono>
#include <cstdint>

namespace sluice {

using MonoTime = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

// Wall-clock microseconds since the Unix epoch (message ids, Received dates).
uint64_t UnixMicros();

// Both clocks a component reads: monotonic for timeouts and timers, wall for what is stored or
// shown (queue times in the spool survive a restart; the monotonic clock does not).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime Now() const = 0;
  virtual uint64_t WallMicros() const = 0;
};

class SystemClock final : public Clock {
 public:
  MonoTime Now() const override {
    return std::chrono::steady_clock::now();
  }
  uint64_t WallMicros() const override {
    return UnixMicros();
  }
  static SystemClock& Instance();
};

// Virtual time for tests: both clocks move only by Advance (and the wall clock by SetWall, a
// step as NTP may make).
class ManualClock final : public Clock {
 public:
  // The wall clock starts at 2026-01-01T00:00:00Z, so that stored times look real.
  static constexpr uint64_t kStartWallMicros = 1'767'225'600'000'000;

  MonoTime Now() const override {
    return now_;
  }
  uint64_t WallMicros() const override {
    return wall_us_;
  }
  void Advance(Duration d) {
    now_ += d;
    wall_us_ +=
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  }
  void SetWall(uint64_t wall_us) {
    wall_us_ = wall_us;
  }

 private:
  MonoTime now_{};
  uint64_t wall_us_ = kStartWallMicros;
};

}  // namespace sluice
