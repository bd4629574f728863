#pragma once

// Registry: the process's metrics, written by shard threads without locks and merged at scrape
// (docs/design.md §2, §9.1).
//
// Every series has one 64-bit cell per shard plus one shared cell for threads that are not shards
// (the spool writer, the admin server, the blocking pool): slot other_thread() == shards().
//   - A shard cell has a single writer, the shard's thread: it is updated with a relaxed load and
//     a relaxed store, a plain add with no `lock` prefix and no contention.
//   - The other_thread() cell may be written by several threads: it uses an atomic
//     read-modify-write (fetch_add); those threads are not on the hot path.
//   - A scrape reads every cell with relaxed loads and sums. Each cell only grows (counters), so
//     successive scrapes are monotonic; a histogram's `_count` is computed from the same bucket
//     snapshot, so `le="+Inf"` always equals `_count`.
//
// Registration (Add*, WithLabels, SetMaxSeries, AddCollector) is rare and may happen on any
// thread at any time, under a mutex; it never blocks writers and a scrape never takes it (lists
// are append-only and published with release stores). Returned references stay valid for the
// Registry's lifetime: look a series up once and keep the reference on the hot path.
//
// Cardinality is bounded. A family holds at most max_series() label sets (default 1000) plus one
// overflow series whose label values are all "other". Once the limit is reached, WithLabels with
// a label set the family does not have returns the overflow series, and each such call adds 1 to
// sluice_metrics_series_overflow_total{family="<name>"}. Label sets that already exist keep
// their own series; lowering the limit later does not remove any.
//
// Naming is checked at registration (a violation is a bug in our code and aborts): metric names
// match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* without a `__` prefix,
// counters end in `_total` and nothing else does, histograms may not use the label `le`, and no
// name (including a histogram's `_bucket`/`_sum`/`_count`) is used twice. Registering the same
// name again with the same type, labels (and bounds) returns the existing family.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "metrics/detail/append_only_list.h"
#include "metrics/detail/cell_arena.h"
#include "metrics/exposition.h"

