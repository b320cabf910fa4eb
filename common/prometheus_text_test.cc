#include "common/prometheus_text.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::prometheus {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// What a Go service's /metrics looks like, plus the corners the format allows: comments, blank
// lines, tabs, a trailing comma in a label set, escapes, timestamps, special values.
constexpr char kRealWorld[] = R"(# A comment that is not HELP or TYPE.
# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.4e-05
go_gc_duration_seconds{quantile="0.5"} 4.3e-05
go_gc_duration_seconds{quantile="1"} 0.000212
go_gc_duration_seconds_sum 0.0121
go_gc_duration_seconds_count 187
# HELP http_request_duration_seconds Latency of HTTP requests.\nIn seconds; \\ is a backslash.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/metrics",le="0.005"} 10
http_request_duration_seconds_bucket{handler="/metrics",le="0.5"} 12
http_request_duration_seconds_bucket{handler="/metrics",le="+Inf"} 13
http_request_duration_seconds_sum{handler="/metrics"} 1.25
http_request_duration_seconds_count{handler="/metrics"} 13
http_request_duration_seconds_bucket{handler="/api",le="0.005"} 0
http_request_duration_seconds_bucket{handler="/api",le="0.5"} 0
http_request_duration_seconds_bucket{handler="/api",le="+Inf"} 0
http_request_duration_seconds_sum{handler="/api"} 0
http_request_duration_seconds_count{handler="/api"} 0

# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get",} 1027 1395066363000
http_requests_total{ code = "400" , method="post"}	3	1395066363000
# HELP msdos_file_access_time_seconds File access time, with "quotes" in the help.
# TYPE msdos_file_access_time_seconds gauge
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
# HELP temperature_celsius Room temperature.
# TYPE temperature_celsius gauge
temperature_celsius{room="a"} -Inf
temperature_celsius{room="b"} +Inf
temperature_celsius{room="c"} NaN
temperature_celsius{room="d"} -3.5e-2
# HELP schema_version Untyped, with HELP only.
schema_version 3
)";

TEST(ParseExpositionTest, ParsesARealWorldExposition) {
  absl::StatusOr<std::vector<Family>> parsed = ParseExposition(kRealWorld);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::vector<Family>& f = *parsed;
  std::vector<std::string> names, types;
  for (const Family& family : f) {
    names.push_back(family.name);
    types.push_back(family.type);
  }
  EXPECT_THAT(names, ElementsAre("go_gc_duration_seconds", "http_request_duration_seconds",
                                 "http_requests_total", "msdos_file_access_time_seconds",
                                 "temperature_celsius", "schema_version"));
  EXPECT_THAT(types, ElementsAre("summary", "histogram", "counter", "gauge", "gauge", "untyped"));
  EXPECT_EQ(f[1].help, "Latency of HTTP requests.\nIn seconds; \\ is a backslash.");
  EXPECT_EQ(f[1].samples.size(), 10u);
  EXPECT_EQ(f[0].samples.size(), 5u);

  EXPECT_EQ(FindValue(f, "go_gc_duration_seconds_count"), 187);
  EXPECT_EQ(FindValue(f, "go_gc_duration_seconds", {{"quantile", "0.5"}}), 4.3e-05);
  EXPECT_EQ(FindValue(f, "http_request_duration_seconds_bucket",
                      {{"handler", "/metrics"}, {"le", "0.5"}}),
            12);
  EXPECT_EQ(FindValue(f, "http_requests_total", {{"code", "400"}, {"method", "post"}}), 3);
  EXPECT_EQ(f[2].samples[0].timestamp_ms, 1395066363000);
  EXPECT_EQ(
      FindValue(f, "msdos_file_access_time_seconds",
                {{"path", "C:\\DIR\\FILE.TXT"}, {"error", "Cannot find file:\n\"FILE.TXT\""}}),
      1.458255915e9);
  EXPECT_EQ(FindValue(f, "temperature_celsius", {{"room", "a"}}),
            -std::numeric_limits<double>::infinity());
  EXPECT_EQ(FindValue(f, "temperature_celsius", {{"room", "b"}}),
            std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(*FindValue(f, "temperature_celsius", {{"room", "c"}})));
  EXPECT_EQ(FindValue(f, "temperature_celsius", {{"room", "d"}}), -0.035);
  EXPECT_EQ(FindValue(f, "schema_version"), 3);
}

