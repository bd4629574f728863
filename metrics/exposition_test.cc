#include "metrics/exposition.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::metrics {
namespace {

TEST(ExpositionTest, HelpAndTypeComeFirstAndEveryLineEndsWithNewline) {
  Exposition out;
  out.Family("sluice_things_total", "Things.", MetricType::kCounter);
  out.Sample("sluice_things_total", {}, 3);
  out.Family("sluice_depth", "Depth.", MetricType::kGauge);
  out.Sample("sluice_depth", {{"queue", "ready"}}, -2);
  EXPECT_EQ(out.text(),
            "# HELP sluice_things_total Things.\n"
            "# TYPE sluice_things_total counter\n"
            "sluice_things_total 3\n"
            "# HELP sluice_depth Depth.\n"
            "# TYPE sluice_depth gauge\n"
            "sluice_depth{queue=\"ready\"} -2\n");
}

TEST(ExpositionTest, EscapesHelpText) {
  Exposition out;
  out.Family("x", "back\\slash \"quoted\"\nsecond line", MetricType::kGauge);
  // Help escapes only backslash and newline (quotes stay as they are).
  EXPECT_EQ(out.text(),
            "# HELP x back\\\\slash \"quoted\"\\nsecond line\n"
            "# TYPE x gauge\n");
}

TEST(ExpositionTest, EscapesLabelValues) {
  Exposition out;
  out.Family("x", "h", MetricType::kGauge);
  out.Sample("x", {{"a", "back\\slash"}, {"b", "say \"hi\""}, {"c", "two\nlines"}}, 1);
  EXPECT_EQ(out.text(),
            "# HELP x h\n# TYPE x gauge\n"
            "x{a=\"back\\\\slash\",b=\"say \\\"hi\\\"\",c=\"two\\nlines\"} 1\n");
}

TEST(ExpositionTest, ReplacesInvalidUtf8InLabelValuesAndHelp) {
  Exposition out;
  out.Family("x", "bad \xff byte", MetricType::kGauge);
  out.Sample("x", {{"d", "caf\xc3\xa9 \xc3 \xed\xa0\x80"}}, 1);  // é, truncated, surrogate
  EXPECT_EQ(out.text(),
            "# HELP x bad \xEF\xBF\xBD byte\n# TYPE x gauge\n"
            "x{d=\"caf\xc3\xa9 \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"} 1\n");
}

TEST(ExpositionTest, FormatsIntegersExactly) {
  Exposition out;
  out.Family("x", "h", MetricType::kGauge);
  out.Sample("x", {{"k", "u64max"}}, std::numeric_limits<uint64_t>::max());
  out.Sample("x", {{"k", "i64min"}}, std::numeric_limits<int64_t>::min());
  out.Sample("x", {{"k", "zero"}}, 0);
  EXPECT_EQ(out.text(),
            "# HELP x h\n# TYPE x gauge\n"
            "x{k=\"u64max\"} 18446744073709551615\n"
            "x{k=\"i64min\"} -9223372036854775808\n"
            "x{k=\"zero\"} 0\n");
}

TEST(ExpositionTest, FormatsDoublesShortestRoundTripAndSpecialValues) {
  EXPECT_EQ(Exposition::FormatDouble(0.1), "0.1");
  EXPECT_EQ(Exposition::FormatDouble(0.005), "0.005");
  EXPECT_EQ(Exposition::FormatDouble(1.0), "1");
  EXPECT_EQ(Exposition::FormatDouble(2.5), "2.5");
  EXPECT_EQ(Exposition::FormatDouble(-0.25), "-0.25");
  EXPECT_EQ(Exposition::FormatDouble(1e21), "1e+21");
  EXPECT_EQ(Exposition::FormatDouble(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(Exposition::FormatDouble(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(Exposition::FormatDouble(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(Exposition::FormatDouble(std::nan("")), "NaN");
  // Round trip: the text parses back to the same double.
  for (double v : {0.1, 1e-300, 123456.789, 5e-324, 1.7976931348623157e308}) {
    EXPECT_EQ(std::strtod(Exposition::FormatDouble(v).c_str(), nullptr), v);
  }
}

TEST(ExpositionTest, HistogramIsCumulativeWithInfEqualToCount) {
  Exposition out;
  out.Family("lat_seconds", "Latency.", MetricType::kHistogram);
  const std::vector<double> bounds{0.005, 0.5, 1};
  const std::vector<uint64_t> counts{2, 0, 3, 4};  // non-cumulative; last is the +Inf bucket
  out.Histogram("lat_seconds", {{"side", "in"}}, bounds, counts, 12.5);
  EXPECT_EQ(out.text(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{side=\"in\",le=\"0.005\"} 2\n"
            "lat_seconds_bucket{side=\"in\",le=\"0.5\"} 2\n"
            "lat_seconds_bucket{side=\"in\",le=\"1\"} 5\n"
            "lat_seconds_bucket{side=\"in\",le=\"+Inf\"} 9\n"
            "lat_seconds_sum{side=\"in\"} 12.5\n"
            "lat_seconds_count{side=\"in\"} 9\n");
}

TEST(ExpositionTest, HistogramWithoutLabels) {
  Exposition out;
  out.Family("h", "H.", MetricType::kHistogram);
  const std::vector<double> bounds{1};
  const std::vector<uint64_t> counts{1, 1};
  out.Histogram("h", {}, bounds, counts, 3);
  EXPECT_EQ(out.text(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n");
}

TEST(ExpositionTest, ValidatesNames) {
  EXPECT_TRUE(Exposition::IsValidMetricName("sluice_smtpd_connections_total"));
  EXPECT_TRUE(Exposition::IsValidMetricName("a:b_c9"));
  EXPECT_FALSE(Exposition::IsValidMetricName(""));
  EXPECT_FALSE(Exposition::IsValidMetricName("9abc"));
  EXPECT_FALSE(Exposition::IsValidMetricName("a-b"));
  EXPECT_TRUE(Exposition::IsValidLabelName("queue"));
  EXPECT_TRUE(Exposition::IsValidLabelName("_x"));
  EXPECT_FALSE(Exposition::IsValidLabelName("__name__"));
  EXPECT_FALSE(Exposition::IsValidLabelName("a:b"));
  EXPECT_FALSE(Exposition::IsValidLabelName("1a"));
}

#ifndef NDEBUG
// In debug builds a caller bug aborts (SLUICE_BUG); in release it is logged and the lines are
// left out, keeping the scrape parseable.
TEST(ExpositionDeathTest, SecondGroupOfOneFamilyIsABug) {
  EXPECT_DEATH(
      {
        Exposition out;
        out.Family("x", "h", MetricType::kGauge);
        out.Family("y", "h", MetricType::kGauge);
        out.Family("x", "h", MetricType::kGauge);
      },
      "written twice");
}

TEST(ExpositionDeathTest, SampleOfAnotherFamilyIsABug) {
  EXPECT_DEATH(
      {
        Exposition out;
        out.Family("x", "h", MetricType::kGauge);
        out.Sample("y", {}, 1);
      },
      "does not belong");
}
#endif

}  // namespace
}  // namespace sluice::metrics
