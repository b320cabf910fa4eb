#include "common/prometheus_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace forge::prometheus {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// Length of the valid UTF-8 sequence at the start of `s`, or 0 when it is not one (overlong
// forms, surrogates and code points past U+10FFFF are invalid).
size_t Utf8SequenceLength(absl::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool IsValidUtf8(absl::string_view s) {
  while (!s.empty()) {
    const size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

// Appends `s` with each invalid UTF-8 byte replaced by U+FFFD and each byte in `escaped` written
// as a backslash escape (newline as "\n", any other byte as itself).
void AppendEscaped(absl::string_view s, absl::string_view escaped, std::string* out) {
  while (!s.empty()) {
    const size_t n = Utf8SequenceLength(s);
    if (n == 0) {
      out->append("\xEF\xBF\xBD");
      s.remove_prefix(1);
      continue;
    }
    const char c = s[0];
    if (n == 1 && escaped.find(c) != absl::string_view::npos) {
      out->push_back('\\');
      out->push_back(c == '\n' ? 'n' : c);
    } else {
      out->append(s.data(), n);
    }
    s.remove_prefix(n);
  }
}

// Strict float grammar: [+-]?(digits[.digits*]|.digits)([eE][+-]?digits)?, "+Inf", "-Inf",
// "NaN". Refuses what std::from_chars refuses as out of range.
std::optional<double> ParseFloat(absl::string_view s) {
  if (s == "+Inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf") return -std::numeric_limits<double>::infinity();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t digits = 0;
  while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const size_t exp_start = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == exp_start) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  // from_chars takes no leading '+'.
  const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
  double v = 0;
  const auto [end, ec] = std::from_chars(begin, s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> ParseTimestamp(absl::string_view s) {
  const size_t start = (!s.empty() && s[0] == '-') ? 1 : 0;
  if (s.size() == start) return std::nullopt;
  for (size_t i = start; i < s.size(); ++i) {
    if (!IsDigit(s[i])) return std::nullopt;
  }
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

absl::string_view TrimBlanks(absl::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

absl::string_view NextToken(absl::string_view* s) {
  *s = TrimBlanks(*s);
  size_t n = 0;
  while (n < s->size() && !IsBlank((*s)[n])) ++n;
  absl::string_view token = s->substr(0, n);
  s->remove_prefix(n);
  return token;
}

std::string FormatLabels(const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ",";
    absl::StrAppend(&out, k, "=\"", EscapeLabelValue(v), "\"");
  }
  return out + "}";
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

}  // namespace

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAlpha(c) || c == '_' || c == ':' || (i > 0 && IsDigit(c)))) return false;
  }
  return true;
}

bool IsValidLabelName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAlpha(c) || c == '_' || (i > 0 && IsDigit(c)))) return false;
  }
  return true;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, ec == std::errc() ? end : buf);
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  AppendEscaped(help, "\\\n", &out);
  return out;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  AppendEscaped(value, "\\\"\n", &out);
  return out;
}

namespace {

// A family being read: its lines so far.
struct Pending {
  Family family;
  int first_line = 0;
  int help_line = 0;  // 0: none
  int type_line = 0;  // 0: none
  std::vector<int> sample_lines;
};

// A family already started (current or finished).
struct Seen {
  int first_line;
  int help_line;
  int type_line;
};

// One-pass parser; see ParseExposition() for the rules. Families are validated as a whole
// when the next one starts (and at the end).
class Parser {
 public:
  explicit Parser(const ParseOptions& options) : options_(options) {}

  absl::StatusOr<std::vector<Family>> Parse(absl::string_view text) {
    if (text.empty()) return std::vector<Family>();
    std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
    if (text.back() != '\n') {
      return LineError(static_cast<int>(lines.size()),
                       "the exposition must end with a newline ('\\n')");
    }
    lines.pop_back();  // the empty piece after the final newline
    for (size_t i = 0; i < lines.size(); ++i) {
      const int line = static_cast<int>(i) + 1;
      const absl::string_view l = TrimBlanks(lines[i]);
      if (l.empty()) continue;
      absl::Status s = l[0] == '#' ? Comment(line, l.substr(1)) : SampleLine(line, l);
      if (!s.ok()) return s;
    }
    if (absl::Status s = FinishCurrent(); !s.ok()) return s;
    return std::move(done_);
  }

