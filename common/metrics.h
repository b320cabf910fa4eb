// Prometheus metrics: counters, gauges and histograms in labelled families, a Registry that owns
// them, and Render() in the text exposition format 0.0.4 (what GET /metrics serves).
//
//   metrics::Registry registry;
//   metrics::CounterFamily* rpcs = registry.AddCounter(
//       "forge_rpcs_total", "RPCs handled, by method and status code.", {"method", "code"});
//   metrics::Counter* ok = rpcs->With({"SubmitJob", "OK"});  // look up once, keep the pointer
//   ok->Inc();                                               // hot path: one atomic add
//   std::string body = registry.Render();                    // serve with kContentType
//
// Programming errors never crash the process and never make /metrics invalid: an invalid or
// duplicate registration, or a With() with the wrong number of label values, is logged once
// (FORGE_LOG(ERROR)), recorded in Registry::problems(), and answered with a working object that
// is simply not exported. Tests assert problems() is empty.
#ifndef FORGE_COMMON_METRICS_H_
#define FORGE_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace forge::metrics {

inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Label (name, value) pairs of one sample written by a collector.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A value that only goes up. Thread-safe and lock-free.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // REQUIRES: v >= 0. A negative or NaN increment is dropped (a counter never goes down).
  void Inc(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down. Thread-safe and lock-free.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);  // v may be negative
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

struct HistogramSnapshot {
  std::vector<double> upper_bounds;         // finite, strictly increasing; +Inf is implicit
  std::vector<uint64_t> cumulative_counts;  // one per bound, then the +Inf bucket (== count)
  double sum = 0;
  uint64_t count = 0;
};

// Observations counted into buckets by upper bound (inclusive: v <= le). Thread-safe and
// lock-free: Observe() is one atomic increment plus a CAS loop on the sum.
class Histogram {
 public:
  // REQUIRES: `upper_bounds` finite and strictly increasing (HistogramFamily checks this).
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // NaN lands in the +Inf bucket and makes the sum NaN, as in the Go client.
  void Observe(double v);
  // `count` is the sum of the bucket counts read, so it always equals the +Inf bucket even while
  // other threads observe; `sum` may lag or lead them by the observations in flight.
  HistogramSnapshot Snapshot() const;

 private:
  const std::vector<double> upper_bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative; +1 Inf
  std::atomic<double> sum_{0};
};

namespace internal {

// What the Registry keeps of each family. Constant after construction except the children.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends HELP, TYPE and every child's samples, children sorted by label values.
  virtual void AppendText(std::string* out) const = 0;
  // The programming errors seen in calls on this family (wrong arity in With()), if any.
  virtual std::vector<std::string> Problems() const = 0;

 protected:
  FamilyBase(std::string name, std::string help, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}
  // `{a="x",b="y"` plus `extra` (already formatted, e.g. `le="1"`) and `}`, or "" when empty.
  std::string LabelText(const std::vector<std::string>& values, absl::string_view extra) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
};

// The children of a family, one per distinct tuple of label values. Thread-safe.
template <typename T>
class Family : public FamilyBase {
 public:
  // The child for `label_values` (one per label name, in registration order), created on first
  // use; the pointer stays valid as long as the family (that is, its Registry). Takes a lock:
  // look children up once, outside hot loops. A wrong number of values is a programming error:
  // logged once per family and answered with this family's dummy child, which is never exported.
  T* With(const std::vector<std::string>& label_values);
  std::vector<std::string> Problems() const override;

 protected:
  using FamilyBase::FamilyBase;
  virtual std::unique_ptr<T> NewChild() const = 0;
  // Calls `visit` for every child in label-value order, holding the family's lock.
  void ForEachChild(
      const std::function<void(const std::vector<std::string>&, const T&)>& visit) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<T> dummy_ ABSL_GUARDED_BY(mu_);   // for calls with the wrong arity
  std::string arity_problem_ ABSL_GUARDED_BY(mu_);  // the first wrong-arity call, described
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

}  // namespace internal

// Families are created by Registry::Add*(); a family without labels exports its only child
// (With({})) from the start, at 0.
class CounterFamily final : public internal::Family<Counter> {
 public:
  void AppendText(std::string* out) const override;

 private:
  friend class Registry;
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);
  std::unique_ptr<Counter> NewChild() const override { return std::make_unique<Counter>(); }
};

class GaugeFamily final : public internal::Family<Gauge> {
 public:
  void AppendText(std::string* out) const override;

 private:
  friend class Registry;
  GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names);
  std::unique_ptr<Gauge> NewChild() const override { return std::make_unique<Gauge>(); }
};

class HistogramFamily final : public internal::Family<Histogram> {
 public:
  void AppendText(std::string* out) const override;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  friend class Registry;
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> upper_bounds);
  std::unique_ptr<Histogram> NewChild() const override {
    return std::make_unique<Histogram>(upper_bounds_);
  }
  const std::vector<double> upper_bounds_;
};

