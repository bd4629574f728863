#include "bench/blast/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace sluice::blast {

// Values below 2^kSubBucketBits get one bucket each; from there on an octave
// [2^k, 2^(k+1)) holds kSubBuckets buckets of width 2^(k - kSubBucketBits).
// The first octave continues the linear range, so indices are contiguous.
size_t LatencyHistogram::BucketOf(uint64_t ns) {
  ns = std::clamp(ns, kMinValue, kMaxValue);
  const unsigned k = static_cast<unsigned>(std::bit_width(ns)) - 1;
  if (k < kSubBucketBits)
    return static_cast<size_t>(ns);
  const unsigned shift = k - kSubBucketBits;
  const uint64_t mantissa = (ns >> shift) & (kSubBuckets - 1);
  return (shift + 1) * kSubBuckets + static_cast<size_t>(mantissa);
}

uint64_t LatencyHistogram::BucketLow(size_t index) {
  if (index < kSubBuckets)
    return index;
  const size_t shift = index / kSubBuckets - 1;
  const uint64_t mantissa = index % kSubBuckets;
  return (kSubBuckets + mantissa) << shift;
}

uint64_t LatencyHistogram::BucketHigh(size_t index) {
  if (index < kSubBuckets)
    return index;
  const size_t shift = index / kSubBuckets - 1;
  return BucketLow(index) + (uint64_t{1} << shift) - 1;
}

void LatencyHistogram::Record(uint64_t ns) {
  ++buckets_[BucketOf(ns)];
  if (count_ == 0 || ns < min_)
    min_ = ns;
  if (ns > max_)
    max_ = ns;
  ++count_;
  sum_ += static_cast<double>(ns);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0)
    return;
  for (size_t i = 0; i < kBuckets; ++i)
    buckets_[i] += other.buckets_[i];
  if (count_ == 0 || other.min_ < min_)
    min_ = other.min_;
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

double LatencyHistogram::mean() const {
  return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
}

uint64_t LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0)
    return 0;
  q = std::clamp(q, 0.0, 1.0);
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  // The extremes are known exactly; a bucket midpoint would only blur them.
  if (rank == 1 && q == 0.0)
    return min_;
  if (rank == count_)
    return max_;
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      const uint64_t mid = BucketLow(i) + (BucketHigh(i) - BucketLow(i)) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

}  // namespace sluice::blast
