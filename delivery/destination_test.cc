// Destination policies in virtual time: rate limit, backoff after failed connections, the
// opportunistic-TLS fallback, idle expiry, when to open another connection.
#include "delivery/destination.h"

#include <gtest/gtest.h>

#include "base/clock.h"

namespace sluice::delivery {
namespace {

constexpr uint64_t kSecond = 1'000'000;
constexpr uint64_t kStart = 1'800'000'000 * kSecond;

TEST(RateLimiterTest, SpacesSendsOneIntervalApart) {
  RateLimiter rate(2);  // 2 messages/s: one slot every 500 ms
  EXPECT_TRUE(rate.limited());
  EXPECT_EQ(rate.Reserve(kStart), 0u);
  // Three workers asking at the same instant queue up behind each other.
  EXPECT_EQ(rate.Reserve(kStart), 500'000u);
  EXPECT_EQ(rate.Reserve(kStart), 1'000'000u);
  // Later than the next free slot: send at once, and the slot after is an interval on.
  EXPECT_EQ(rate.Reserve(kStart + 10 * kSecond), 0u);
  EXPECT_EQ(rate.Reserve(kStart + 10 * kSecond + 100'000), 400'000u);
}

TEST(RateLimiterTest, UnlimitedNeverWaits) {
  RateLimiter rate;
  EXPECT_FALSE(rate.limited());
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(rate.Reserve(kStart), 0u);
}

TEST(DestinationBackoffTest, TemporaryFailureBacksOffForTheConfiguredTime) {
  DestinationBackoff backoff;
  EXPECT_FALSE(backoff.Failing(kStart));
  backoff.Fail(smtp::MakeReply(451, "4.4.1", "connect: refused"), "mx[192.0.2.1]:25", kStart,
               60 * kSecond);
  EXPECT_TRUE(backoff.Failing(kStart + 59 * kSecond));
  EXPECT_FALSE(backoff.Failing(kStart + 60 * kSecond));
  EXPECT_EQ(backoff.reply().code, 451);
  EXPECT_EQ(backoff.remote(), "mx[192.0.2.1]:25");
}

TEST(DestinationBackoffTest, PermanentRefusalIsNotABackoff) {
  DestinationBackoff backoff;
  backoff.Fail(smtp::MakeReply(554, "5.7.1", "go away"), "mx", kStart, 60 * kSecond);
  EXPECT_FALSE(backoff.Failing(kStart));
  EXPECT_EQ(backoff.reply().code, 554);
}

TEST(TlsFallbackTest, BrokenHostIsReachedInPlaintextForAnHour) {
  TlsFallback fallback;
  EXPECT_FALSE(fallback.Skip("mx.example", kStart));
  fallback.MarkBroken("mx.example", kStart);
  EXPECT_TRUE(fallback.Skip("mx.example", kStart + 3599 * kSecond));
  EXPECT_FALSE(fallback.Skip("other.example", kStart));
  EXPECT_FALSE(fallback.Skip("mx.example", kStart + 3600 * kSecond));  // tried with TLS again
  EXPECT_EQ(fallback.size(), 0u);                                      // and forgotten
  fallback.MarkBroken("a.example", kStart);
  fallback.MarkBroken("b.example", kStart + 1800 * kSecond);
  fallback.Sweep(kStart + 3600 * kSecond);
  EXPECT_EQ(fallback.size(), 1u);
}

Job JobFor(const RouteConfig* route) {
  Job job;
  job.key = route ? "smarthost:" + route->name : "mx-site";
  job.route = route;
  job.domain = "example.net";
  return job;
}

TEST(DestinationTest, TakesTheRoutesLimits) {
  RouteConfig route;
  route.name = "relay";
  route.type = RouteType::kSmarthost;
  route.max_connections = 0;  // at least one
  route.max_messages_per_connection = 7;
  route.max_message_rate = 1;
  Destination d(JobFor(&route), "relay");
  EXPECT_EQ(d.max_connections, 1u);
  EXPECT_EQ(d.max_messages_per_connection, 7u);
  EXPECT_TRUE(d.rate.limited());
  EXPECT_EQ(d.type, RouteType::kSmarthost);
  Destination mx(JobFor(nullptr), "example.net");
  EXPECT_EQ(mx.type, RouteType::kMx);
  EXPECT_FALSE(mx.rate.limited());
}

TEST(DestinationTest, IdleDestinationExpires) {
  Destination d(JobFor(nullptr), "example.net");
  d.last_used_us = kStart;
  const uint64_t expiry = 300 * kSecond;
  EXPECT_FALSE(d.Expired(kStart + 299 * kSecond, expiry));
  EXPECT_TRUE(d.Expired(kStart + 300 * kSecond, expiry));
  // Not while it has work, a worker, or a backoff to remember.
  d.ready.push_back(JobFor(nullptr));
  EXPECT_FALSE(d.Expired(kStart + 900 * kSecond, expiry));
  d.ready.clear();
  d.workers = 1;
  EXPECT_FALSE(d.Expired(kStart + 900 * kSecond, expiry));
  d.workers = 0;
  d.backoff.Fail(smtp::MakeReply(451, "4.4.1", "down"), "", kStart + 880 * kSecond, 60 * kSecond);
  EXPECT_FALSE(d.Expired(kStart + 900 * kSecond, expiry));
  EXPECT_TRUE(d.Expired(kStart + 940 * kSecond, expiry));
}

TEST(DestinationTest, OneConnectionPerJobBeyondTheRunningWorkersUpToTheLimit) {
  RouteConfig route;
  route.name = "relay";
  route.type = RouteType::kSmarthost;
  route.max_connections = 2;
  Destination d(JobFor(&route), "relay");
  EXPECT_FALSE(d.WantsWorker());  // nothing queued
  d.ready.push_back(JobFor(&route));
  EXPECT_TRUE(d.WantsWorker());
  d.workers = 1;
  EXPECT_FALSE(d.WantsWorker());  // the running worker takes it
  d.ready.push_back(JobFor(&route));
  EXPECT_TRUE(d.WantsWorker());
  d.workers = 2;
  d.ready.push_back(JobFor(&route));
  EXPECT_FALSE(d.WantsWorker());  // at max_connections

  RouteConfig maildir;
  maildir.name = "local";
  maildir.type = RouteType::kMaildir;
  Destination m(JobFor(&maildir), "local");
  m.ready.push_back(JobFor(&maildir));
  m.workers = 1;
  EXPECT_TRUE(m.WantsWorker());  // maildir writes are independent: one worker per job
}

// A parked connection (IdleWaiter) on a shard whose clock is virtual: the timer wheel is advanced
// by hand, nothing sleeps, the event loop never runs.
class IdleWaiterTest : public ::testing::Test {
 protected:
  IdleWaiterTest() : shard_(0, Options(&clock_)) {
  }
  static io::ShardOptions Options(const Clock* clock) {
    io::ShardOptions o;
    o.clock = clock;
    return o;
  }
  void Park(IdleWaiter& w, std::chrono::milliseconds timeout) {
    w.shard = &shard_;
    w.timer = shard_.timers().Add(shard_.Now() + timeout, &w);
  }
  void Advance(std::chrono::milliseconds d) {
    clock_.Advance(d);
    shard_.timers().Advance(shard_.Now());
  }

  ManualClock clock_;
  io::Shard shard_;
};

TEST_F(IdleWaiterTest, IdleConnectionIsClosedAfterTheIdleTimeout) {
  IdleWaiter w;
  Park(w, std::chrono::milliseconds(5000));
  Advance(std::chrono::milliseconds(4900));
  EXPECT_FALSE(w.scheduled);  // still parked
  Advance(std::chrono::milliseconds(200));
  EXPECT_TRUE(w.scheduled);
  EXPECT_FALSE(w.woken);  // "no job": the worker says QUIT and closes
  // Exactly one resumption: a job arriving now goes to another connection.
  EXPECT_FALSE(w.Resume(true));
  EXPECT_EQ(shard_.timers().size(), 0u);
}

TEST_F(IdleWaiterTest, AJobWakesTheParkedConnectionAndItsTimerIsGone) {
  IdleWaiter w;
  Park(w, std::chrono::milliseconds(5000));
  Advance(std::chrono::milliseconds(1000));
  EXPECT_TRUE(w.Resume(true));
  EXPECT_TRUE(w.woken);
  EXPECT_EQ(shard_.timers().size(), 0u);
  Advance(std::chrono::milliseconds(10000));  // the idle timeout never fires for it
  EXPECT_TRUE(w.woken);
  EXPECT_FALSE(w.Resume(false));
}

}  // namespace
}  // namespace sluice::delivery
