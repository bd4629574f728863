#include "io/timer_wheel.h"

#include <gtest/gtest.h>

#include <vector>

namespace sluice::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Recorder : TimerHandler {
  int fired = 0;
  void OnTimer() override { ++fired; }
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
  for (size_t i = 0; i < rs.size(); ++i) w.Add(t0 + milliseconds(37 * i), &rs[i]);
  w.Advance(t0 + seconds(3600));
  for (auto& r : rs) EXPECT_EQ(r.fired, 1);
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
    TimerWheel* w;
    MonoTime* now;
    int fired = 0;
    void OnTimer() override {
      if (++fired < 3) w->Add(*now + milliseconds(100), this);
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

}  // namespace
}  // namespace sluice::io
