#include "metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "base/ascii.h"
#include "base/log.h"
#include "metrics/detail/utf8.h"

namespace sluice::metrics {

const char* ToString(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
    case MetricType::kUntyped:
      return "untyped";
  }
  return "untyped";
}

namespace {

// Appends `text` with `escape(c, out)` deciding for each ASCII byte; invalid UTF-8 bytes become
// U+FFFD.
template <typename EscapeAscii>
void AppendUtf8(std::string& out, std::string_view text, EscapeAscii escape) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = detail::Utf8SequenceLength(text, i);
    if (len == 1) {
      escape(text[i], out);
      i += 1;
    } else if (len == 0) {
      out += detail::kReplacementChar;
      i += 1;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
}

}  // namespace

bool Exposition::IsValidMetricName(std::string_view name) {
  // [a-zA-Z_:][a-zA-Z0-9_:]*
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAsciiAlpha(c) || c == '_' || c == ':' || (i > 0 && IsAsciiDigit(c)))) {
      return false;
    }
  }
  return true;
}

bool Exposition::IsValidLabelName(std::string_view name) {
  // [a-zA-Z_][a-zA-Z0-9_]*, and names starting with "__" are reserved for Prometheus.
  if (name.empty() || name.starts_with("__")) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAsciiAlpha(c) || c == '_' || (i > 0 && IsAsciiDigit(c)))) {
      return false;
    }
  }
  return true;
}

void Exposition::AppendEscapedLabelValue(std::string& out, std::string_view value) {
  AppendUtf8(out, value, [](char c, std::string& o) {
    switch (c) {
      case '\\':
        o += "\\\\";
        break;
      case '"':
        o += "\\\"";
        break;
      case '\n':
        o += "\\n";
        break;
      default:
        o += c;
    }
  });
}

void Exposition::AppendEscapedHelp(std::string& out, std::string_view help) {
  AppendUtf8(out, help, [](char c, std::string& o) {
    switch (c) {
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      default:
        o += c;
    }
  });
}

void Exposition::AppendDouble(std::string& out, double value) {
  // Go's ParseFloat spellings (docs/design.md §9.2).
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  // Shortest representation that round-trips; locale-independent.
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) {
    SLUICE_BUG("to_chars(double) failed");
    out += "NaN";
    return;
  }
  out.append(buf, end);
}

std::string Exposition::FormatDouble(double value) {
  std::string s;
  AppendDouble(s, value);
  return s;
}

Exposition::Number Exposition::FormatInteger(int64_t value) {
  Number n{};
  n.len = static_cast<size_t>(std::to_chars(n.buf, n.buf + sizeof(n.buf), value).ptr - n.buf);
  return n;
}

Exposition::Number Exposition::FormatInteger(uint64_t value) {
  Number n{};
  n.len = static_cast<size_t>(std::to_chars(n.buf, n.buf + sizeof(n.buf), value).ptr - n.buf);
  return n;
}

std::string Exposition::FormatLabels(Labels labels) {
  std::string out;
  bool first = true;
  for (const Label& label : labels) {
    if (!first) {
      out += ',';
    }
    first = false;
    out += label.name;
    out += "=\"";
    AppendEscapedLabelValue(out, label.value);
    out += '"';
  }
  return out;
}