 private:
  absl::Status Comment(int line, absl::string_view rest) {
    const absl::string_view keyword = NextToken(&rest);
    if (keyword != "HELP" && keyword != "TYPE") return absl::OkStatus();  // a plain comment
    const absl::string_view name = NextToken(&rest);
    if (name.empty()) return LineError(line, absl::StrCat(keyword, " line without a metric name"));
    if (!IsValidMetricName(name)) {
      return LineError(line, absl::StrCat("invalid metric name \"", name, "\""));
    }
    if (keyword == "TYPE") {
      const absl::string_view type = NextToken(&rest);
      if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
          type != "untyped") {
        return LineError(line, absl::StrCat("TYPE of ", name, " must be counter, gauge, ",
                                            "histogram, summary or untyped (got \"", type, "\")"));
      }
      if (!TrimBlanks(rest).empty()) {
        return LineError(line, absl::StrCat("unexpected text after TYPE ", name, " ", type));
      }
      if (absl::Status s = StartFamily(line, name, "TYPE"); !s.ok()) return s;
      if (current_->type_line != 0) {
        return LineError(line, absl::StrCat("second TYPE line for ", name, " (first at line ",
                                            current_->type_line, ")"));
      }
      if (!current_->sample_lines.empty()) {
        return LineError(line,
                         absl::StrCat("TYPE line for ", name, " after its samples (from line ",
                                      current_->sample_lines.front(), ")"));
      }
      current_->type_line = line;
      current_->family.type = std::string(type);
      if (type == "histogram" || type == "summary") {
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          if (type == "summary" && absl::string_view(suffix) == "_bucket") continue;
          const std::string owned = absl::StrCat(name, suffix);
          if (seen_.count(owned) > 0) {
            return LineError(
                line, absl::StrCat(type, " ", name, " owns the sample name ", owned,
                                   ", already a family from line ", seen_[owned].first_line));
          }
          owner_[owned] = std::string(name);
        }
      }
      return absl::OkStatus();
    }
    // HELP: the docstring is the rest of the line after the separating blanks.
    while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
    std::string help;
    if (absl::Status s = Unescape(line, rest, /*quote_allowed=*/false, &help); !s.ok()) return s;
    if (absl::Status s = StartFamily(line, name, "HELP"); !s.ok()) return s;
    if (current_->help_line != 0) {
      return LineError(line, absl::StrCat("second HELP line for ", name, " (first at line ",
                                          current_->help_line, ")"));
    }
    current_->help_line = line;
    current_->family.help = std::move(help);
    return absl::OkStatus();
  }

  // Makes `name` the current family for a HELP/TYPE line: continues it, or starts it.
  absl::Status StartFamily(int line, absl::string_view name, absl::string_view keyword) {
    if (current_.has_value() && current_->family.name == name) return absl::OkStatus();
    if (auto it = seen_.find(std::string(name)); it != seen_.end()) {
      const int earlier = keyword == "HELP" ? it->second.help_line : it->second.type_line;
      if (earlier != 0) {
        return LineError(line, absl::StrCat("second ", keyword, " line for ", name,
                                            " (first at line ", earlier, ")"));
      }
      return LineError(line,
                       absl::StrCat("family ", name, " is not contiguous (it started at line ",
                                    it->second.first_line, ")"));
    }
    if (auto it = owner_.find(std::string(name)); it != owner_.end()) {
      return LineError(line, absl::StrCat(name, " is a sample name of family ", it->second,
                                          "; it cannot have its own ", keyword, " line"));
    }
    return NewFamily(line, name);
  }

  absl::Status NewFamily(int line, absl::string_view name) {
    if (absl::Status s = FinishCurrent(); !s.ok()) return s;
    current_.emplace();
    current_->family.name = std::string(name);
    current_->family.type = "untyped";
    current_->first_line = line;
    seen_[std::string(name)] = Seen{line, 0, 0};
    return absl::OkStatus();
  }

  // Unescapes a HELP docstring (quote_allowed=false: only \\ and \n) or a label value (also \").
  static absl::Status Unescape(int line, absl::string_view in, bool quote_allowed,
                               std::string* out) {
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] != '\\') {
        out->push_back(in[i]);
        continue;
      }
      const char next = i + 1 < in.size() ? in[i + 1] : '\0';
      if (next == '\\' || (quote_allowed && next == '"')) {
        out->push_back(next);
      } else if (next == 'n') {
        out->push_back('\n');
      } else {
        return LineError(
            line,
            absl::StrCat("invalid escape sequence \"\\", next == '\0' ? "" : std::string(1, next),
                         "\" in ", quote_allowed ? "label value" : "HELP text",
                         quote_allowed ? " (allowed: \\\\ \\\" \\n)" : " (allowed: \\\\ \\n)"));
      }
      ++i;
    }
    if (!IsValidUtf8(*out)) {
      return LineError(
          line, absl::StrCat(quote_allowed ? "label value" : "HELP text", " is not valid UTF-8"));
    }
    return absl::OkStatus();
  }

  // name{labels} value [timestamp]
  absl::Status SampleLine(int line, absl::string_view l) {
    Sample sample;
    size_t i = 0;
    while (i < l.size() && !IsBlank(l[i]) && l[i] != '{') ++i;
    sample.name = std::string(l.substr(0, i));
    if (!IsValidMetricName(sample.name)) {
      return LineError(line, absl::StrCat("invalid metric name \"", sample.name, "\""));
    }
    absl::string_view rest = l.substr(i);
    while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
    if (!rest.empty() && rest.front() == '{') {
      rest.remove_prefix(1);
      if (absl::Status s = Labels(line, &rest, &sample.labels); !s.ok()) return s;
    }
    const absl::string_view value = NextToken(&rest);
    if (value.empty())
      return LineError(line, absl::StrCat("sample ", sample.name, " has no value"));
    const std::optional<double> v = ParseFloat(value);
    if (!v.has_value()) {
      return LineError(line, absl::StrCat("value \"", value, "\" of ", sample.name,
                                          " is not a float (or +Inf, -Inf, NaN)"));
    }
    sample.value = *v;
    const absl::string_view ts = NextToken(&rest);
    if (!ts.empty()) {
      sample.timestamp_ms = ParseTimestamp(ts);
      if (!sample.timestamp_ms.has_value()) {
        return LineError(line, absl::StrCat("timestamp \"", ts, "\" of ", sample.name,
                                            " is not an integer (milliseconds)"));
      }
    }
    if (!TrimBlanks(rest).empty()) {
      return LineError(line, absl::StrCat("unexpected text \"", TrimBlanks(rest), "\" after the ",
                                          ts.empty() ? "value" : "timestamp", " of ", sample.name));
    }
    return AddSample(line, std::move(sample));
  }

  // Parses `a="x",b="y"}` (the '{' already consumed); leaves `rest` after the '}'.
  absl::Status Labels(int line, absl::string_view* rest,
                      std::map<std::string, std::string>* labels) {
    absl::string_view& r = *rest;
    const auto skip = [&r] {
      while (!r.empty() && IsBlank(r.front())) r.remove_prefix(1);
    };
    while (true) {
      skip();
      if (r.empty()) return LineError(line, "unterminated label set (missing '}')");
      if (r.front() == '}') break;
      size_t n = 0;
      while (n < r.size() && (IsAlpha(r[n]) || IsDigit(r[n]) || r[n] == '_')) ++n;
      const std::string name(r.substr(0, n));
      if (!IsValidLabelName(name)) {
        const absl::string_view bad = r.substr(0, std::min(r.size(), r.find_first_of("=,}\" \t")));
        return LineError(line, absl::StrCat("invalid label name \"", bad, "\""));
      }
      if (options_.conventions && name.rfind("__", 0) == 0) {
        return LineError(line, absl::StrCat("label name ", name,
                                            " starts with \"__\" (reserved for Prometheus)"));
      }
      r.remove_prefix(n);
      skip();
      if (r.empty() || r.front() != '=') {
        return LineError(line, absl::StrCat("expected '=' after label name ", name));
      }
      r.remove_prefix(1);
      skip();
      if (r.empty() || r.front() != '"') {
        return LineError(line, absl::StrCat("value of label ", name, " must be quoted"));
      }
      r.remove_prefix(1);
      size_t end = 0;
      while (end < r.size() && r[end] != '"') end += r[end] == '\\' ? 2 : 1;
      if (end >= r.size()) {
        return LineError(line, absl::StrCat("unterminated value of label ", name));
      }
      std::string value;
      if (absl::Status s = Unescape(line, r.substr(0, end), /*quote_allowed=*/true, &value);
          !s.ok()) {
        return s;
      }
      r.remove_prefix(end + 1);
      if (options_.conventions && value.size() > options_.max_label_value_bytes) {
        return LineError(
            line, absl::StrCat("value of label ", name, " is ", value.size(), " bytes, over ",
                               options_.max_label_value_bytes, " (an unbounded label value?)"));
      }
      if (!labels->emplace(name, std::move(value)).second) {
        return LineError(line, absl::StrCat("label ", name, " appears twice"));
      }
      skip();
      if (!r.empty() && r.front() == ',') {
        r.remove_prefix(1);
        continue;
      }
      if (r.empty() || r.front() != '}') {
        return LineError(line, absl::StrCat("expected ',' or '}' after label ", name));
      }
    }
    r.remove_prefix(1);
    return absl::OkStatus();
  }

  static bool Owns(const Family& f, absl::string_view sample_name) {
    const absl::string_view n = f.name;
    if (sample_name == n) return f.type != "histogram";
    if (f.type != "histogram" && f.type != "summary") return false;
    if (sample_name.substr(0, n.size()) != n) return false;
    const absl::string_view suffix = sample_name.substr(n.size());
    return suffix == "_sum" || suffix == "_count" || (f.type == "histogram" && suffix == "_bucket");
  }

  absl::Status AddSample(int line, Sample sample) {
    if (current_.has_value() && current_->family.type == "histogram" &&
        sample.name == current_->family.name) {
      return LineError(line, absl::StrCat("histogram ", sample.name, " has a sample named ",
                                          sample.name, "; expected ", sample.name, "_bucket, ",
                                          sample.name, "_sum or ", sample.name, "_count"));
    }
    if (!current_.has_value() || !Owns(current_->family, sample.name)) {
      if (auto it = owner_.find(sample.name); it != owner_.end()) {
        return LineError(line, absl::StrCat("samples of family ", it->second,
                                            " are not contiguous (it started at line ",
                                            seen_[it->second].first_line, ")"));
      }
      if (auto it = seen_.find(sample.name); it != seen_.end()) {
        return LineError(line, absl::StrCat("samples of family ", sample.name,
                                            " are not contiguous (it started at line ",
                                            it->second.first_line, ")"));
      }
      if (absl::Status s = NewFamily(line, sample.name); !s.ok()) return s;
    }
    const std::string series = sample.name + FormatLabels(sample.labels);
    if (auto [it, inserted] = series_.emplace(series, line); !inserted) {
      return LineError(
          line, absl::StrCat("duplicate series ", series, " (first at line ", it->second, ")"));
    }
    const Family& f = current_->family;
    if (f.type == "histogram" && sample.name == f.name + "_bucket") {
      auto le = sample.labels.find("le");
      if (le == sample.labels.end()) {
        return LineError(line, absl::StrCat("bucket ", series, " has no \"le\" label"));
      }
      if (!ParseFloat(le->second).has_value()) {
        return LineError(
            line, absl::StrCat("bucket ", series, ": le=\"", le->second, "\" is not a float"));
      }
    }
    if (f.type == "summary" && sample.name == f.name) {
      auto q = sample.labels.find("quantile");
      if (q == sample.labels.end() || !ParseFloat(q->second).has_value()) {
        return LineError(
            line, absl::StrCat("summary sample ", series, " needs a float \"quantile\" label"));
      }
    }
    if (options_.conventions && f.type == "counter" && sample.value < 0) {
      return LineError(
          line, absl::StrCat("counter ", series, " is negative (", FormatValue(sample.value), ")"));
    }
    current_->sample_lines.push_back(line);
    current_->family.samples.push_back(std::move(sample));
    return absl::OkStatus();
  }

  absl::Status FinishCurrent() {
    if (!current_.has_value()) return absl::OkStatus();
    Pending p = std::move(*current_);
    current_.reset();
    seen_[p.family.name] = Seen{p.first_line, p.help_line, p.type_line};
    const Family& f = p.family;
    if (options_.conventions) {
      if (f.help.empty()) {
        return LineError(p.first_line, absl::StrCat("family ", f.name, " has no HELP text"));
      }
      const bool total = absl::string_view(f.name).size() >= 6 &&
                         absl::string_view(f.name).substr(f.name.size() - 6) == "_total";
      const int where = p.type_line != 0 ? p.type_line : p.first_line;
      if (f.type == "counter" && !total) {
        return LineError(where, absl::StrCat("counter ", f.name, " should end in \"_total\""));
      }
      if (f.type != "counter" && total) {
        return LineError(where, absl::StrCat(f.type, " ", f.name,
                                             " should not end in \"_total\" (counters only)"));
      }
    }
    if (f.type == "histogram" || f.type == "summary") {
      if (absl::Status s = CheckSeries(p); !s.ok()) return s;
    }
    done_.push_back(std::move(p.family));
    return absl::OkStatus();
  }

  // Histogram/summary series: the samples whose labels are equal once "le" is removed.
  absl::Status CheckSeries(const Pending& p) {
    const Family& f = p.family;
    struct Series {
      int first_line = 0;
      std::vector<std::pair<double, std::pair<double, int>>> buckets;  // le -> (count, line)
      std::optional<std::pair<double, int>> sum, count;                // (value, line)
    };
    std::map<std::string, Series> by_labels;
    std::vector<std::string> order;
    for (size_t i = 0; i < f.samples.size(); ++i) {
      const Sample& s = f.samples[i];
      const int line = p.sample_lines[i];
      std::map<std::string, std::string> labels = s.labels;
      std::optional<double> le;
      if (s.name == f.name + "_bucket") le = *ParseFloat(labels["le"]);
      if (f.type == "histogram") labels.erase("le");
      if (f.type == "summary") labels.erase("quantile");
      const std::string key = FormatLabels(labels);
      auto [it, inserted] = by_labels.try_emplace(key);
      Series& series = it->second;
      if (inserted) series.first_line = line, order.push_back(key);
      if (le.has_value()) {
        series.buckets.push_back({*le, {s.value, line}});
      } else if (s.name == f.name + "_sum") {
        series.sum = {s.value, line};
      } else if (s.name == f.name + "_count") {
        series.count = {s.value, line};
      }
    }
    for (const std::string& key : order) {
      Series& s = by_labels[key];
      const std::string where = absl::StrCat(f.type, " ", f.name, key);
      if (f.type == "histogram") {
        std::sort(s.buckets.begin(), s.buckets.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        if (s.buckets.empty() || !std::isinf(s.buckets.back().first)) {
          return LineError(s.first_line, absl::StrCat(where, " has no le=\"+Inf\" bucket"));
        }
        for (size_t i = 1; i < s.buckets.size(); ++i) {
          const auto& [prev_le, prev] = s.buckets[i - 1];
          const auto& [le, cur] = s.buckets[i];
          if (!(cur.first >= prev.first)) {
            return LineError(
                cur.second,
                absl::StrCat(where, " buckets are not cumulative: le=\"", FormatValue(le),
                             "\" has ", FormatValue(cur.first), ", less than le=\"",
                             FormatValue(prev_le), "\" (", FormatValue(prev.first), ")"));
          }
        }
      }
      if (!s.sum.has_value()) {
        return LineError(s.first_line, absl::StrCat(where, " has no ", f.name, "_sum"));
      }
      if (!s.count.has_value()) {
        return LineError(s.first_line, absl::StrCat(where, " has no ", f.name, "_count"));
      }
      if (f.type == "histogram" && s.count->first != s.buckets.back().second.first) {
        return LineError(
            s.count->second,
            absl::StrCat(where, ": ", f.name, "_count is ", FormatValue(s.count->first),
                         " but the +Inf bucket is ", FormatValue(s.buckets.back().second.first)));
      }
    }
    return absl::OkStatus();
  }

  const ParseOptions options_;
  std::vector<Family> done_;
  std::optional<Pending> current_;
  std::map<std::string, Seen> seen_;          // every family started so far, by name
  std::map<std::string, std::string> owner_;  // x_bucket/x_sum/x_count -> histogram/summary x
  std::map<std::string, int> series_;         // name{labels} -> line
};

}  // namespace

absl::StatusOr<std::vector<Family>> ParseExposition(absl::string_view text,
                                                    const ParseOptions& options) {
  return Parser(options).Parse(text);
}

const Family* FindFamily(const std::vector<Family>& families, absl::string_view name) {
  for (const Family& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::optional<double> FindValue(const std::vector<Family>& families, absl::string_view sample_name,
                                const std::map<std::string, std::string>& labels) {
  for (const Family& f : families) {
    for (const Sample& s : f.samples) {
      if (s.name == sample_name && s.labels == labels) return s.value;
    }
  }
  return std::nullopt;
}

}  // namespace forge::prometheus
