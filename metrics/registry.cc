#include "metrics/registry.h"

#include <cstring>
#include <limits>

#include "base/log.h"

namespace sluice::metrics {

namespace {

constexpr std::string_view kOverflowFamily = "sluice_metrics_series_overflow_total";
constexpr std::string_view kOverflowValue = "other";

// Length-prefixed so that no two label value lists share a key.
std::string EncodeKey(std::span<const std::string_view> values) {
  std::string key;
  for (std::string_view v : values) {
    const auto len = static_cast<uint32_t>(v.size());
    key.append(reinterpret_cast<const char*>(&len), sizeof(len));
    key.append(v);
  }
  return key;
}

uint64_t SumSlots(const detail::SlotCells& cells, unsigned slots) {
  uint64_t total = 0;
  for (unsigned s = 0; s < slots; ++s) {
    total += cells[s]->load(std::memory_order_relaxed);
  }
  return total;
}

}  // namespace

// ----- series -----

uint64_t Counter::Value() const {
  return SumSlots(cells_, other_ + 1);
}

void Counter::IncShared(unsigned shard, uint64_t n) {
  if (shard > other_) {
    SLUICE_BUG("metrics: shard index out of range");
  }
  cells_[other_]->fetch_add(n, std::memory_order_relaxed);
}

int64_t Gauge::Value() const {
  // Shares are added modulo 2^64; the total is the signed value.
  return static_cast<int64_t>(SumSlots(cells_, other_ + 1));
}

void Gauge::AddShared(unsigned shard, int64_t delta) {
  if (shard > other_) {
    SLUICE_BUG("metrics: shard index out of range");
  }
  cells_[other_]->fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
}

void Histogram::ObserveShared(unsigned shard, size_t bucket, double value) {
  if (shard > other_) {
    SLUICE_BUG("metrics: shard index out of range");
  }
  detail::Cell* cells = cells_[other_];
  cells[bucket].fetch_add(1, std::memory_order_relaxed);
  detail::Cell& sum = cells[bounds_->size() + 1];
  uint64_t old = sum.load(std::memory_order_relaxed);
  while (!sum.compare_exchange_weak(old,
                                    std::bit_cast<uint64_t>(std::bit_cast<double>(old) + value),
                                    std::memory_order_relaxed)) {
  }
}

double Histogram::Accumulate(std::span<uint64_t> buckets) const {
  const size_t n = bounds_->size() + 1;
  double sum = 0;
  for (unsigned s = 0; s <= other_; ++s) {
    const detail::Cell* cells = cells_[s];
    for (size_t b = 0; b < n; ++b) {
      buckets[b] += cells[b].load(std::memory_order_relaxed);
    }
    sum += std::bit_cast<double>(cells[n].load(std::memory_order_relaxed));
  }
  return sum;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snap;
  snap.buckets.assign(bounds_->size() + 1, 0);
  snap.sum = Accumulate(snap.buckets);
  for (uint64_t b : snap.buckets) {
    snap.count += b;
  }
  return snap;
}

// ----- families -----

namespace detail {

FamilyBase::FamilyBase(Registry& registry, MetricType type, std::string name, std::string help,
                       std::vector<std::string> label_names)
    : registry_(registry),
      type_(type),
      name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)) {
}

void FamilyBase::SetMaxSeries(size_t max_series) {
  std::lock_guard<std::mutex> lock(mutex_);
  max_series_ = max_series;
}

size_t FamilyBase::max_series() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return max_series_;
}

unsigned FamilyBase::OtherSlot() const {
  return registry_.other_thread();
}

SlotCells FamilyBase::AllocateCells(size_t per_slot) {
  const unsigned slots = registry_.other_thread() + 1;
  SlotCells cells(new Cell*[slots]);
  for (unsigned s = 0; s < slots; ++s) {
    cells[s] = registry_.arena_.Allocate(s, per_slot);
  }
  return cells;
}

SeriesBase& FamilyBase::Lookup(std::span<const std::string_view> values) {
  const std::vector<std::string_view> overflow_values(label_names_.size(), kOverflowValue);
  if (values.size() != label_names_.size()) {
    SLUICE_BUG("metrics: WithLabels got the wrong number of label values");
    values = overflow_values;
  }
  std::string key = EncodeKey(values);
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    return *it->second;
  }
  const bool is_overflow_set =
      !values.empty() && std::all_of(values.begin(), values.end(),
                                     [](std::string_view v) { return v == kOverflowValue; });
  if (is_overflow_set) {
    return CreateLocked(values, std::move(key));
  }
  if (regular_series_ >= max_series_) {
    if (counts_overflow_) {
      if (overflow_counter_ == nullptr) {
        overflow_counter_ = &registry_.OverflowCounterFor(name_);
      }
      overflow_counter_->Inc(registry_.other_thread());
    }
    std::string overflow_key = EncodeKey(overflow_values);
    if (auto it = by_key_.find(overflow_key); it != by_key_.end()) {
      return *it->second;
    }
    return CreateLocked(overflow_values, std::move(overflow_key));
  }
  ++regular_series_;
  return CreateLocked(values, std::move(key));
}

