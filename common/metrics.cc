#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/prometheus_text.h"

namespace forge::metrics {
namespace {

using prometheus::EscapeHelp;
using prometheus::EscapeLabelValue;
using prometheus::FormatValue;

void AppendHeader(absl::string_view name, absl::string_view help, absl::string_view type,
                  std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type, "\n");
}

void AppendSample(absl::string_view name, absl::string_view labels, double value,
                  std::string* out) {
  absl::StrAppend(out, name, labels, " ", FormatValue(value), "\n");
}

// Empty when `label_name` is fine for a family of `type`, else what is wrong with it.
std::string LabelNameProblem(absl::string_view type, absl::string_view label_name) {
  if (!prometheus::IsValidLabelName(label_name)) {
    return absl::StrCat("label name \"", label_name, "\" must match [a-zA-Z_][a-zA-Z0-9_]*");
  }
  if (absl::StartsWith(label_name, "__")) {
    return absl::StrCat("label name ", label_name, " starts with \"__\" (reserved)");
  }
  if (type == "histogram" && label_name == "le") {
    return "a histogram cannot have a label named le (it names the bucket)";
  }
  return "";
}

// Empty when `name` is a fine family name for `type`, else what is wrong with it.
std::string NameProblem(absl::string_view type, absl::string_view name) {
  if (!prometheus::IsValidMetricName(name)) {
    return absl::StrCat("name \"", name, "\" must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  const bool total = absl::EndsWith(name, "_total");
  if (type == "counter" && !total) return absl::StrCat("counter ", name, " must end in _total");
  if (type != "counter" && total) {
    return absl::StrCat(type, " ", name, " must not end in _total (counters only)");
  }
  return "";
}

}  // namespace

// ---- Counter, Gauge, Histogram ----

void Counter::Inc(double v) {
  if (!(v >= 0)) return;  // also drops NaN
  value_.fetch_add(v, std::memory_order_relaxed);
}

void Gauge::Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1)) {}

void Histogram::Observe(double v) {
  const size_t bucket =
      std::isnan(v)
          ? upper_bounds_.size()
          : std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) - upper_bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot s;
  s.upper_bounds = upper_bounds_;
  s.cumulative_counts.reserve(upper_bounds_.size() + 1);
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    s.count += counts_[i].load(std::memory_order_relaxed);
    s.cumulative_counts.push_back(s.count);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---- Families ----

namespace internal {

std::string FamilyBase::LabelText(const std::vector<std::string>& values,
                                  absl::string_view extra) const {
  if (values.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    absl::StrAppend(&out, i > 0 ? "," : "", label_names_[i], "=\"", EscapeLabelValue(values[i]),
                    "\"");
  }
  absl::StrAppend(&out, !values.empty() && !extra.empty() ? "," : "", extra, "}");
  return out;
}

template <typename T>
T* Family<T>::With(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names().size()) {
    absl::MutexLock lock(&mu_);
    if (dummy_ == nullptr) {
      dummy_ = NewChild();
      arity_problem_ = absl::StrCat(name(), ": With() got ", label_values.size(),
                                    " label values for ", label_names().size(), " labels (",
                                    absl::StrJoin(label_names(), ","), "); not exported");
      FORGE_LOG(ERROR) << "metrics: " << arity_problem_;
    }
    return dummy_.get();
  }
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = children_.find(label_values);
    if (it != children_.end()) return it->second.get();
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<T>& child = children_[label_values];
  if (child == nullptr) child = NewChild();
  return child.get();
}

template <typename T>
std::vector<std::string> Family<T>::Problems() const {
  absl::MutexLock lock(&mu_);
  if (arity_problem_.empty()) return {};
  return {arity_problem_};
}

template <typename T>
void Family<T>::ForEachChild(
    const std::function<void(const std::vector<std::string>&, const T&)>& visit) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [values, child] : children_) visit(values, *child);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

}  // namespace internal

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : Family(std::move(name), std::move(help), std::move(label_names)) {
  if (this->label_names().empty()) With({});
}

void CounterFamily::AppendText(std::string* out) const {
  AppendHeader(name(), help(), "counter", out);
  ForEachChild([&](const std::vector<std::string>& values, const Counter& c) {
    AppendSample(name(), LabelText(values, ""), c.value(), out);
  });
}

GaugeFamily::GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : Family(std::move(name), std::move(help), std::move(label_names)) {
  if (this->label_names().empty()) With({});
}

void GaugeFamily::AppendText(std::string* out) const {
  AppendHeader(name(), help(), "gauge", out);
  ForEachChild([&](const std::vector<std::string>& values, const Gauge& g) {
    AppendSample(name(), LabelText(values, ""), g.value(), out);
  });
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names,
                                 std::vector<double> upper_bounds)
    : Family(std::move(name), std::move(help), std::move(label_names)),
      upper_bounds_(std::move(upper_bounds)) {
  if (this->label_names().empty()) With({});
}

