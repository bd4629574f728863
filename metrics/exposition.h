#pragma once

// Exposition: writes the Prometheus text format 0.0.4 (docs/design.md §9.2).
//
// - A family is one uninterrupted group: `# HELP`, `# TYPE`, then its samples. Family() opens the
//   next group; a second Family() with a name already written is a bug in the caller: it is
//   reported (SLUICE_BUG) and that group's lines are left out, so the output stays parseable.
// - Help text escapes `\` and newline; label values escape `\`, `"` and newline. Both replace
//   invalid UTF-8 bytes with U+FFFD (the format is UTF-8).
// - Numbers come from std::to_chars, never from locale-dependent printf: integers exactly,
//   doubles as the shortest string that round-trips, and `+Inf`, `-Inf`, `NaN`.
// - No timestamps. Every line, including the last, ends with `\n`.
//
// Not thread-safe: one Exposition per scrape.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace sluice::metrics {

enum class MetricType { kCounter, kGauge, kHistogram, kUntyped };
const char* ToString(MetricType type);

struct Label {
  std::string_view name;
  std::string_view value;
};

// A borrowed list of labels, from a braced list at the call site (`{{"queue", "ready"}}`) or from
// a span. It must not outlive the call it is passed to.
class Labels {
 public:
  Labels() = default;
  // The braced list's array lives until the end of the caller's full expression, which is as
  // long as a Labels may live; g++ cannot see that.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  Labels(std::initializer_list<Label> list)  // NOLINT(google-explicit-constructor)
      : data_(list.begin()), size_(list.size()) {
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  Labels(std::span<const Label> labels)  // NOLINT(google-explicit-constructor)
      : data_(labels.data()), size_(labels.size()) {
  }

  const Label* begin() const {
    return data_;
  }
  const Label* end() const {
    return data_ + size_;
  }
  size_t size() const {
    return size_;
  }
  bool empty() const {
    return size_ == 0;
  }

 private:
  const Label* data_ = nullptr;
  size_t size_ = 0;
};

class Exposition {
 public:
  Exposition() = default;

  // Opens the group of family `name`. For a counter, `name` is the full name with `_total` (the
  // 0.0.4 convention); for a histogram it is the base name without `_bucket`/`_sum`/`_count`.
  void Family(std::string_view name, std::string_view help, MetricType type);

  // One sample of the current family. `name` is the family name (for a histogram also
  // `<name>_bucket`, `_sum`, `_count`; prefer Histogram()). A name outside the current family or
  // an invalid label name is a caller bug: reported, and the line is left out.
  void Sample(std::string_view name, Labels labels, double value);
  template <std::integral T>
  void Sample(std::string_view name, Labels labels, T value) {
    if constexpr (std::is_signed_v<T>) {
      SampleText(name, labels, FormatInteger(static_cast<int64_t>(value)));
    } else {
      SampleText(name, labels, FormatInteger(static_cast<uint64_t>(value)));
    }
  }

  // One histogram series of the current (histogram) family. `bucket_counts` are NOT cumulative:
  // one count per upper bound (v <= bound) and a last one for the +Inf bucket, so
  // bucket_counts.size() == upper_bounds.size() + 1. Writes the cumulative `_bucket` lines in
  // increasing `le`, `le="+Inf"`, `_sum`, and `_count` computed from the buckets, so the +Inf
  // bucket always equals `_count`.
  void Histogram(std::string_view name, Labels labels, std::span<const double> upper_bounds,
                 std::span<const uint64_t> bucket_counts, double sum);

  // Fast paths for the registry, which formats each series' labels once at registration.
  // `formatted` is the output of FormatLabels(): `a="x",b="y"`, escaped, without braces.
  static std::string FormatLabels(Labels labels);
  void SampleFormatted(std::string_view name, std::string_view formatted, uint64_t value);
  void SampleFormatted(std::string_view name, std::string_view formatted, int64_t value);
  void HistogramFormatted(std::string_view name, std::string_view formatted,
                          std::span<const std::string> le_values,
                          std::span<const uint64_t> bucket_counts, double sum);

  void Reserve(size_t bytes) {
    out_.reserve(bytes);
  }
  const std::string& text() const {
    return out_;
  }
  std::string Take() && {
    return std::move(out_);
  }

  // Formatting and naming rules, shared with the registry and tests.
  static void AppendDouble(std::string& out, double value);
  static std::string FormatDouble(double value);
  static bool IsValidMetricName(std::string_view name);
  static bool IsValidLabelName(std::string_view name);  // and not reserved (`__` prefix)
  static void AppendEscapedLabelValue(std::string& out, std::string_view value);
  static void AppendEscapedHelp(std::string& out, std::string_view help);

 private:
  // Writes `name` and returns true if a sample of that name belongs to the open family.
  bool BeginSample(std::string_view name);
  bool AppendLabels(Labels labels, std::string_view extra_name, std::string_view extra_value);
  void SampleText(std::string_view name, Labels labels, std::string_view value);
  void LineFormatted(std::string_view name, std::string_view formatted, std::string_view value);

  // A number as text in a small inline buffer.
  struct Number {
    char buf[32];
    size_t len;
    operator std::string_view() const {
      return {buf, len};
    }  // NOLINT
  };
  static Number FormatInteger(int64_t value);
  static Number FormatInteger(uint64_t value);

  std::string out_;
  std::string family_;
  MetricType type_ = MetricType::kUntyped;
  bool open_ = false;                        // a family is open and valid
  std::unordered_set<std::string> written_;  // family names written so far
};

}  // namespace sluice::metrics
