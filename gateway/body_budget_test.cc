#include "gateway/body_budget.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::gateway {
namespace {

TEST(BodyBudget, TotalAndPerClientBounds) {
  BodyBudget b(1000, 400);
  EXPECT_TRUE(b.Take("a", 400));
  EXPECT_FALSE(b.Take("a", 1));  // a's share is used up
  EXPECT_TRUE(b.Take("b", 400));
  EXPECT_FALSE(b.Take("c", 201));  // the total would pass 1000
  EXPECT_TRUE(b.Take("c", 200));
  EXPECT_EQ(b.used(), 1000);
  EXPECT_EQ(b.clients(), 3u);
  EXPECT_FALSE(b.Fits("d", 1));
  b.Give("a", 400);
  EXPECT_TRUE(b.Fits("d", 400));
  EXPECT_FALSE(b.Fits("d", 401));  // past the per-client share
  EXPECT_EQ(b.clients(), 2u);      // a holds nothing: no entry left behind
  b.Give("b", 400);
  b.Give("c", 200);
  EXPECT_EQ(b.used(), 0);
  EXPECT_EQ(b.clients(), 0u);
}

TEST(BodyBudget, LeaseGrowsAndGivesBack) {
  BodyBudget b(1000, 600);
  {
    BodyBudget::Lease lease(b, "a");
    EXPECT_TRUE(lease.GrowTo(100));
    EXPECT_TRUE(lease.GrowTo(50));  // already holds more
    EXPECT_EQ(lease.held(), 100);
    EXPECT_TRUE(lease.GrowTo(600));
    EXPECT_FALSE(lease.GrowTo(601));  // the share
    EXPECT_EQ(lease.held(), 600);     // a failed step keeps what it held
    EXPECT_EQ(b.used(), 600);
    BodyBudget::Lease other(b, "b");
    EXPECT_FALSE(other.GrowTo(401));  // the total
    EXPECT_TRUE(other.GrowTo(400));
    other.ShrinkTo(100);
    EXPECT_EQ(other.held(), 100);
    EXPECT_EQ(b.used(), 700);
    other.ShrinkTo(200);  // never grows
    EXPECT_EQ(other.held(), 100);
    other.Reset();
    EXPECT_EQ(other.held(), 0);
    EXPECT_EQ(b.used(), 600);
  }
  EXPECT_EQ(b.used(), 0);  // the destructor gave it back
}

TEST(BodyBudget, ConcurrentLeasesNeverPassTheBound) {
  constexpr int64_t kTotal = 1 << 20;
  BodyBudget b(kTotal, kTotal / 4);
  std::vector<std::thread> threads;
  std::atomic<bool> over{false};
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&b, &over, t] {
      BodyBudget::Lease lease(b, "client" + std::to_string(t % 3));
      for (int i = 0; i < 20000; ++i) {
        (void)lease.GrowTo(lease.held() + 4096);
        if (b.used() > kTotal)
          over = true;
        if (i % 16 == 0)
          lease.Reset();
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_FALSE(over.load());
  EXPECT_EQ(b.used(), 0);
}

}  // namespace
}  // namespace sluice::gateway