SeriesBase& FamilyBase::CreateLocked(std::span<const std::string_view> values, std::string key) {
  std::vector<Label> labels;
  labels.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    labels.push_back(Label{label_names_[i], values[i]});
  }
  Entry& entry =
      entries_.Append(Entry{Exposition::FormatLabels(std::span<const Label>(labels)), NewSeries()});
  by_key_.emplace(std::move(key), entry.series.get());
  return *entry.series;
}

}  // namespace detail

std::unique_ptr<detail::SeriesBase> CounterFamily::NewSeries() {
  return std::unique_ptr<detail::SeriesBase>(new Counter(AllocateCells(1), OtherSlot()));
}

void CounterFamily::Collect(Exposition& out) const {
  out.Family(name(), help(), MetricType::kCounter);
  const size_t n = entries_.size();
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    out.SampleFormatted(name(), e.formatted_labels, static_cast<const Counter&>(*e.series).Value());
  }
}

std::unique_ptr<detail::SeriesBase> GaugeFamily::NewSeries() {
  return std::unique_ptr<detail::SeriesBase>(new Gauge(AllocateCells(1), OtherSlot()));
}

void GaugeFamily::Collect(Exposition& out) const {
  out.Family(name(), help(), MetricType::kGauge);
  const size_t n = entries_.size();
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    out.SampleFormatted(name(), e.formatted_labels, static_cast<const Gauge&>(*e.series).Value());
  }
}

namespace {

std::vector<std::string> FormatBounds(const std::vector<double>& bounds) {
  std::vector<std::string> le;
  le.reserve(bounds.size());
  for (double b : bounds) {
    le.push_back(Exposition::FormatDouble(b));
  }
  return le;
}

}  // namespace

HistogramFamily::HistogramFamily(Registry& registry, std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds)
    : FamilyBase(registry, MetricType::kHistogram, std::move(name), std::move(help),
                 std::move(label_names)),
      bounds_(std::move(bounds)),
      le_(FormatBounds(bounds_)) {
}

std::unique_ptr<detail::SeriesBase> HistogramFamily::NewSeries() {
  // Per slot: the buckets (bounds + the +Inf one) and the sum.
  return std::unique_ptr<detail::SeriesBase>(
      new Histogram(AllocateCells(bounds_.size() + 2), OtherSlot(), &bounds_));
}

void HistogramFamily::Collect(Exposition& out) const {
  out.Family(name(), help(), MetricType::kHistogram);
  std::vector<uint64_t> buckets(bounds_.size() + 1);
  const size_t n = entries_.size();
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    std::fill(buckets.begin(), buckets.end(), 0);
    const double sum = static_cast<const Histogram&>(*e.series).Accumulate(buckets);
    out.HistogramFormatted(name(), e.formatted_labels, le_, buckets, sum);
  }
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> ExponentialBuckets(double start, double factor, size_t count) {
  SLUICE_CHECK(start > 0 && factor > 1);
  std::vector<double> bounds;
  bounds.reserve(count);
  double b = start;
  for (size_t i = 0; i < count; ++i) {
    bounds.push_back(b);
    b *= factor;
  }
  return bounds;
}

// ----- registry -----

Registry::Registry(unsigned shards) : shards_(shards), arena_(shards + 1) {
  overflow_family_ = &AddCounter(
      std::string(kOverflowFamily),
      "WithLabels calls that found their metric family at its series limit and were answered "
      "with the series whose labels are all \"other\".",
      {"family"});
  std::lock_guard<std::mutex> lock(overflow_family_->mutex_);
  overflow_family_->counts_overflow_ = false;
  overflow_family_->max_series_ = std::numeric_limits<size_t>::max();  // one per family: bounded
}

Registry::~Registry() = default;

Counter& Registry::OverflowCounterFor(const std::string& family) {
  return overflow_family_->WithLabels({std::string_view(family)});
}

detail::FamilyBase* Registry::FindCompatibleLocked(const std::string& name, MetricType type,
                                                   const std::vector<std::string>& label_names) {
  auto it = families_by_name_.find(name);
  if (it == families_by_name_.end()) {
    return nullptr;
  }
  detail::FamilyBase* family = it->second;
  if (family->type() != type || family->label_names() != label_names) {
    spdlog::critical("metrics: {} registered twice with different types or labels", name);
    SLUICE_CHECK(false && "conflicting metric registration");
  }
  return family;
}