void HistogramFamily::AppendText(std::string* out) const {
  AppendHeader(name(), help(), "histogram", out);
  const std::string bucket = name() + "_bucket";
  ForEachChild([&](const std::vector<std::string>& values, const Histogram& h) {
    const HistogramSnapshot s = h.Snapshot();
    for (size_t i = 0; i <= s.upper_bounds.size(); ++i) {
      const std::string le =
          i < s.upper_bounds.size() ? FormatValue(s.upper_bounds[i]) : std::string("+Inf");
      AppendSample(bucket, LabelText(values, absl::StrCat("le=\"", le, "\"")),
                   static_cast<double>(s.cumulative_counts[i]), out);
    }
    const std::string labels = LabelText(values, "");
    AppendSample(name() + "_sum", labels, s.sum, out);
    AppendSample(name() + "_count", labels, static_cast<double>(s.count), out);
  });
}

// ---- ExpositionWriter ----

void ExpositionWriter::Gauge(absl::string_view name, absl::string_view help,
                             std::vector<std::pair<Labels, double>> samples) {
  Write("gauge", name, help, std::move(samples));
}

void ExpositionWriter::CounterValue(absl::string_view name, absl::string_view help,
                                    std::vector<std::pair<Labels, double>> samples) {
  Write("counter", name, help, std::move(samples));
}

void ExpositionWriter::Write(absl::string_view type, absl::string_view name, absl::string_view help,
                             std::vector<std::pair<Labels, double>> samples) {
  const auto problem = [&](absl::string_view what) {
    problems_.push_back(absl::StrCat("collector ", type, " ", name, ": ", what));
  };
  if (std::string p = NameProblem(type, name); !p.empty()) return problem(p + "; skipped");
  if (families_.count(std::string(name)) > 0) return problem("written twice; second skipped");
  if (help.empty()) return problem("empty help; skipped");
  for (auto& [labels, value] : samples) {
    std::sort(labels.begin(), labels.end());
    for (size_t i = 0; i < labels.size(); ++i) {
      if (std::string p = LabelNameProblem(type, labels[i].first); !p.empty()) {
        return problem(p + "; family skipped");
      }
      if (i > 0 && labels[i].first == labels[i - 1].first) {
        return problem(absl::StrCat("label ", labels[i].first, " repeated; family skipped"));
      }
    }
  }
  std::stable_sort(samples.begin(), samples.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string text;
  AppendHeader(name, help, type, &text);
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& [labels, value] = samples[i];
    std::string label_text;
    for (const auto& [k, v] : labels) {
      absl::StrAppend(&label_text, label_text.empty() ? "{" : ",", k, "=\"", EscapeLabelValue(v),
                      "\"");
    }
    if (!label_text.empty()) label_text += "}";
    if (i > 0 && labels == samples[i - 1].first) {
      problem(absl::StrCat("duplicate series ", name, label_text, "; later one skipped"));
      continue;
    }
    if (type == "counter" && !(value >= 0)) {
      problem(absl::StrCat("counter ", name, label_text, " = ", FormatValue(value),
                           " is not >= 0; skipped"));
      continue;
    }
    AppendSample(name, label_text, value, &text);
  }
  families_.emplace(std::string(name), std::move(text));
}

// ---- Registry ----

void Registry::Report(const std::string& problem) const {
  if (problems_.insert(problem).second) FORGE_LOG(ERROR) << "metrics: " << problem;
}

bool Registry::Claim(absl::string_view type, const std::string& name, const std::string& help,
                     const std::vector<std::string>& label_names,
                     const std::vector<double>* buckets) {
  std::vector<std::string> problems;
  if (std::string p = NameProblem(type, name); !p.empty()) problems.push_back(p);
  std::vector<std::string> names = {name};
  if (type == "histogram") {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) names.push_back(name + suffix);
  }
  // `claimed_` holds every exported sample name, so this also catches a gauge "h_sum" beside a
  // histogram "h", in either order.
  for (const std::string& n : names) {
    auto it = claimed_.find(n);
    if (it == claimed_.end()) continue;
    if (n == name && it->second == name) {
      problems.push_back(absl::StrCat(name, " is already registered"));
    } else {
      problems.push_back(absl::StrCat(n == name ? "" : absl::StrCat("it would write ", n, "; "), n,
                                      " is taken by family ", it->second));
    }
  }
  if (help.empty()) problems.push_back("help must not be empty");
  for (size_t i = 0; i < label_names.size(); ++i) {
    if (std::string p = LabelNameProblem(type, label_names[i]); !p.empty()) problems.push_back(p);
    for (size_t j = 0; j < i; ++j) {
      if (label_names[j] == label_names[i]) {
        problems.push_back(absl::StrCat("label ", label_names[i], " appears twice"));
      }
    }
  }
  if (buckets != nullptr) {
    for (size_t i = 0; i < buckets->size(); ++i) {
      const double b = (*buckets)[i];
      if (!std::isfinite(b) || (i > 0 && !(b > (*buckets)[i - 1]))) {
        problems.push_back(absl::StrCat("buckets must be finite and strictly increasing (",
                                        FormatValue(b), " at index ", i, ")"));
        break;
      }
    }
  }
  for (const std::string& p : problems) {
    Report(absl::StrCat("register ", type, " ", name, ": ", p, "; not exported"));
  }
  if (!problems.empty()) return false;
  for (const std::string& n : names) claimed_.emplace(n, name);
  return true;
}