TEST(ParseExpositionTest, FindHelpersMatchExactly) {
  absl::StatusOr<std::vector<Family>> parsed = ParseExposition(kRealWorld);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_NE(FindFamily(*parsed, "http_request_duration_seconds"), nullptr);
  EXPECT_EQ(FindFamily(*parsed, "http_request_duration_seconds")->type, "histogram");
  EXPECT_EQ(FindFamily(*parsed, "http_request_duration_seconds_bucket"), nullptr);
  EXPECT_EQ(FindFamily(*parsed, "nope"), nullptr);
  // A subset or a superset of the labels is not a match.
  EXPECT_EQ(FindValue(*parsed, "http_requests_total", {{"code", "200"}}), std::nullopt);
  EXPECT_EQ(FindValue(*parsed, "schema_version", {{"x", "y"}}), std::nullopt);
}

TEST(ParseExpositionTest, EmptyInputHasNoFamilies) {
  absl::StatusOr<std::vector<Family>> parsed = ParseExposition("");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->empty());
}

TEST(ParseExpositionTest, WithoutConventionsAcceptsBareSamples) {
  ParseOptions loose;
  loose.conventions = false;
  absl::StatusOr<std::vector<Family>> parsed =
      ParseExposition("# TYPE requests counter\nrequests 1\nup 1\n", loose);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].type, "untyped");
  EXPECT_EQ(FindValue(*parsed, "up"), 1);
  // The same text breaks both conventions.
  EXPECT_FALSE(ParseExposition("# TYPE requests counter\nrequests 1\nup 1\n").ok());
}

// The error for `text`, which must be INVALID_ARGUMENT.
std::string ErrorOf(absl::string_view text, bool conventions = true) {
  ParseOptions options;
  options.conventions = conventions;
  absl::StatusOr<std::vector<Family>> parsed = ParseExposition(text, options);
  EXPECT_FALSE(parsed.ok()) << "accepted:\n" << text;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return std::string(parsed.status().message());
}

// A gauge family "g" with HELP, so only the rule under test can fail.
std::string G(absl::string_view samples) {
  return absl::StrCat("# HELP g A gauge.\n# TYPE g gauge\n", samples);
}

TEST(ParseExpositionRejectsTest, SampleWithoutValue) {
  EXPECT_THAT(ErrorOf(G("g{a=\"1\"} 1\ng{a=\"2\"}\n")),
              StartsWith("line 4: sample g has no value"));
}

TEST(ParseExpositionRejectsTest, TextAfterTheTimestamp) {
  EXPECT_THAT(ErrorOf(G("g 1 2 3\n")), StartsWith("line 3: unexpected text \"3\""));
}

TEST(ParseExpositionRejectsTest, UnterminatedLabelSet) {
  EXPECT_THAT(ErrorOf(G("g{a=\"1\" 1\n")), StartsWith("line 3: expected ',' or '}'"));
  EXPECT_THAT(ErrorOf(G("g{a=\"1\n")), StartsWith("line 3: unterminated value of label a"));
}

TEST(ParseExpositionRejectsTest, InvalidMetricName) {
  EXPECT_THAT(ErrorOf(G("g 1\n0g 1\n")), StartsWith("line 4: invalid metric name \"0g\""));
  EXPECT_THAT(ErrorOf("# HELP g-x A gauge.\n"), StartsWith("line 1: invalid metric name \"g-x\""));
  EXPECT_THAT(ErrorOf("# HELP g A gauge.\n# TYPE g.x gauge\n"),
              StartsWith("line 2: invalid metric name \"g.x\""));
}

TEST(ParseExpositionRejectsTest, InvalidLabelName) {
  EXPECT_THAT(ErrorOf(G("g{0a=\"1\"} 1\n")), StartsWith("line 3: invalid label name \"0a\""));
  EXPECT_THAT(ErrorOf(G("g{a-b=\"1\"} 1\n")),
              StartsWith("line 3: expected '=' after label name a"));
}