void Registry::ReserveNamesLocked(const std::string& name, MetricType type,
                                  const std::vector<std::string>& label_names) {
  const auto check = [&](bool ok, const char* what) {
    if (!ok) {
      spdlog::critical("metrics: {}: {}", name, what);
      SLUICE_CHECK(false && "invalid metric registration");
    }
  };
  check(Exposition::IsValidMetricName(name), "invalid metric name");
  const bool has_total = name.ends_with("_total");
  check(type != MetricType::kCounter || has_total, "counter names end in _total");
  check(type == MetricType::kCounter || !has_total, "only counter names end in _total");
  for (size_t i = 0; i < label_names.size(); ++i) {
    check(Exposition::IsValidLabelName(label_names[i]), "invalid label name");
    check(type != MetricType::kHistogram || label_names[i] != "le", "histograms reserve le");
    for (size_t j = 0; j < i; ++j) {
      check(label_names[i] != label_names[j], "duplicate label name");
    }
  }
  std::vector<std::string> names{name};
  if (type == MetricType::kHistogram) {
    names.push_back(name + "_bucket");
    names.push_back(name + "_sum");
    names.push_back(name + "_count");
  }
  for (const std::string& n : names) {
    check(!used_names_.contains(n), "name already used by another family");
  }
  for (std::string& n : names) {
    used_names_.insert(std::move(n));
  }
}

CounterFamily& Registry::AddCounterUnlocked(std::string name, std::string help,
                                            std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto* f = FindCompatibleLocked(name, MetricType::kCounter, label_names)) {
    return static_cast<CounterFamily&>(*f);
  }
  ReserveNamesLocked(name, MetricType::kCounter, label_names);
  auto* family = new CounterFamily(*this, name, std::move(help), std::move(label_names));
  entries_.Append(Entry{std::unique_ptr<detail::FamilyBase>(family), nullptr});
  families_by_name_.emplace(std::move(name), family);
  if (family->label_names().empty()) {
    family->WithLabels({});  // a label-less family always shows its one series, 0 at first
  }
  return *family;
}

GaugeFamily& Registry::AddGaugeUnlocked(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto* f = FindCompatibleLocked(name, MetricType::kGauge, label_names)) {
    return static_cast<GaugeFamily&>(*f);
  }
  ReserveNamesLocked(name, MetricType::kGauge, label_names);
  auto* family = new GaugeFamily(*this, name, std::move(help), std::move(label_names));
  entries_.Append(Entry{std::unique_ptr<detail::FamilyBase>(family), nullptr});
  families_by_name_.emplace(std::move(name), family);
  if (family->label_names().empty()) {
    family->WithLabels({});
  }
  return *family;
}

HistogramFamily& Registry::AddHistogramUnlocked(std::string name, std::string help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> upper_bounds) {
  if (!upper_bounds.empty() && std::isinf(upper_bounds.back()) && upper_bounds.back() > 0) {
    upper_bounds.pop_back();  // +Inf is always there
  }
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    SLUICE_CHECK(std::isfinite(upper_bounds[i]));
    SLUICE_CHECK(i == 0 || upper_bounds[i - 1] < upper_bounds[i]);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto* f = FindCompatibleLocked(name, MetricType::kHistogram, label_names)) {
    auto& family = static_cast<HistogramFamily&>(*f);
    SLUICE_CHECK(family.upper_bounds() == upper_bounds);
    return family;
  }
  ReserveNamesLocked(name, MetricType::kHistogram, label_names);
  auto* family = new HistogramFamily(*this, name, std::move(help), std::move(label_names),
                                     std::move(upper_bounds));
  entries_.Append(Entry{std::unique_ptr<detail::FamilyBase>(family), nullptr});
  families_by_name_.emplace(std::move(name), family);
  if (family->label_names().empty()) {
    family->WithLabels({});
  }
  return *family;
}

void Registry::TouchOverflow(detail::FamilyBase& family) {
  // Families with labels can overflow: show their overflow counter from the
  // start, at 0, so increase() sees the first overflow and alerts can name it.
  if (overflow_family_ == nullptr || &family == overflow_family_)
    return;
  if (family.label_names().empty())
    return;
  OverflowCounterFor(family.name());
}

CounterFamily& Registry::AddCounter(std::string name, std::string help,
                                    std::vector<std::string> label_names) {
  CounterFamily& f = AddCounterUnlocked(std::move(name), std::move(help), std::move(label_names));
  TouchOverflow(f);
  return f;
}

GaugeFamily& Registry::AddGauge(std::string name, std::string help,
                                std::vector<std::string> label_names) {
  GaugeFamily& f = AddGaugeUnlocked(std::move(name), std::move(help), std::move(label_names));
  TouchOverflow(f);
  return f;
}

HistogramFamily& Registry::AddHistogram(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> upper_bounds) {
  HistogramFamily& f = AddHistogramUnlocked(std::move(name), std::move(help),
                                            std::move(label_names), std::move(upper_bounds));
  TouchOverflow(f);
  return f;
}

void Registry::AddCollector(std::function<void(Exposition&)> collector) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.Append(Entry{nullptr, std::move(collector)});
}

void Registry::Collect(Exposition& out) const {
  const size_t n = entries_.size();
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    if (e.family != nullptr) {
      e.family->Collect(out);
    } else {
      e.collector(out);
    }
  }
}

std::string Registry::Scrape() const {
  Exposition out;
  out.Reserve(last_scrape_size_.load(std::memory_order_relaxed) + 4096);
  Collect(out);
  std::string text = std::move(out).Take();
  last_scrape_size_.store(text.size(), std::memory_order_relaxed);
  return text;
}

}  // namespace sluice::metrics