template <typename F>
F* Registry::Keep(std::unique_ptr<F> family, bool exported) {
  F* raw = family.get();
  if (exported) {
    exported_.emplace(raw->name(), std::move(family));
  } else {
    detached_.push_back(std::move(family));
  }
  return raw;
}

CounterFamily* Registry::AddCounter(std::string name, std::string help,
                                    std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  const bool ok = Claim("counter", name, help, label_names, nullptr);
  return Keep(std::unique_ptr<CounterFamily>(
                  new CounterFamily(std::move(name), std::move(help), std::move(label_names))),
              ok);
}

GaugeFamily* Registry::AddGauge(std::string name, std::string help,
                                std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  const bool ok = Claim("gauge", name, help, label_names, nullptr);
  return Keep(std::unique_ptr<GaugeFamily>(
                  new GaugeFamily(std::move(name), std::move(help), std::move(label_names))),
              ok);
}

HistogramFamily* Registry::AddHistogram(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> buckets) {
  if (!buckets.empty() && buckets.back() == std::numeric_limits<double>::infinity()) {
    buckets.pop_back();
  }
  absl::MutexLock lock(&mu_);
  const bool ok = Claim("histogram", name, help, label_names, &buckets);
  if (!ok) buckets.clear();  // a detached family still needs valid bounds
  return Keep(std::unique_ptr<HistogramFamily>(new HistogramFamily(
                  std::move(name), std::move(help), std::move(label_names), std::move(buckets))),
              ok);
}

void Registry::AddCollector(std::function<void(ExpositionWriter&)> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(
      std::make_shared<const std::function<void(ExpositionWriter&)>>(std::move(collect)));
}

std::string Registry::Render() const {
  std::vector<const internal::FamilyBase*> families;
  std::map<std::string, std::string> claimed;
  std::vector<std::shared_ptr<const std::function<void(ExpositionWriter&)>>> collectors;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, family] : exported_) families.push_back(family.get());
    claimed = claimed_;
    collectors = collectors_;
  }
  // Collectors run without mu_: they may be slow or take their own locks.
  ExpositionWriter writer;
  for (const auto& collect : collectors) (*collect)(writer);

  std::map<std::string, std::string> texts;  // family name -> text, rendered in name order
  for (const internal::FamilyBase* family : families) {
    family->AppendText(&texts[family->name()]);
  }
  std::vector<std::string> problems = std::move(writer.problems_);
  for (auto& [name, text] : writer.families_) {
    // Collector families are gauges and counters, whose only sample name is their family name;
    // `claimed` holds every registered sample name (a histogram h's h_bucket, h_sum, h_count).
    if (auto it = claimed.find(name); it != claimed.end()) {
      problems.push_back(absl::StrCat("collector family ", name, ": ", name,
                                      " is taken by registered family ", it->second, "; skipped"));
      continue;
    }
    texts.emplace(name, std::move(text));
  }
  if (!problems.empty()) {
    absl::MutexLock lock(&mu_);
    for (const std::string& p : problems) Report(p);
  }
  std::string out;
  for (const auto& [name, text] : texts) out += text;
  return out;
}

std::vector<std::string> Registry::problems() const {
  std::set<std::string> all;
  absl::MutexLock lock(&mu_);
  all.insert(problems_.begin(), problems_.end());
  for (const auto& [name, family] : exported_) {
    for (std::string& p : family->Problems()) all.insert(std::move(p));
  }
  for (const auto& family : detached_) {
    for (std::string& p : family->Problems()) all.insert(std::move(p));
  }
  return {all.begin(), all.end()};
}

// ---- Bucket helpers ----

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1 || std::isinf(start) || std::isinf(factor)) {
    FORGE_LOG(ERROR) << "metrics: ExponentialBuckets(" << start << ", " << factor << ", " << count
                     << ") needs start > 0, factor > 1, count >= 1; using no buckets";
    return {};
  }
  std::vector<double> buckets;
  buckets.reserve(count);
  double b = start;
  for (int i = 0; i < count && std::isfinite(b); ++i, b *= factor) buckets.push_back(b);
  return buckets;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60};
}

std::vector<double> ByteBuckets() { return ExponentialBuckets(1024, 4, 14); }

}  // namespace forge::metrics
