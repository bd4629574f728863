#include "io/timer_wheel.h"

#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Recorder : TimerHandler {
  int fired = 0;
  void OnTimer() override {
    ++fired;
  }
};

TEST(TimerWheelTest, FiresNotBeforeDeadline) {
  MonoTime t0{};
  TimerWheel w(t0);
  Recorder r;
  w.Add(t0 + milliseconds(95), &r);
  w.Advance(t0 + milliseconds(90));
  EXPECT_EQ(r.fired, 0);
  w.Advance(t0 + milliseconds(94));
  EXPECT_EQ(r.fired, 0);
  w.Advance(t0 + milliseconds(120));
  EXPECT_EQ(r.fired, 1);
  w.Advance(t0 + milliseconds(500));
  EXPECT_EQ(r.fired, 1);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheelTest, CancelledTimerNeverFires) {
  MonoTime t0{};
  TimerWheel w(t0);
  Recorder a, b;
  auto ida = w.Add(t0 + milliseconds(50), &a);
  w.Add(t0 + milliseconds(50), &b);
  w.Cancel(ida);
  w.Cancel(ida);  // twice is harmless
  w.Advance(t0 + seconds(1));
  EXPECT_EQ(a.fired, 0);
  EXPECT_EQ(b.fired, 1);
}

TEST(TimerWheelTest, LongTimersWaitWholeTurns) {
  MonoTime t0{};
  TimerWheel w(t0);
  Recorder r;
  // 300 s: more than seven turns of the wheel.
  w.Add(t0 + seconds(300), &r);
  for (int i = 1; i < 300; ++i) {
    w.Advance(t0 + seconds(i));
    ASSERT_EQ(r.fired, 0) << "fired early at " << i << " s";
  }
  w.Advance(t0 + seconds(301));
  EXPECT_EQ(r.fired, 1);
}

TEST(TimerWheelTest, BigJumpFiresEverythingDue) {
  MonoTime t0{};
  TimerWheel w(t0);
  std::vector<Recorder> rs(100);
  for (size_t i = 0; i < rs.size(); ++i)
    w.Add(t0 + milliseconds(37 * i), &rs[i]);
  w.Advance(t0 + seconds(3600));
  for (auto& r : rs)
    EXPECT_EQ(r.fired, 1);
}

TEST(TimerWheelTest, NextTimeoutIsALowerBound) {
  MonoTime t0{};
  TimerWheel w(t0);
  EXPECT_LT(w.NextTimeout(t0), Duration::zero());
  Recorder r;
  w.Add(t0 + seconds(2), &r);
  const Duration d = w.NextTimeout(t0);
  EXPECT_GE(d, Duration::zero());
  EXPECT_LE(d, seconds(2) + TimerWheel::kTick);
  // Walking by NextTimeout steps reaches the expiry in a bounded number of wakes.
  MonoTime now = t0;
  int wakes = 0;
  while (r.fired == 0 && wakes < 100) {
    now += std::max(w.NextTimeout(now), Duration(TimerWheel::kTick));
    w.Advance(now);
    ++wakes;
  }
  EXPECT_EQ(r.fired, 1);
  EXPECT_GE(now, t0 + seconds(2));
}

TEST(TimerWheelTest, HandlerMayAddTimers) {
  MonoTime t0{};
  TimerWheel w(t0);
  struct Rearm : TimerHandler {
    TimerWheel* w = nullptr;
    MonoTime* now = nullptr;
    int fired = 0;
    void OnTimer() override {
      if (++fired < 3)
        w->Add(*now + milliseconds(100), this);
    }
  } h;
  MonoTime now = t0;
  h.w = &w;
  h.now = &now;
  w.Add(t0 + milliseconds(100), &h);
  for (int i = 0; i < 100; ++i) {
    now += milliseconds(20);
    w.Advance(now);
  }
  EXPECT_EQ(h.fired, 3);
}

TEST(TimerWheelTest, NextTimeoutFindsATimerAcrossTheWrap) {
  MonoTime t0{};
  TimerWheel w(t0);
  Recorder r;
  w.Advance(t0 + seconds(30));  // current slot near the end of the first turn
  w.Add(t0 + seconds(50), &r);  // its slot lies past the wrap
  const Duration d = w.NextTimeout(t0 + seconds(30));
  EXPECT_GE(d, seconds(20));
  EXPECT_LE(d, seconds(20) + TimerWheel::kTick * 2);
}

// Random adds, cancels and advances against a plain model: every live timer
// fires exactly once, never before its deadline and at most one tick after
// the first Advance past it; cancelled ones never fire.
TEST(TimerWheelTest, MatchesAModelUnderRandomChurn) {
  struct Counted : TimerHandler {
    int fired = 0;
    MonoTime* now = nullptr;
    MonoTime at{};
    void OnTimer() override {
      ++fired;
      at = *now;
    }
  };
  std::mt19937_64 rng(42);
  MonoTime t0{};
  MonoTime now = t0;
  TimerWheel w(t0);
  std::vector<Counted> handlers(20000);
  struct Planned {
    TimerWheel::Id id;
    MonoTime deadline;
    bool cancelled = false;
  };
  std::map<size_t, Planned> planned;
  size_t next = 0;
  for (int step = 0; step < 200000 && next < handlers.size(); ++step) {
    const unsigned op = rng() % 10;
    if (op < 5) {
      // Deadlines from 1 ms to 100 s: within the turn and several turns out.
      const auto delay = std::chrono::milliseconds(1 + rng() % 100000);
      handlers[next].now = &now;
      planned[next] = {w.Add(now + delay, &handlers[next]), now + delay};
      ++next;
    } else if (op < 8 && !planned.empty()) {
      auto it = planned.lower_bound(rng() % next);
      if (it == planned.end())
        it = planned.begin();
      if (!it->second.cancelled && handlers[it->first].fired == 0) {
        w.Cancel(it->second.id);
        it->second.cancelled = true;
      }
    } else {
      now += std::chrono::milliseconds(rng() % 40);
      w.Advance(now);
    }
  }
  for (int i = 0; i < 12000; ++i) {  // 120 s: everything comes due
    now += TimerWheel::kTick;
    w.Advance(now);
  }
  EXPECT_EQ(w.size(), 0u);
  for (const auto& [i, p] : planned) {
    const Counted& h = handlers[i];
    if (p.cancelled) {
      EXPECT_EQ(h.fired, 0) << "cancelled timer " << i << " fired";
      continue;
    }
    ASSERT_EQ(h.fired, 1) << "timer " << i;
    EXPECT_GE(h.at, p.deadline) << "timer " << i << " fired early";
    // The loop advances by at most 40 ms; a timer fires at the first Advance
    // past its (tick-rounded) deadline.
    EXPECT_LE(h.at, p.deadline + std::chrono::milliseconds(40) + TimerWheel::kTick * 2)
        << "timer " << i << " fired late";
  }
}

}  // namespace
}  // namespace sluice::io