namespace sluice::metrics {

class Registry;
class CounterFamily;
class GaugeFamily;
class HistogramFamily;

namespace detail {

class SeriesBase {
 public:
  virtual ~SeriesBase() = default;
};

// One pointer per slot to that slot's cells of a series.
using SlotCells = std::unique_ptr<Cell*[]>;

inline void AddSingleWriter(Cell& cell, uint64_t n) {
  cell.store(cell.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace detail

// A monotonically increasing count.
class Counter final : public detail::SeriesBase {
 public:
  // Adds n. `shard` is the calling thread's shard index, or Registry::other_thread() from any
  // other thread. Only the thread of shard s may pass s.
  void Inc(unsigned shard, uint64_t n = 1) {
    if (shard < other_) [[likely]] {
      detail::AddSingleWriter(*cells_[shard], n);
    } else {
      IncShared(shard, n);
    }
  }
  // Sum over all slots (a scrape-time read).
  uint64_t Value() const;

 private:
  friend class CounterFamily;
  Counter(detail::SlotCells cells, unsigned other) : cells_(std::move(cells)), other_(other) {
  }
  void IncShared(unsigned shard, uint64_t n);

  detail::SlotCells cells_;
  unsigned other_;
};

// A value that goes up and down. Either each shard Add()s its own share (connections opened minus
// closed) and the scrape sums the shares, or one thread Set()s the whole value. Set() overwrites
// the other_thread() cell only, so do not mix Set() with Add(other_thread(), ...) on one series;
// shard shares are still added to it.
class Gauge final : public detail::SeriesBase {
 public:
  void Add(unsigned shard, int64_t delta) {
    if (shard < other_) [[likely]] {
      detail::AddSingleWriter(*cells_[shard], static_cast<uint64_t>(delta));
    } else {
      AddShared(shard, delta);
    }
  }
  void Set(int64_t value) {
    cells_[other_]->store(static_cast<uint64_t>(value), std::memory_order_relaxed);
  }
  int64_t Value() const;

 private:
  friend class GaugeFamily;
  Gauge(detail::SlotCells cells, unsigned other) : cells_(std::move(cells)), other_(other) {
  }
  void AddShared(unsigned shard, int64_t delta);

  detail::SlotCells cells_;
  unsigned other_;
};

// Distribution of observed values in fixed buckets. Per slot: one non-cumulative count per upper
// bound, one for +Inf, and the sum (a double stored as its bits; one writer per shard cell, so
// no float read-modify-write races). NaN observations are ignored (they would poison _sum).
class Histogram final : public detail::SeriesBase {
 public:
  void Observe(unsigned shard, double value) {
    if (std::isnan(value)) [[unlikely]] {
      return;
    }
    const size_t bucket = static_cast<size_t>(
        std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin());
    if (shard < other_) [[likely]] {
      detail::Cell* cells = cells_[shard];
      detail::AddSingleWriter(cells[bucket], 1);
      detail::Cell& sum = cells[bounds_->size() + 1];
      sum.store(std::bit_cast<uint64_t>(std::bit_cast<double>(sum.load(std::memory_order_relaxed)) +
                                        value),
                std::memory_order_relaxed);
    } else {
      ObserveShared(shard, bucket, value);
    }
  }

  struct Snapshot {
    std::vector<uint64_t> buckets;  // non-cumulative, bounds + 1 (+Inf last)
    uint64_t count = 0;             // sum of buckets
    double sum = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& upper_bounds() const {
    return *bounds_;
  }

 private:
  friend class HistogramFamily;
  Histogram(detail::SlotCells cells, unsigned other, const std::vector<double>* bounds)
      : cells_(std::move(cells)), other_(other), bounds_(bounds) {
  }
  void ObserveShared(unsigned shard, size_t bucket, double value);
  // Adds this series' per-slot buckets into `buckets` and returns the summed _sum.
  double Accumulate(std::span<uint64_t> buckets) const;

  detail::SlotCells cells_;
  unsigned other_;
  const std::vector<double>* bounds_;  // owned by the family
};

namespace detail {

// Label sets → series, with the cardinality cap. Series are created under mutex_ and published
// through an append-only list that scrapes read without a lock.
class FamilyBase {
 public:
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;
  virtual ~FamilyBase() = default;

  const std::string& name() const {
    return name_;
  }
  const std::string& help() const {
    return help_;
  }
  MetricType type() const {
    return type_;
  }
  const std::vector<std::string>& label_names() const {
    return label_names_;
  }

  // Most label sets this family keeps (the overflow series not counted). Default 1000.
  void SetMaxSeries(size_t max_series);
  size_t max_series() const;
  // Number of series, the overflow series included.
  size_t series_count() const {
    return entries_.size();
  }

 protected:
  FamilyBase(Registry& registry, MetricType type, std::string name, std::string help,
             std::vector<std::string> label_names);

  // The series for `values` (one per label name), created on first use.
  SeriesBase& Lookup(std::span<const std::string_view> values);
  virtual std::unique_ptr<SeriesBase> NewSeries() = 0;
  // Cells for a new series: `per_slot` contiguous cells in every slot.
  SlotCells AllocateCells(size_t per_slot);
  unsigned OtherSlot() const;

  struct Entry {
    std::string formatted_labels;  // Exposition::FormatLabels output
    std::unique_ptr<SeriesBase> series;
  };
  AppendOnlyList<Entry> entries_;

 private:
  friend class sluice::metrics::Registry;
  virtual void Collect(Exposition& out) const = 0;
  SeriesBase& CreateLocked(std::span<const std::string_view> values, std::string key);

  Registry& registry_;
  const MetricType type_;
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;

  mutable std::mutex mutex_;  // guards everything below
  std::unordered_map<std::string, SeriesBase*> by_key_;
  size_t max_series_ = 1000;
  size_t regular_series_ = 0;            // series other than the all-"other" one
  Counter* overflow_counter_ = nullptr;  // this family's sluice_metrics_series_overflow_total
  bool counts_overflow_ = true;          // false for the overflow family itself
};

}  // namespace detail

class CounterFamily final : public detail::FamilyBase {
 public:
  // One value per label name, in registration order. Takes a mutex: keep the result.
  Counter& WithLabels(std::initializer_list<std::string_view> values) {
    return static_cast<Counter&>(Lookup({values.begin(), values.size()}));
  }
  Counter& WithLabels(std::span<const std::string_view> values) {
    return static_cast<Counter&>(Lookup(values));
  }

 private:
  friend class Registry;
  CounterFamily(Registry& registry, std::string name, std::string help,
                std::vector<std::string> label_names)
      : FamilyBase(registry, MetricType::kCounter, std::move(name), std::move(help),
                   std::move(label_names)) {
  }
  std::unique_ptr<detail::SeriesBase> NewSeries() override;
  void Collect(Exposition& out) const override;
};

class GaugeFamily final : public detail::FamilyBase {
 public:
  Gauge& WithLabels(std::initializer_list<std::string_view> values) {
    return static_cast<Gauge&>(Lookup({values.begin(), values.size()}));
  }
  Gauge& WithLabels(std::span<const std::string_view> values) {
    return static_cast<Gauge&>(Lookup(values));
  }

 private:
  friend class Registry;
  GaugeFamily(Registry& registry, std::string name, std::string help,
              std::vector<std::string> label_names)
      : FamilyBase(registry, MetricType::kGauge, std::move(name), std::move(help),
                   std::move(label_names)) {
  }
  std::unique_ptr<detail::SeriesBase> NewSeries() override;
  void Collect(Exposition& out) const override;
};

class HistogramFamily final : public detail::FamilyBase {
 public:
  Histogram& WithLabels(std::initializer_list<std::string_view> values) {
    return static_cast<Histogram&>(Lookup({values.begin(), values.size()}));
  }
  Histogram& WithLabels(std::span<const std::string_view> values) {
    return static_cast<Histogram&>(Lookup(values));
  }
  const std::vector<double>& upper_bounds() const {
    return bounds_;
  }

 private:
  friend class Registry;
  HistogramFamily(Registry& registry, std::string name, std::string help,
                  std::vector<std::string> label_names, std::vector<double> bounds);
  std::unique_ptr<detail::SeriesBase> NewSeries() override;
  void Collect(Exposition& out) const override;

  const std::vector<double> bounds_;
  const std::vector<std::string> le_;  // formatted bounds, stable across scrapes
};

// Bucket layouts. Prometheus' default latency buckets, in seconds: 5 ms … 10 s.
std::vector<double> DefaultLatencyBuckets();
// start, start*factor, … (count bounds).
std::vector<double> ExponentialBuckets(double start, double factor, size_t count);

class Registry {
 public:
  // Shards are numbered 0..shards-1; other_thread() == shards is the slot for everyone else.
  explicit Registry(unsigned shards);
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  ~Registry();

  unsigned shards() const {
    return shards_;
  }
  unsigned other_thread() const {
    return shards_;
  }

  CounterFamily& AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  // `upper_bounds` finite and strictly increasing; a trailing +Inf is implied (and dropped if
  // given).
  HistogramFamily& AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names,
                                std::vector<double> upper_bounds);

  // Values computed at scrape time (spool stats, RocksDB properties, process stats, queue ages).
  // The collector runs on the scraping thread (the admin server's), possibly concurrently with
  // another scrape; it appends whole families to the Exposition. It must stay callable for the
  // Registry's lifetime.
  void AddCollector(std::function<void(Exposition&)> collector);

  // The text exposition (format 0.0.4): families and collectors in registration order.
  std::string Scrape() const;
  void Collect(Exposition& out) const;

 private:
  CounterFamily& AddCounterUnlocked(std::string name, std::string help,
                                    std::vector<std::string> label_names);
  GaugeFamily& AddGaugeUnlocked(std::string name, std::string help,
                                std::vector<std::string> label_names);
  HistogramFamily& AddHistogramUnlocked(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> upper_bounds);
  void TouchOverflow(detail::FamilyBase& family);
  friend class detail::FamilyBase;

  struct Entry {
    std::unique_ptr<detail::FamilyBase> family;
    std::function<void(Exposition&)> collector;
  };

  // Returns the registered family of that name if its type/labels match (nullptr if none);
  // aborts on a conflicting registration. Called with mutex_ held.
  detail::FamilyBase* FindCompatibleLocked(const std::string& name, MetricType type,
                                           const std::vector<std::string>& label_names);
  void ReserveNamesLocked(const std::string& name, MetricType type,
                          const std::vector<std::string>& label_names);
  Counter& OverflowCounterFor(const std::string& family);

  const unsigned shards_;
  detail::CellArena arena_;

  std::mutex mutex_;  // registration
  detail::AppendOnlyList<Entry> entries_;
  std::unordered_map<std::string, detail::FamilyBase*> families_by_name_;
  std::unordered_set<std::string> used_names_;
  CounterFamily* overflow_family_ = nullptr;
  mutable std::atomic<size_t> last_scrape_size_{0};
};

}  // namespace sluice::metrics