TEST(ParseExpositionRejectsTest, BadEscapeInLabelValue) {
  EXPECT_THAT(ErrorOf(G("g{a=\"x\\ty\"} 1\n")),
              StartsWith("line 3: invalid escape sequence \"\\t\" in label value"));
}

TEST(ParseExpositionRejectsTest, BadEscapeInHelp) {
  EXPECT_THAT(ErrorOf("# HELP g A \\\"quoted\\\" gauge.\n"),
              StartsWith("line 1: invalid escape sequence \"\\\"\" in HELP text"));
}

TEST(ParseExpositionRejectsTest, UnquotedLabelValue) {
  EXPECT_THAT(ErrorOf(G("g{a=1} 1\n")), StartsWith("line 3: value of label a must be quoted"));
}

TEST(ParseExpositionRejectsTest, InvalidUtf8InLabelValue) {
  EXPECT_THAT(ErrorOf(G("g{a=\"\xC3\x28\"} 1\n")),
              StartsWith("line 3: label value is not valid UTF-8"));
}

TEST(ParseExpositionRejectsTest, DuplicateLabelName) {
  EXPECT_THAT(ErrorOf(G("g{a=\"1\",b=\"2\",a=\"3\"} 1\n")),
              StartsWith("line 3: label a appears twice"));
}

TEST(ParseExpositionRejectsTest, MissingTrailingNewline) {
  EXPECT_THAT(ErrorOf(G("g 1")), StartsWith("line 3: the exposition must end with a newline"));
}

TEST(ParseExpositionRejectsTest, SecondHelp) {
  EXPECT_THAT(ErrorOf(G("# HELP g Again.\ng 1\n")),
              StartsWith("line 3: second HELP line for g (first at line 1)"));
  // Also when the family is not the current one any more.
  EXPECT_THAT(ErrorOf(G("g 1\n# HELP h H.\nh 1\n# HELP g Again.\n")),
              StartsWith("line 6: second HELP line for g (first at line 1)"));
}

TEST(ParseExpositionRejectsTest, SecondType) {
  EXPECT_THAT(ErrorOf(G("# TYPE g gauge\n")),
              StartsWith("line 3: second TYPE line for g (first at line 2)"));
}

TEST(ParseExpositionRejectsTest, TypeAfterSamples) {
  EXPECT_THAT(ErrorOf("# HELP g A gauge.\ng 1\n# TYPE g gauge\n"),
              StartsWith("line 3: TYPE line for g after its samples (from line 2)"));
}

TEST(ParseExpositionRejectsTest, UnknownType) {
  EXPECT_THAT(ErrorOf("# HELP g A gauge.\n# TYPE g meter\n"),
              StartsWith("line 2: TYPE of g must be counter, gauge"));
}

TEST(ParseExpositionRejectsTest, SamplesNotContiguous) {
  EXPECT_THAT(ErrorOf(G("g{a=\"1\"} 1\n# HELP h H.\nh 2\ng{a=\"2\"} 3\n")),
              StartsWith("line 6: samples of family g are not contiguous (it started at line 1)"));
  // A histogram's samples count as its own.
  EXPECT_THAT(ErrorOf("# HELP x X.\n# TYPE x histogram\nx_bucket{le=\"+Inf\"} 1\nx_sum 1\n"
                      "x_count 1\n# HELP h H.\nh 2\nx_bucket{le=\"1\"} 1\n"),
              StartsWith("line 8: samples of family x are not contiguous (it started at line 1)"));
}

TEST(ParseExpositionRejectsTest, DuplicateSeries) {
  EXPECT_THAT(ErrorOf(G("g{a=\"1\",b=\"2\"} 1\ng{b=\"2\",a=\"1\"} 2\n")),
              StartsWith("line 4: duplicate series g{a=\"1\",b=\"2\"} (first at line 3)"));
}