// Families computed at scrape time, written by collectors (Registry::AddCollector). One writer
// per Render(); not thread-safe. Each family is checked before it is kept, so a collector bug
// costs that family (or that sample), never the validity of the whole page:
//   * an invalid name, a name already written, an empty help, an invalid, reserved ("__") or
//     repeated label name: the family is skipped;
//   * a sample with the same labels as an earlier one (in any order), or a negative or NaN
//     counter value: that sample is skipped.
// Samples are written sorted by labels (each sample's labels sorted by name). A family with no
// samples is still written (HELP and TYPE only), which Prometheus accepts.
class ExpositionWriter {
 public:
  ExpositionWriter(const ExpositionWriter&) = delete;
  ExpositionWriter& operator=(const ExpositionWriter&) = delete;

  void Gauge(absl::string_view name, absl::string_view help,
             std::vector<std::pair<Labels, double>> samples);
  // REQUIRES: `name` ends in "_total"; values >= 0.
  void CounterValue(absl::string_view name, absl::string_view help,
                    std::vector<std::pair<Labels, double>> samples);

 private:
  friend class Registry;
  ExpositionWriter() = default;
  void Write(absl::string_view type, absl::string_view name, absl::string_view help,
             std::vector<std::pair<Labels, double>> samples);

  std::map<std::string, std::string> families_;  // name -> HELP, TYPE and sample lines
  std::vector<std::string> problems_;
};

// Owns families and collectors and renders them. Thread-safe (mu_ guards the maps; each family
// guards its children); Render() may run concurrently with updates and with other Render()s.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a family and returns it; it lives as long as the Registry. REQUIRES:
  //   * `name` matches [a-zA-Z_:][a-zA-Z0-9_:]*; counters end in "_total", others do not;
  //   * `name` is not taken: not registered before, and not one of the sample names of a
  //     registered histogram h (h_bucket, h_sum, h_count), nor, for a histogram, a registered
  //     family one of whose sample names it would take;
  //   * `help` is not empty (it is escaped on output, any text is fine);
  //   * label names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__", are distinct, and a
  //     histogram has no "le";
  //   * histogram `buckets` are finite and strictly increasing; a last +Inf is dropped (+Inf
  //     is always implicit). Empty means a single +Inf bucket.
  // A violation is logged, recorded in problems(), and the family returned is not exported.
  CounterFamily* AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names) ABSL_LOCKS_EXCLUDED(mu_);
  GaugeFamily* AddGauge(std::string name, std::string help, std::vector<std::string> label_names)
      ABSL_LOCKS_EXCLUDED(mu_);
  HistogramFamily* AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names, std::vector<double> buckets)
      ABSL_LOCKS_EXCLUDED(mu_);

  // `collect` runs on every Render(), without the registry's lock held (so it may read other
  // metrics and take its own locks), possibly from several threads at once: it must be
  // thread-safe and must not call Render(). A family it writes whose name, or one of whose sample
  // names, is already registered or written by an earlier collector is skipped, logged and recorded
  // in problems().
  void AddCollector(std::function<void(ExpositionWriter&)> collect) ABSL_LOCKS_EXCLUDED(mu_);

  // The exposition (text format 0.0.4, serve as kContentType): every exported family and
  // every collector's families, sorted by family name.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

  // Every distinct programming error seen so far (registrations, arity, collectors), sorted.
  std::vector<std::string> problems() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Validates a registration; on success claims its names and returns true.
  bool Claim(absl::string_view type, const std::string& name, const std::string& help,
             const std::vector<std::string>& label_names, const std::vector<double>* buckets)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  template <typename F>
  F* Keep(std::unique_ptr<F> family, bool exported) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Report(const std::string& problem) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>> exported_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<internal::FamilyBase>> detached_ ABSL_GUARDED_BY(mu_);
  // Every sample name of the exported families (a histogram h: h, h_bucket, h_sum, h_count)
  // -> its family's name.
  std::map<std::string, std::string> claimed_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<const std::function<void(ExpositionWriter&)>>> collectors_
      ABSL_GUARDED_BY(mu_);
  mutable std::set<std::string> problems_ ABSL_GUARDED_BY(mu_);
};

// `count` bounds start, start*factor, ..., start*factor^(count-1).
// REQUIRES: start > 0, factor > 1, count >= 1; otherwise returns {} (a single +Inf bucket).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Seconds, for RPC and step latencies: 13 buckets, 1 ms .. 2.5 s in a 1-2.5-5 progression,
// then 10 s and 60 s.
std::vector<double> LatencyBuckets();
// Bytes, for payloads and checkpoints: 1 KiB .. 64 GiB in powers of 4 (14 buckets).
std::vector<double> ByteBuckets();

}  // namespace forge::metrics

#endif  // FORGE_COMMON_METRICS_H_
