#include "io/timer_wheel.h"

#include <algorithm>

namespace sluice::io {

TimerWheel::TimerWheel(MonoTime now) : origin_(now), slots_(kSlots) {}

uint64_t TimerWheel::TickOf(MonoTime t) const {
  if (t <= origin_) return 0;
  return static_cast<uint64_t>((t - origin_) / kTick);
}

TimerWheel::Id TimerWheel::Add(MonoTime when, TimerHandler* handler) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  }
  Entry& e = entries_[index];
  e.handler = handler;
  // Round up so a timer never fires early; never schedule into the past
  // ticks that Advance() already walked.
  e.tick = std::max(TickOf(when) + 1, current_tick_);
  e.live = true;
  slots_[e.tick % kSlots].push_back({index, e.generation});
  if (earliest_tick_ != kUnknown) earliest_tick_ = std::min(earliest_tick_, e.tick);
  ++live_;
  return {index, e.generation};
}

void TimerWheel::Cancel(Id id) {
  if (!id || id.index >= entries_.size()) return;
  Entry& e = entries_[id.index];
  if (!e.live || e.generation != id.generation) return;
  // The slot keeps a stale reference; it is skipped by generation.
  e.live = false;
  e.handler = nullptr;
  ++e.generation;
  if (e.generation == 0) e.generation = 1;
  free_.push_back(id.index);
  --live_;
}

void TimerWheel::Advance(MonoTime now) {
  const uint64_t target = TickOf(now);
  // Skip empty stretches quickly: nothing can expire before earliest_tick_.
  uint64_t tick = current_tick_;
  if (earliest_tick_ != kUnknown) tick = std::max(tick, std::min(earliest_tick_, target + 1));
  if (target + 1 > current_tick_ + kSlots) {
    // More than a whole turn passed: visiting every slot once is enough.
    tick = std::max(tick, target + 1 - kSlots);
  }
  std::vector<TimerHandler*>& due = due_;
  due.clear();
  for (; tick <= target; ++tick) {
    auto& slot = slots_[tick % kSlots];
    size_t keep = 0;
    for (size_t i = 0; i < slot.size(); ++i) {
      const SlotRef ref = slot[i];
      Entry& e = entries_[ref.index];
      if (!e.live || e.generation != ref.generation) continue;  // cancelled
      if (e.tick <= target) {
        due.push_back(e.handler);
        Cancel({ref.index, ref.generation});
        continue;
      }
      slot[keep++] = ref;
    }
    slot.resize(keep);
  }
  current_tick_ = target + 1;
  // Recomputed lazily by NextTimeout(): the earliest slot that holds a live
  // reference is a lower bound (it may belong to a later turn; then the loop
  // wakes once early and looks again).
  earliest_tick_ = kUnknown;
  for (TimerHandler* h : due) h->OnTimer();
}

Duration TimerWheel::NextTimeout(MonoTime now) {
  if (live_ == 0) return Duration(-1);
  if (earliest_tick_ == kUnknown) {
    earliest_tick_ = current_tick_ + kSlots;
    for (uint64_t t = current_tick_; t < current_tick_ + kSlots; ++t) {
      if (!slots_[t % kSlots].empty()) {
        earliest_tick_ = t;
        break;
      }
    }
  }
  const uint64_t tick = std::max(earliest_tick_, current_tick_);
  const MonoTime when = origin_ + kTick * static_cast<int64_t>(tick);
  if (when <= now) return Duration(0);
  return when - now;
}

}  // namespace sluice::io
