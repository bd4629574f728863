#include "auth/failure_throttle.h"

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::auth {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using Clock = FailureThrottle::Clock;

const Clock::time_point kT0 = Clock::time_point() + std::chrono::hours(1000);

TEST(FailureThrottle, DelayGrowsThenCaps) {
  FailureThrottle t(10, minutes(10));
  EXPECT_EQ(t.DelayFor("192.0.2.1", kT0), milliseconds(0));
  const milliseconds expected[] = {milliseconds(1000), milliseconds(2000), milliseconds(4000),
                                   milliseconds(8000), milliseconds(8000), milliseconds(8000)};
  Clock::time_point now = kT0;
  for (milliseconds want : expected) {
    t.RecordFailure("192.0.2.1", now);
    EXPECT_EQ(t.DelayFor("192.0.2.1", now), want);
    now += seconds(1);
  }
  EXPECT_EQ(t.DelayFor("192.0.2.2", now), milliseconds(0));  // other keys untouched
}

TEST(FailureThrottle, BlockedAfterMaxFailures) {
  FailureThrottle t(5, minutes(10));
  for (int i = 0; i < 4; ++i) {
    t.RecordFailure("198.51.100.7", kT0 + seconds(i));
    EXPECT_FALSE(t.Blocked("198.51.100.7", kT0 + seconds(i)));
  }
  t.RecordFailure("198.51.100.7", kT0 + seconds(4));
  EXPECT_TRUE(t.Blocked("198.51.100.7", kT0 + seconds(4)));
  EXPECT_FALSE(t.Blocked("198.51.100.8", kT0 + seconds(4)));
}

TEST(FailureThrottle, WindowCountsFromTheLastFailure) {
  FailureThrottle t(3, minutes(10));
  t.RecordFailure("a", kT0);
  t.RecordFailure("a", kT0 + minutes(9));
  t.RecordFailure("a", kT0 + minutes(18));  // each within 10 min of the previous one
  EXPECT_TRUE(t.Blocked("a", kT0 + minutes(18)));
  EXPECT_TRUE(t.Blocked("a", kT0 + minutes(28) - milliseconds(1)));
  EXPECT_FALSE(t.Blocked("a", kT0 + minutes(28)));
  EXPECT_EQ(t.DelayFor("a", kT0 + minutes(28)), milliseconds(0));
  // After expiry the count starts again from one.
  t.RecordFailure("a", kT0 + minutes(30));
  EXPECT_EQ(t.DelayFor("a", kT0 + minutes(30)), milliseconds(1000));
  EXPECT_FALSE(t.Blocked("a", kT0 + minutes(30)));
}

TEST(FailureThrottle, TableIsBoundedAndEvictsLeastRecentlyFailed) {
  FailureThrottle t(2, minutes(10), 3);
  t.RecordFailure("a", kT0);
  t.RecordFailure("a", kT0);
  t.RecordFailure("b", kT0);
  t.RecordFailure("c", kT0);
  t.RecordFailure("a", kT0 + seconds(1));  // a is now the most recent
  t.RecordFailure("d", kT0 + seconds(2));  // evicts b
  EXPECT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.Blocked("a", kT0 + seconds(2)));
  EXPECT_EQ(t.DelayFor("b", kT0 + seconds(2)), milliseconds(0));
  EXPECT_EQ(t.DelayFor("c", kT0 + seconds(2)), milliseconds(1000));
  EXPECT_EQ(t.DelayFor("d", kT0 + seconds(2)), milliseconds(1000));
  for (int i = 0; i < 1000; ++i) {
    t.RecordFailure("x" + std::to_string(i), kT0 + seconds(3));
  }
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.DelayFor("x999", kT0 + seconds(3)), milliseconds(1000));
  EXPECT_EQ(t.DelayFor("x0", kT0 + seconds(3)), milliseconds(0));
}

TEST(FailureThrottle, ConcurrentUseFromManyThreads) {
  // Smoke test for the locking (most useful under -Db_sanitize=thread):
  // threads hammer the same keys, some on a table small enough to evict.
  constexpr int kThreads = 8;
  constexpr int kIterations = 5000;
  constexpr int kKeys = 50;
  FailureThrottle big(5, minutes(10), 1000);
  FailureThrottle small(5, minutes(10), 16);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&big, &small, i] {
      for (int n = 0; n < kIterations; ++n) {
        const std::string ip = "10.0.0." + std::to_string(n % kKeys);
        const auto now = kT0 + milliseconds(n);
        big.RecordFailure(ip, now);
        (void)big.DelayFor(ip, now);
        small.RecordFailure(ip + "/" + std::to_string(i), now);
        (void)small.Blocked(ip, now);
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(big.size(), static_cast<size_t>(kKeys));
  for (int k = 0; k < kKeys; ++k) {
    const std::string ip = "10.0.0." + std::to_string(k);
    EXPECT_TRUE(big.Blocked(ip, kT0 + milliseconds(kIterations))) << ip;
    EXPECT_EQ(big.DelayFor(ip, kT0 + milliseconds(kIterations)), FailureThrottle::kMaxDelay);
  }
  EXPECT_LE(small.size(), 16u);
  small.RecordFailure("after", kT0);
  EXPECT_EQ(small.DelayFor("after", kT0), milliseconds(1000));
}

}  // namespace
}  // namespace sluice::auth
