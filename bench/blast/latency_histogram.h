#pragma once

// LatencyHistogram: an HDR-style log-linear histogram of durations. Each
// power-of-two range ("octave") is split into 128 equal sub-buckets, so a
// recorded value is known to within 1/128 (< 0.8 %) of itself. Values are
// nanoseconds, clamped to [kMinValue, kMaxValue] (1 µs .. 100 s); the exact
// minimum, maximum and sum are kept beside the buckets. Not thread-safe: one
// histogram per shard, merged after the run.

#include <array>
#include <cstddef>
#include <cstdint>

namespace sluice::blast {

class LatencyHistogram {
 public:
  static constexpr uint64_t kMinValue = 1'000;            // 1 µs in ns
  static constexpr uint64_t kMaxValue = 100'000'000'000;  // 100 s in ns
  static constexpr unsigned kSubBucketBits = 7;           // 128 sub-buckets per octave

  void Record(uint64_t ns);
  void Merge(const LatencyHistogram& other);

  uint64_t count() const {
    return count_;
  }
  uint64_t min() const {
    return count_ == 0 ? 0 : min_;
  }
  uint64_t max() const {
    return max_;
  }
  double mean() const;
  // The value at quantile q in [0, 1]: the midpoint of the bucket holding the
  // ceil(q * count)-th smallest value, clamped to [min(), max()]; exactly
  // min() for q = 0 and max() for the last rank. 0 when empty.
  uint64_t ValueAtQuantile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static size_t BucketOf(uint64_t ns);
  static uint64_t BucketLow(size_t index);   // smallest value in the bucket
  static uint64_t BucketHigh(size_t index);  // largest value in the bucket

 private:
  static constexpr size_t kSubBuckets = size_t{1} << kSubBucketBits;
  // kMaxValue < 2^37: octaves kSubBucketBits..36 after the linear first range.
  static constexpr size_t kBuckets = (37 - kSubBucketBits + 1) * kSubBuckets;

  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace sluice::blast
