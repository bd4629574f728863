#pragma once

// A hashed timer wheel for connection timeouts (docs/design.md §6.3).
// SMTP timeouts are seconds to minutes, so a 10 ms tick is plenty; one timer
// per waiting connection, O(1) add and cancel, expiry work proportional to
// the timers in the slots passed. Single-threaded: owned by one shard.

#include <cstdint>
#include <vector>

#include "base/clock.h"

namespace sluice::io {

class TimerHandler {
 public:
  virtual void OnTimer() = 0;

  virtual ~TimerHandler() = default;
};

class TimerWheel {
 public:
  struct Id {
    uint32_t index = 0;
    uint32_t generation = 0;  // 0 = no timer
    explicit operator bool() const {
      return generation != 0;
    }
  };

  static constexpr Duration kTick = std::chrono::milliseconds(10);
  static constexpr uint32_t kSlots = 4096;  // one turn = 40.96 s; longer timers wait turns

  explicit TimerWheel(MonoTime now);

  // Fires handler->OnTimer() from Advance() at or after `when`.
  Id Add(MonoTime when, TimerHandler* handler);
  // Cancelling a timer that already fired or was cancelled is a no-op.
  void Cancel(Id id);
  // Runs every timer due at `now`. Handlers may add or cancel timers.
  void Advance(MonoTime now);
  // Time until the earliest possible expiry, or a negative duration if none
  // (the event loop then waits without a timeout).
  Duration NextTimeout(MonoTime now);
  size_t size() const {
    return live_;
  }

 private:
  static constexpr uint32_t kNil = UINT32_MAX;
  // A timer; live ones are linked into their slot's list (by index, so the
  // vector may grow), so Cancel unlinks in O(1) and slots hold only live
  // timers: a shard that adds and cancels a deadline per command (100k/s)
  // keeps no garbage around for the 41 s until the slot comes round.
  struct Entry {
    TimerHandler* handler = nullptr;
    uint64_t tick = 0;  // absolute tick of expiry
    uint32_t generation = 1;
    uint32_t prev = kNil;
    uint32_t next = kNil;
    bool live = false;
  };

  uint64_t TickOf(MonoTime t) const;
  void Link(uint32_t index);
  void Unlink(uint32_t index);
  // First tick >= from whose slot is not empty (within one turn), or kUnknown.
  uint64_t FirstOccupied(uint64_t from) const;

  MonoTime origin_;
  uint64_t current_tick_ = 0;  // every tick < current_tick_ has been processed
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> heads_;     // per slot: first entry, or kNil
  std::vector<uint64_t> occupied_;  // one bit per slot: its list is not empty
  static constexpr uint64_t kUnknown = UINT64_MAX;
  uint64_t earliest_tick_ = kUnknown;  // lower bound on the earliest live tick, or kUnknown
  size_t live_ = 0;
  std::vector<TimerHandler*> due_;  // scratch for Advance()
};

}  // namespace sluice::io
