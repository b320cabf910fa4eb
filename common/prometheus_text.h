// The Prometheus text exposition format, version 0.0.4: the primitives a writer needs (name
// checks, escaping, number formatting) and a STRICT parser meant for tests, so a test can assert
// that what /metrics serves is valid and carries the values it should.
//
// Reference: https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
#ifndef FORGE_COMMON_PROMETHEUS_TEXT_H_
#define FORGE_COMMON_PROMETHEUS_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace forge::prometheus {

// ---- Format primitives (shared by metrics::Registry and the parser) ----

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(absl::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]* (names starting with "__" are valid here but reserved; callers that
// register labels refuse them).
bool IsValidLabelName(absl::string_view name);

// Shortest text that parses back to exactly `v` (std::to_chars), or "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);
// A HELP docstring: '\' -> "\\", newline -> "\n". Invalid UTF-8 is replaced by U+FFFD.
std::string EscapeHelp(absl::string_view help);
// A label value (without the quotes): '\' -> "\\", '"' -> "\"", newline -> "\n". Invalid UTF-8
// is replaced by U+FFFD.
std::string EscapeLabelValue(absl::string_view value);

// ---- Parser ----

struct ParseOptions {
  // Also enforce the conventions promtool lints for (on by default, so tests hold /metrics to
  // them): every family has a non-empty HELP; a counter's name ends in "_total" and no other
  // type's does; counter values are >= 0 (or NaN); no label name starts with "__"; no label
  // value is longer than `max_label_value_bytes` (a long value usually means an unbounded
  // label such as an error message or a path: a cardinality problem).
  bool conventions = true;
  size_t max_label_value_bytes = 256;
};

struct Sample {
  std::string name;  // as written: "x_bucket", "x_sum", "x_count" for a histogram x
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
  std::optional<int64_t> timestamp_ms;
};

struct Family {
  std::string name;  // the name on its TYPE/HELP line, or the sample name when it has neither
  std::string type;  // counter | gauge | histogram | summary | untyped
  std::string help;  // unescaped; empty when there is no HELP line
  std::vector<Sample> samples;  // in input order
};

// Parses a whole exposition in text format 0.0.4. Families are returned in input order.
//
// Families follow the 0.0.4 rules, which is what metrics::Registry::Render() writes: a TYPE or
// HELP line names the family, and its samples carry exactly that name, except that a histogram
// x owns x_bucket, x_sum and x_count and a summary x owns x, x_sum and x_count. So a counter is
// "# TYPE foo_total counter" with samples "foo_total" (the OpenMetrics spelling "# TYPE foo
// counter" + "foo_total 1" reads as an empty counter family foo and an untyped family
// foo_total, as in Prometheus's own 0.0.4 parser). Samples with no HELP/TYPE before them form
// an untyped family of their own name.
//
// Blank lines and "#" comments other than HELP/TYPE are ignored; blanks and tabs separate
// tokens. Values are decimal floats or exactly "+Inf", "-Inf", "NaN" (no hex floats, no "inf";
// out-of-range decimals are refused as Prometheus refuses them); timestamps are integers.
//
// Returns INVALID_ARGUMENT "line N: <what is wrong>" (N is 1-based) for: a malformed line; an
// invalid metric or label name; a bad escape or an unquoted label value; invalid UTF-8 in a
// label value or HELP; a label repeated in one sample; a missing final newline (N is the last
// line); a second HELP or TYPE for a family, or a TYPE after its samples; a family whose lines
// are not contiguous; a duplicate series (same name and labels); a value that is not a float;
// and for a histogram series (samples equal but for "le"): a bucket without "le" or with a
// non-float "le", no le="+Inf" bucket, counts that decrease as "le" grows, _count different
// from the +Inf bucket, a missing _sum or _count (N is the series' first line for the missing
// pieces); for a summary, a sample x without a float "quantile" and a missing _sum or _count.
// With `options.conventions`, also the rules listed at ParseOptions.
absl::StatusOr<std::vector<Family>> ParseExposition(absl::string_view text,
                                                    const ParseOptions& options = {});

// The family called `name` (for a histogram, "x", not "x_bucket"), or nullptr.
const Family* FindFamily(const std::vector<Family>& families, absl::string_view name);

// The value of the sample named `sample_name` whose labels are exactly `labels` (no more, no
// fewer), or nullopt.
std::optional<double> FindValue(const std::vector<Family>& families, absl::string_view sample_name,
                                const std::map<std::string, std::string>& labels = {});

}  // namespace forge::prometheus

#endif  // FORGE_COMMON_PROMETHEUS_TEXT_H_