TEST(ParseExpositionRejectsTest, ValuesThatAreNotFloats) {
  for (const char* bad : {"1,5", "inf", "Inf", "nan", "0x10", "1e400", "1e", "--1", ".", "1.2.3"}) {
    EXPECT_THAT(ErrorOf(G(absl::StrCat("g ", bad, "\n"))),
                StartsWith(absl::StrCat("line 3: value \"", bad, "\" of g is not a float")))
        << bad;
  }
  EXPECT_THAT(ErrorOf(G("g 1 12.5\n")), StartsWith("line 3: timestamp \"12.5\" of g"));
}

// A histogram family "h" with HELP and TYPE on lines 1-2.
std::string H(absl::string_view samples) {
  return absl::StrCat("# HELP h A histogram.\n# TYPE h histogram\n", samples);
}

TEST(ParseExpositionRejectsTest, HistogramWithoutInfBucket) {
  EXPECT_THAT(ErrorOf(H("h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1\nh_sum 1\nh_count 1\n")),
              StartsWith("line 3: histogram h has no le=\"+Inf\" bucket"));
}

TEST(ParseExpositionRejectsTest, HistogramBucketsNotCumulative) {
  EXPECT_THAT(
      ErrorOf(H("h_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 4\nh_bucket{le=\"+Inf\"} 6\n"
                "h_sum 1\nh_count 6\n")),
      StartsWith("line 4: histogram h buckets are not cumulative: le=\"2\" has 4, less than "
                 "le=\"1\" (5)"));
}

TEST(ParseExpositionRejectsTest, HistogramCountDiffersFromInfBucket) {
  EXPECT_THAT(ErrorOf(H("h_bucket{l=\"a\",le=\"+Inf\"} 6\nh_sum{l=\"a\"} 1\nh_count{l=\"a\"} 7\n")),
              StartsWith("line 5: histogram h{l=\"a\"}: h_count is 7 but the +Inf bucket is 6"));
}

TEST(ParseExpositionRejectsTest, HistogramMissingSumOrCount) {
  EXPECT_THAT(ErrorOf(H("h_bucket{le=\"+Inf\"} 6\nh_count 6\n")),
              StartsWith("line 3: histogram h has no h_sum"));
  // The second series (line 6) lacks its _count.
  EXPECT_THAT(ErrorOf(H("h_bucket{l=\"a\",le=\"+Inf\"} 6\nh_sum{l=\"a\"} 1\nh_count{l=\"a\"} 6\n"
                        "h_bucket{l=\"b\",le=\"+Inf\"} 6\nh_sum{l=\"b\"} 1\n")),
              StartsWith("line 6: histogram h{l=\"b\"} has no h_count"));
}

TEST(ParseExpositionRejectsTest, BucketWithoutOrWithBadLe) {
  EXPECT_THAT(ErrorOf(H("h_bucket{l=\"a\"} 6\n")),
              StartsWith("line 3: bucket h_bucket{l=\"a\"} has no \"le\" label"));
  EXPECT_THAT(ErrorOf(H("h_bucket{le=\"fast\"} 6\n")),
              StartsWith("line 3: bucket h_bucket{le=\"fast\"}: le=\"fast\" is not a float"));
}

TEST(ParseExpositionRejectsTest, HistogramSampleWithoutSuffix) {
  EXPECT_THAT(ErrorOf(H("h 1\n")), StartsWith("line 3: histogram h has a sample named h;"));
}

TEST(ParseExpositionRejectsTest, FamilyNamedLikeAHistogramSample) {
  EXPECT_THAT(ErrorOf(H("h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n# HELP h_count Clash.\n")),
              StartsWith("line 6: h_count is a sample name of family h"));
}

TEST(ParseExpositionRejectsTest, SummaryWithoutQuantile) {
  EXPECT_THAT(ErrorOf("# HELP s S.\n# TYPE s summary\ns 1\n"),
              StartsWith("line 3: summary sample s needs a float \"quantile\" label"));
}

TEST(ParseExpositionConventionsTest, CounterMustEndInTotal) {
  const std::string text = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n";
  EXPECT_THAT(ErrorOf(text), StartsWith("line 2: counter requests should end in \"_total\""));
  EXPECT_TRUE(ParseExposition(text, {.conventions = false}).ok());
}

