#include "bench/blast/latency_histogram.h"

#include <cstdint>

#include <gtest/gtest.h>

namespace sluice::blast {
namespace {

TEST(LatencyHistogramTest, BucketsAreContiguousAndNarrow) {
  const size_t first = LatencyHistogram::BucketOf(LatencyHistogram::kMinValue);
  const size_t last = LatencyHistogram::BucketOf(LatencyHistogram::kMaxValue);
  for (size_t i = first; i < last; ++i) {
    EXPECT_EQ(LatencyHistogram::BucketHigh(i) + 1, LatencyHistogram::BucketLow(i + 1)) << i;
    const uint64_t low = LatencyHistogram::BucketLow(i);
    const uint64_t width = LatencyHistogram::BucketHigh(i) - low + 1;
    EXPECT_LE(static_cast<double>(width) / static_cast<double>(low), 0.01) << i;
    EXPECT_EQ(LatencyHistogram::BucketOf(low), i);
    EXPECT_EQ(LatencyHistogram::BucketOf(LatencyHistogram::BucketHigh(i)), i);
  }
}

TEST(LatencyHistogramTest, ClampsOutOfRangeValues) {
  EXPECT_EQ(LatencyHistogram::BucketOf(0), LatencyHistogram::BucketOf(LatencyHistogram::kMinValue));
  EXPECT_EQ(LatencyHistogram::BucketOf(~uint64_t{0}),
            LatencyHistogram::BucketOf(LatencyHistogram::kMaxValue));
  LatencyHistogram h;
  h.Record(5);
  h.Record(500'000'000'000);
  EXPECT_EQ(h.count(), 2u);
  EXPECT_EQ(h.min(), 5u);
  EXPECT_EQ(h.max(), 500'000'000'000u);  // exact extremes survive the clamp
}

TEST(LatencyHistogramTest, QuantilesWithinOnePercent) {
  LatencyHistogram h;
  // 1 ms .. 100 ms in 10 µs steps: quantile q sits near 1 ms + q * 99 ms.
  for (uint64_t v = 1'000'000; v <= 100'000'000; v += 10'000)
    h.Record(v);
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double want = 1e6 + q * 99e6;
    const double got = static_cast<double>(h.ValueAtQuantile(q));
    EXPECT_NEAR(got, want, want * 0.01) << q;
  }
  EXPECT_EQ(h.ValueAtQuantile(0.0), 1'000'000u);
  EXPECT_EQ(h.ValueAtQuantile(1.0), 100'000'000u);
  EXPECT_NEAR(h.mean(), 50.5e6, 1e3);
}

TEST(LatencyHistogramTest, MergeAddsCountsAndExtremes) {
  LatencyHistogram a, b, empty;
  for (int i = 0; i < 99; ++i)
    a.Record(2'000'000);
  b.Record(50'000);
  b.Record(900'000'000);
  a.Merge(b);
  a.Merge(empty);
  EXPECT_EQ(a.count(), 101u);
  EXPECT_EQ(a.min(), 50'000u);
  EXPECT_EQ(a.max(), 900'000'000u);
  EXPECT_NEAR(static_cast<double>(a.ValueAtQuantile(0.5)), 2e6, 2e4);
  EXPECT_EQ(a.ValueAtQuantile(1.0), 900'000'000u);
  EXPECT_EQ(empty.ValueAtQuantile(0.5), 0u);
}

}  // namespace
}  // namespace sluice::blast