void Exposition::Family(std::string_view name, std::string_view help, MetricType type) {
  open_ = false;
  if (!IsValidMetricName(name)) {
    SLUICE_BUG("metrics: invalid metric family name");
    return;
  }
  if (!written_.emplace(name).second) {
    // Two groups of one name would make the whole scrape invalid (0.0.4: one group per family).
    SLUICE_BUG("metrics: metric family written twice in one scrape");
    return;
  }
  family_.assign(name);
  type_ = type;
  open_ = true;
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  AppendEscapedHelp(out_, help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += ToString(type);
  out_ += '\n';
}

bool Exposition::BeginSample(std::string_view name) {
  if (!open_) {
    // Either no Family() yet (a bug) or the family was rejected (already reported).
    if (family_.empty()) {
      SLUICE_BUG("metrics: sample written before any family");
    }
    return false;
  }
  bool ok = name == family_;
  if (!ok && type_ == MetricType::kHistogram && name.starts_with(family_)) {
    const std::string_view suffix = name.substr(family_.size());
    ok = suffix == "_bucket" || suffix == "_sum" || suffix == "_count";
  }
  if (!ok) {
    SLUICE_BUG("metrics: sample name does not belong to the open family");
    return false;
  }
  out_ += name;
  return true;
}

bool Exposition::AppendLabels(Labels labels, std::string_view extra_name,
                              std::string_view extra_value) {
  for (const Label& label : labels) {
    if (!IsValidLabelName(label.name) || (!extra_name.empty() && label.name == extra_name)) {
      SLUICE_BUG("metrics: invalid label name");
      return false;
    }
  }
  if (labels.empty() && extra_name.empty()) {
    return true;
  }
  out_ += '{';
  bool first = true;
  for (const Label& label : labels) {
    if (!first) {
      out_ += ',';
    }
    first = false;
    out_ += label.name;
    out_ += "=\"";
    AppendEscapedLabelValue(out_, label.value);
    out_ += '"';
  }
  if (!extra_name.empty()) {
    if (!first) {
      out_ += ',';
    }
    out_ += extra_name;
    out_ += "=\"";
    out_ += extra_value;  // our own le strings: nothing to escape
    out_ += '"';
  }
  out_ += '}';
  return true;
}

void Exposition::SampleText(std::string_view name, Labels labels, std::string_view value) {
  const size_t mark = out_.size();
  if (!BeginSample(name) || !AppendLabels(labels, {}, {})) {
    out_.resize(mark);
    return;
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void Exposition::Sample(std::string_view name, Labels labels, double value) {
  std::string text;
  AppendDouble(text, value);
  SampleText(name, labels, text);
}

void Exposition::Histogram(std::string_view name, Labels labels,
                           std::span<const double> upper_bounds,
                           std::span<const uint64_t> bucket_counts, double sum) {
  if (type_ != MetricType::kHistogram || bucket_counts.size() != upper_bounds.size() + 1) {
    if (open_) {
      SLUICE_BUG("metrics: Histogram() outside a histogram family or with a bucket count mismatch");
    }
    return;
  }
  for (size_t i = 1; i < upper_bounds.size(); ++i) {
    if (!(upper_bounds[i - 1] < upper_bounds[i])) {
      SLUICE_BUG("metrics: histogram bounds must increase");
      return;
    }
  }
  for (const Label& label : labels) {
    if (!IsValidLabelName(label.name) || label.name == "le") {
      SLUICE_BUG("metrics: invalid histogram label name");
      return;
    }
  }
  std::vector<std::string> le;
  le.reserve(upper_bounds.size());
  for (double bound : upper_bounds) {
    le.push_back(FormatDouble(bound));
  }
  HistogramFormatted(name, FormatLabels(labels), le, bucket_counts, sum);
}

void Exposition::LineFormatted(std::string_view name, std::string_view formatted,
                               std::string_view value) {
  out_ += name;
  if (!formatted.empty()) {
    out_ += '{';
    out_ += formatted;
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void Exposition::SampleFormatted(std::string_view name, std::string_view formatted,
                                 uint64_t value) {
  if (open_ && name == family_) {
    LineFormatted(name, formatted, FormatInteger(value));
  }
}

void Exposition::SampleFormatted(std::string_view name, std::string_view formatted, int64_t value) {
  if (open_ && name == family_) {
    LineFormatted(name, formatted, FormatInteger(value));
  }
}

void Exposition::HistogramFormatted(std::string_view name, std::string_view formatted,
                                    std::span<const std::string> le_values,
                                    std::span<const uint64_t> bucket_counts, double sum) {
  if (!open_ || type_ != MetricType::kHistogram || name != family_ ||
      bucket_counts.size() != le_values.size() + 1) {
    return;
  }
  // Cumulative counts; _count is the +Inf bucket, computed here from the same snapshot, so the
  // two agree even while writers race with the scrape (docs/design.md §9.1).
  uint64_t cumulative = 0;
  const auto bucket_line = [&](std::string_view le) {
    out_ += name;
    out_ += "_bucket{";
    if (!formatted.empty()) {
      out_ += formatted;
      out_ += ',';
    }
    out_ += "le=\"";
    out_ += le;
    out_ += "\"} ";
    out_ += FormatInteger(cumulative);
    out_ += '\n';
  };
  for (size_t i = 0; i < le_values.size(); ++i) {
    cumulative += bucket_counts[i];
    bucket_line(le_values[i]);
  }
  cumulative += bucket_counts.back();
  bucket_line("+Inf");
  const auto suffixed_line = [&](std::string_view suffix, std::string_view value) {
    out_ += name;
    out_ += suffix;
    if (!formatted.empty()) {
      out_ += '{';
      out_ += formatted;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  };
  std::string sum_text;
  AppendDouble(sum_text, sum);
  suffixed_line("_sum", sum_text);
  suffixed_line("_count", FormatInteger(cumulative));
}

}  // namespace sluice::metrics