TEST(ParseExpositionConventionsTest, OpenMetricsCounterSpellingIsTwoFamilies) {
  // In 0.0.4, "# TYPE foo counter" names family foo; "foo_total" is another (untyped) family.
  const std::string text = "# HELP foo Foos.\n# TYPE foo counter\nfoo_total 1\n";
  absl::StatusOr<std::vector<Family>> loose = ParseExposition(text, {.conventions = false});
  ASSERT_TRUE(loose.ok()) << loose.status();
  ASSERT_EQ(loose->size(), 2u);
  EXPECT_TRUE((*loose)[0].samples.empty());
  EXPECT_EQ((*loose)[1].name, "foo_total");
  EXPECT_EQ((*loose)[1].type, "untyped");
  EXPECT_THAT(ErrorOf(text), StartsWith("line 2: counter foo should end in \"_total\""));
}

TEST(ParseExpositionConventionsTest, OnlyCountersEndInTotal) {
  EXPECT_THAT(ErrorOf("# HELP g_total G.\n# TYPE g_total gauge\ng_total 1\n"),
              StartsWith("line 2: gauge g_total should not end in \"_total\""));
}

TEST(ParseExpositionConventionsTest, FamilyWithoutHelp) {
  EXPECT_THAT(ErrorOf(G("g 1\n# TYPE h gauge\nh 1\n")), StartsWith("line 4: family h has no HELP"));
  EXPECT_THAT(ErrorOf("# HELP e\ne 1\n"), StartsWith("line 1: family e has no HELP"));
  EXPECT_TRUE(ParseExposition(G("g 1\n# TYPE h gauge\nh 1\n"), {.conventions = false}).ok());
}

TEST(ParseExpositionConventionsTest, LongLabelValue) {
  const std::string ok = G(absl::StrCat("g{a=\"", std::string(256, 'x'), "\"} 1\n"));
  const std::string long_value = G(absl::StrCat("g{a=\"", std::string(257, 'x'), "\"} 1\n"));
  EXPECT_TRUE(ParseExposition(ok).ok());
  EXPECT_THAT(ErrorOf(long_value), StartsWith("line 3: value of label a is 257 bytes, over 256"));
  EXPECT_TRUE(ParseExposition(long_value, {.conventions = false}).ok());
}

TEST(ParseExpositionConventionsTest, NegativeCounter) {
  EXPECT_THAT(ErrorOf("# HELP c_total C.\n# TYPE c_total counter\nc_total -1\n"),
              StartsWith("line 3: counter c_total is negative (-1)"));
}

TEST(ParseExpositionConventionsTest, ReservedLabelName) {
  EXPECT_THAT(ErrorOf(G("g{__name__=\"x\"} 1\n")),
              StartsWith("line 3: label name __name__ starts with \"__\""));
  EXPECT_TRUE(ParseExposition(G("g{__x=\"x\"} 1\n"), {.conventions = false}).ok());
}

TEST(FormatTest, ValuesRoundTripAndSpecialValues) {
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(123456789), "123456789");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  // Every value parses back to exactly itself.
  for (double v : {0.1 + 0.2, 1.0 / 3, 5e-324, 1.7976931348623157e308, -1e-7, 0.0}) {
    absl::StatusOr<std::vector<Family>> parsed =
        ParseExposition(G(absl::StrCat("g ", FormatValue(v), "\n")));
    ASSERT_TRUE(parsed.ok()) << v << ": " << parsed.status();
    EXPECT_EQ(FindValue(*parsed, "g"), v) << FormatValue(v);
  }
}

TEST(FormatTest, Escaping) {
  EXPECT_EQ(EscapeHelp("a\\b\nc\"d"), "a\\\\b\\nc\"d");
  EXPECT_EQ(EscapeLabelValue("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
  EXPECT_EQ(EscapeLabelValue("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(EscapeLabelValue("bad\xFFz"), "bad\xEF\xBF\xBDz");  // U+FFFD
  EXPECT_TRUE(IsValidMetricName("forge:rpc_seconds"));
  EXPECT_FALSE(IsValidMetricName("9lives"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("_a1"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
}

}  // namespace
}  // namespace forge::prometheus
