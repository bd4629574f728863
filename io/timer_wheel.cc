#include "io/timer_wheel.h"

#include <algorithm>
#include <bit>

namespace sluice::io {

TimerWheel::TimerWheel(MonoTime now)
    : origin_(now), heads_(kSlots, kNil), occupied_(kSlots / 64, 0) {
}

uint64_t TimerWheel::TickOf(MonoTime t) const {
  if (t <= origin_)
    return 0;
  return static_cast<uint64_t>((t - origin_) / kTick);
}

void TimerWheel::Link(uint32_t index) {
  Entry& e = entries_[index];
  const uint32_t slot = static_cast<uint32_t>(e.tick % kSlots);
  e.prev = kNil;
  e.next = heads_[slot];
  if (e.next != kNil)
    entries_[e.next].prev = index;
  heads_[slot] = index;
  occupied_[slot / 64] |= uint64_t{1} << (slot % 64);
}

void TimerWheel::Unlink(uint32_t index) {
  Entry& e = entries_[index];
  const uint32_t slot = static_cast<uint32_t>(e.tick % kSlots);
  if (e.prev != kNil) {
    entries_[e.prev].next = e.next;
  } else {
    heads_[slot] = e.next;
  }
  if (e.next != kNil)
    entries_[e.next].prev = e.prev;
  e.prev = e.next = kNil;
  if (heads_[slot] == kNil)
    occupied_[slot / 64] &= ~(uint64_t{1} << (slot % 64));
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
  Link(index);
  if (earliest_tick_ != kUnknown)
    earliest_tick_ = std::min(earliest_tick_, e.tick);
  ++live_;
  return {index, e.generation};
}

void TimerWheel::Cancel(Id id) {
  if (!id || id.index >= entries_.size())
    return;
  Entry& e = entries_[id.index];
  if (!e.live || e.generation != id.generation)
    return;
  Unlink(id.index);
  e.live = false;
  e.handler = nullptr;
  ++e.generation;
  if (e.generation == 0)
    e.generation = 1;
  free_.push_back(id.index);
  --live_;
}

void TimerWheel::Advance(MonoTime now) {
  const uint64_t target = TickOf(now);
  // Skip empty stretches quickly: nothing can expire before earliest_tick_.
  uint64_t tick = current_tick_;
  if (earliest_tick_ != kUnknown)
    tick = std::max(tick, std::min(earliest_tick_, target + 1));
  if (target + 1 > current_tick_ + kSlots) {
    // More than a whole turn passed: visiting every slot once is enough.
    tick = std::max(tick, target + 1 - kSlots);
  }
  std::vector<TimerHandler*>& due = due_;
  due.clear();
  while (tick <= target) {
    const uint64_t next = FirstOccupied(tick);
    if (next == kUnknown || next > target)
      break;
    tick = next;
    for (uint32_t i = heads_[tick % kSlots]; i != kNil;) {
      Entry& e = entries_[i];
      const uint32_t following = e.next;
      if (e.tick <= target) {  // else a later turn's timer: it stays
        due.push_back(e.handler);
        Cancel({i, e.generation});
      }
      i = following;
    }
    ++tick;
  }
  current_tick_ = target + 1;
  // Recomputed lazily by NextTimeout(): the earliest occupied slot is a lower
  // bound (it may belong to a later turn; then the loop wakes once early and
  // looks again).
  earliest_tick_ = kUnknown;
  for (TimerHandler* h : due)
    h->OnTimer();
}

uint64_t TimerWheel::FirstOccupied(uint64_t from) const {
  // Scans the bitmap from from's slot round the wheel once: at most 65 words.
  const uint32_t start = static_cast<uint32_t>(from % kSlots);
  uint32_t word = start / 64;
  uint64_t bits = occupied_[word] & (~uint64_t{0} << (start % 64));
  for (uint32_t n = 0; n <= kSlots / 64; ++n) {
    if (bits != 0) {
      const uint32_t slot = word * 64 + static_cast<uint32_t>(std::countr_zero(bits));
      const uint32_t distance = (slot + kSlots - start) % kSlots;
      return from + distance;
    }
    word = (word + 1) % (kSlots / 64);
    bits = occupied_[word];
    if (word == start / 64)
      bits &= ~(~uint64_t{0} << (start % 64));  // wrapped: only below start
  }
  return kUnknown;
}

Duration TimerWheel::NextTimeout(MonoTime now) {
  if (live_ == 0)
    return Duration(-1);
  if (earliest_tick_ == kUnknown) {
    earliest_tick_ = FirstOccupied(current_tick_);
    if (earliest_tick_ == kUnknown)
      earliest_tick_ = current_tick_ + kSlots;
  }
  const uint64_t tick = std::max(earliest_tick_, current_tick_);
  const MonoTime when = origin_ + kTick * static_cast<int64_t>(tick);
  if (when <= now)
    return Duration(0);
  return when - now;
}

}  // namespace sluice::io
