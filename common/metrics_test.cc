#include "common/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/prometheus_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::metrics {
namespace {

using ::forge::prometheus::FindFamily;
using ::forge::prometheus::FindValue;
using ::forge::prometheus::ParseExposition;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Parses `text` strictly (conventions on); fails the test and aborts it on error.
std::vector<prometheus::Family> MustParse(const std::string& text) {
  absl::StatusOr<std::vector<prometheus::Family>> parsed = ParseExposition(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  if (!parsed.ok()) return {};
  return *std::move(parsed);
}

std::vector<std::string> FamilyNames(const std::vector<prometheus::Family>& families) {
  std::vector<std::string> names;
  for (const auto& f : families) names.push_back(f.name);
  return names;
}

TEST(CounterTest, IncrementsAndNeverDecreases) {
  Counter c;
  EXPECT_EQ(c.value(), 0);
  c.Inc();
  c.Inc(2.5);
  EXPECT_EQ(c.value(), 3.5);
  c.Inc(-1);  // dropped
  c.Inc(std::nan(""));
  EXPECT_EQ(c.value(), 3.5);
}

TEST(GaugeTest, SetAndAdd) {
  Gauge g;
  g.Set(10);
  g.Add(-2.5);
  EXPECT_EQ(g.value(), 7.5);
  g.Set(-1);
  EXPECT_EQ(g.value(), -1);
}

TEST(HistogramTest, BucketsAreInclusiveAndCumulative) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 100.0}) h.Observe(v);
  h.Observe(std::nan(""));  // counted in +Inf only, as the Go client does
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_THAT(s.upper_bounds, ElementsAre(1, 2, 5));
  EXPECT_THAT(s.cumulative_counts, ElementsAre(2, 4, 5, 7));
  EXPECT_EQ(s.count, 7u);
  EXPECT_TRUE(std::isnan(s.sum));

  Histogram finite({1});
  finite.Observe(0.25);
  finite.Observe(3);
  EXPECT_EQ(finite.Snapshot().sum, 3.25);
}

TEST(ConcurrencyTest, IncrementsFromManyThreadsSumExactly) {
  Registry registry;
  CounterFamily* family = registry.AddCounter("hits_total", "Hits.", {"shard"});
  Gauge gauge;
  Histogram histogram({0.5});
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50000;
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter* c = family->With({"0"});  // all threads race to create the same child
      seen[t] = c;
      for (int i = 0; i < kPerThread; ++i) {
        c->Inc();
        gauge.Add(t % 2 == 0 ? 2 : -1);
        histogram.Observe(i % 2 == 0 ? 0.25 : 1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (Counter* c : seen) EXPECT_EQ(c, seen[0]);
  EXPECT_EQ(seen[0]->value(), kThreads * kPerThread);
  EXPECT_EQ(gauge.value(), (kThreads / 2) * kPerThread * (2 - 1));
  const HistogramSnapshot s = histogram.Snapshot();
  EXPECT_THAT(s.cumulative_counts, ElementsAre(kThreads * kPerThread / 2, kThreads * kPerThread));
  EXPECT_EQ(s.sum, kThreads * (kPerThread / 2) * 1.25);
}

TEST(ConcurrencyTest, RenderWhileUpdatingIsAlwaysValid) {
  Registry registry;
  HistogramFamily* latency =
      registry.AddHistogram("op_seconds", "Op latency.", {"op"}, LatencyBuckets());
  CounterFamily* ops = registry.AddCounter("ops_total", "Ops.", {"op"});
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string op = absl::StrCat("op", (i + t) % 5);
        latency->With({op})->Observe(0.001 * (i % 100));
        ops->With({op})->Inc();
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    // Histogram invariants (cumulative, _count == +Inf bucket) hold under concurrent updates.
    std::vector<prometheus::Family> families = MustParse(registry.Render());
    ASSERT_THAT(families, SizeIs(2));
  }
  stop = true;
  for (std::thread& t : writers) t.join();
}

TEST(RenderTest, ExactText) {
  Registry registry;
  registry.AddCounter("requests_total", "Requests.", {"method", "code"})
      ->With({"Get", "OK"})
      ->Inc(3);
  registry.AddGauge("queue_depth", "Jobs queued.", {})->With({})->Set(2);
  HistogramFamily* h = registry.AddHistogram("step_seconds", "Step time.", {"rank"}, {0.5, 1});
  h->With({"0"})->Observe(0.25);
  h->With({"0"})->Observe(0.75);
  h->With({"0"})->Observe(3);
  EXPECT_EQ(registry.Render(),
            "# HELP queue_depth Jobs queued.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 2\n"
            "# HELP requests_total Requests.\n"
            "# TYPE requests_total counter\n"
            "requests_total{method=\"Get\",code=\"OK\"} 3\n"
            "# HELP step_seconds Step time.\n"
            "# TYPE step_seconds histogram\n"
            "step_seconds_bucket{rank=\"0\",le=\"0.5\"} 1\n"
            "step_seconds_bucket{rank=\"0\",le=\"1\"} 2\n"
            "step_seconds_bucket{rank=\"0\",le=\"+Inf\"} 3\n"
            "step_seconds_sum{rank=\"0\"} 4\n"
            "step_seconds_count{rank=\"0\"} 3\n");
  EXPECT_THAT(registry.problems(), IsEmpty());
}

TEST(RenderTest, EscapesHelpAndLabelValues) {
  Registry registry;
  registry.AddGauge("file_bytes", "Size of a file.\nPath is \\-separated \"as is\".", {"path"})
      ->With({"C:\\tmp\\\"x\"\nnext"})
      ->Set(1);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("# HELP file_bytes Size of a file.\\nPath is \\\\-separated "
                              "\"as is\".\n"));
  EXPECT_THAT(text, HasSubstr("file_bytes{path=\"C:\\\\tmp\\\\\\\"x\\\"\\nnext\"} 1\n"));
  std::vector<prometheus::Family> families = MustParse(text);
  EXPECT_EQ(FindValue(families, "file_bytes", {{"path", "C:\\tmp\\\"x\"\nnext"}}), 1);
  EXPECT_EQ(FindFamily(families, "file_bytes")->help,
            "Size of a file.\nPath is \\-separated \"as is\".");
}

TEST(RenderTest, SpecialValues) {
  Registry registry;
  GaugeFamily* g = registry.AddGauge("temperature_celsius", "Temperature.", {"probe"});
  g->With({"hot"})->Set(kInf);
  g->With({"cold"})->Set(-kInf);
  g->With({"broken"})->Set(std::nan(""));
  g->With({"tiny"})->Set(1e-300);
  g->With({"third"})->Set(1.0 / 3);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("temperature_celsius{probe=\"hot\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("temperature_celsius{probe=\"cold\"} -Inf\n"));
  EXPECT_THAT(text, HasSubstr("temperature_celsius{probe=\"broken\"} NaN\n"));
  EXPECT_THAT(text, HasSubstr("temperature_celsius{probe=\"tiny\"} 1e-300\n"));
  std::vector<prometheus::Family> families = MustParse(text);
  EXPECT_EQ(FindValue(families, "temperature_celsius", {{"probe", "third"}}), 1.0 / 3);
  EXPECT_TRUE(std::isnan(*FindValue(families, "temperature_celsius", {{"probe", "broken"}})));
}

TEST(RenderTest, FamiliesSortedByNameAndChildrenByLabels) {
  Registry registry;
  registry.AddGauge("zeta", "Z.", {});
  registry.AddGauge("alpha", "A.", {"k"});
  GaugeFamily* mid = registry.AddGauge("mid", "M.", {"k"});
  mid->With({"b"})->Set(2);
  mid->With({"a"})->Set(1);
  mid->With({"c"})->Set(3);
  registry.AddCollector([](ExpositionWriter& w) { w.Gauge("beta", "B.", {{{}, 1}}); });
  std::vector<prometheus::Family> families = MustParse(registry.Render());
  EXPECT_THAT(FamilyNames(families), ElementsAre("alpha", "beta", "mid", "zeta"));
  // A labelled family with no children yet has HELP and TYPE only; an unlabelled one is 0.
  EXPECT_THAT(families[0].samples, IsEmpty());
  EXPECT_EQ(FindValue(families, "zeta"), 0);
  std::vector<std::string> order;
  for (const auto& s : families[2].samples) order.push_back(s.labels.at("k"));
  EXPECT_THAT(order, ElementsAre("a", "b", "c"));
}

TEST(RenderTest, HistogramRoundTrip) {
  Registry registry;
  HistogramFamily* h = registry.AddHistogram("payload_bytes", "Payload size.", {"rpc"},
                                             {1024, 4096, kInf});  // a last +Inf is dropped
  EXPECT_THAT(h->upper_bounds(), ElementsAre(1024, 4096));
  for (double v : {100.0, 1024.0, 2000.0, 5000.0, 1e9}) h->With({"Push"})->Observe(v);
  std::vector<prometheus::Family> families = MustParse(registry.Render());
  const std::map<std::string, std::string> push = {{"rpc", "Push"}};
  const auto bucket = [&](const char* le) {
    return FindValue(families, "payload_bytes_bucket", {{"rpc", "Push"}, {"le", le}});
  };
  EXPECT_EQ(bucket("1024"), 2);
  EXPECT_EQ(bucket("4096"), 3);
  EXPECT_EQ(bucket("+Inf"), 5);
  EXPECT_EQ(FindValue(families, "payload_bytes_count", push), 5);
  EXPECT_EQ(FindValue(families, "payload_bytes_sum", push), 100 + 1024 + 2000 + 5000 + 1e9);
}

TEST(CollectorTest, MergedSortedAndDeduplicated) {
  Registry registry;
  registry.AddCounter("b_total", "Registered.", {});
  registry.AddCollector([](ExpositionWriter& w) {
    w.Gauge("jobs", "Jobs by state.",
            {{{{"state", "running"}}, 2}, {{{"state", "queued"}}, 5}, {{{"state", "failed"}}, 0}});
    w.CounterValue("a_total", "Collected counter.",
                   {{{{"z", "1"}, {"a", "2"}}, 7},
                    {{{"a", "2"}, {"z", "1"}}, 8},     // same series, other order: dropped
                    {{{"a", "3"}, {"z", "1"}}, -1}});  // negative counter: dropped
  });
  const std::string text = registry.Render();
  std::vector<prometheus::Family> families = MustParse(text);
  EXPECT_THAT(FamilyNames(families), ElementsAre("a_total", "b_total", "jobs"));
  EXPECT_EQ(FindFamily(families, "a_total")->type, "counter");
  EXPECT_THAT(FindFamily(families, "a_total")->samples, SizeIs(1));
  EXPECT_EQ(FindValue(families, "a_total", {{"a", "2"}, {"z", "1"}}), 7);
  EXPECT_THAT(text, HasSubstr("a_total{a=\"2\",z=\"1\"} 7\n"));  // labels sorted by name
  EXPECT_THAT(text, HasSubstr("jobs{state=\"failed\"} 0\njobs{state=\"queued\"} 5\n"
                              "jobs{state=\"running\"} 2\n"));
  EXPECT_THAT(registry.problems(),
              ElementsAre(HasSubstr("collector counter a_total: counter a_total{a=\"3\",z=\"1\"} "
                                    "= -1 is not >= 0"),
                          HasSubstr("collector counter a_total: duplicate series "
                                    "a_total{a=\"2\",z=\"1\"}")));
}

TEST(CollectorTest, ClashesAndInvalidFamiliesAreSkipped) {
  Registry registry;
  registry.AddGauge("taken", "Registered.", {})->With({})->Set(1);
  registry.AddHistogram("rpc_seconds", "Registered histogram.", {}, {1});
  registry.AddCollector([](ExpositionWriter& w) {
    w.Gauge("taken", "Clash with a registered family.", {{{}, 2}});
    w.Gauge("rpc_seconds_count", "Clash with a histogram's sample name.", {{{}, 2}});
    w.Gauge("twice", "First.", {{{}, 1}});
    w.Gauge("twice", "Second.", {{{}, 2}});
    w.Gauge("bad-name", "Invalid name.", {{{}, 1}});
    w.Gauge("no_help", "", {{{}, 1}});
    w.Gauge("bad_label", "Invalid label.", {{{{"__x", "1"}}, 1}});
    w.CounterValue("events", "Counter without _total.", {{{}, 1}});
  });
  registry.AddCollector([](ExpositionWriter& w) { w.Gauge("twice", "Other collector.", {}); });
  const std::string text = registry.Render();
  std::vector<prometheus::Family> families = MustParse(text);
  EXPECT_THAT(FamilyNames(families), ElementsAre("rpc_seconds", "taken", "twice"));
  EXPECT_EQ(FindValue(families, "taken"), 1);
  EXPECT_EQ(FindValue(families, "twice"), 1);
  EXPECT_EQ(FindValue(families, "rpc_seconds_count"), 0);
  const std::vector<std::string> problems = registry.problems();
  EXPECT_THAT(problems, SizeIs(7)) << testing::PrintToString(problems);
  for (const char* name : {"family taken: taken is taken by registered family taken",
                           "family rpc_seconds_count: rpc_seconds_count is taken by registered "
                           "family rpc_seconds",
                           "twice:", "bad-name", "no_help", "bad_label", "events"}) {
    EXPECT_THAT(problems, testing::Contains(HasSubstr(name))) << name;
  }
  // Problems are remembered once, however many scrapes repeat them.
  registry.Render();
  EXPECT_THAT(registry.problems(), SizeIs(7));
}

TEST(RegistryTest, InvalidRegistrationsAreDetachedAndReported) {
  Registry registry;
  struct Case {
    std::function<void()> add;
    const char* problem;
  };
  const std::vector<Case> cases = {
      {[&] { registry.AddCounter("9bad_total", "H.", {}); }, "must match [a-zA-Z_:]"},
      {[&] { registry.AddCounter("requests", "H.", {}); }, "counter requests must end in _total"},
      {[&] { registry.AddGauge("bytes_total", "H.", {}); }, "must not end in _total"},
      {[&] { registry.AddGauge("g1", "", {}); }, "help must not be empty"},
      {[&] {
         registry.AddGauge("g2", "H.", {"a", "a"});
       },
       "label a appears twice"},
      {[&] { registry.AddGauge("g3", "H.", {"__a"}); }, "starts with \"__\""},
      {[&] { registry.AddGauge("g4", "H.", {"a-b"}); }, "label name \"a-b\" must match"},
      {[&] { registry.AddHistogram("h1", "H.", {"le"}, {1}); }, "cannot have a label named le"},
      {[&] {
         registry.AddHistogram("h2", "H.", {}, {2, 1});
       },
       "strictly increasing (1 at index 1)"},
      {[&] {
         registry.AddHistogram("h3", "H.", {}, {1, std::nan("")});
       },
       "strictly increasing"},
      {[&] {
         registry.AddGauge("dup", "First.", {});
         registry.AddGauge("dup", "Again.", {});
       },
       "gauge dup: dup is already registered"},
      {[&] {
         registry.AddHistogram("lat", "H.", {}, {1});
         registry.AddGauge("lat_sum", "H.", {});
       },
       "gauge lat_sum: lat_sum is taken by family lat"},
      {[&] {
         registry.AddGauge("x_count", "H.", {});
         registry.AddHistogram("x", "H.", {}, {1});
       },
       "histogram x: it would write x_count; x_count is taken by family x_count"},
  };
  size_t expected = 0;
  for (const Case& c : cases) {
    c.add();
    ++expected;
    const std::vector<std::string> problems = registry.problems();
    ASSERT_THAT(problems, SizeIs(expected)) << c.problem;
    EXPECT_THAT(problems, testing::Contains(HasSubstr(c.problem)));
  }
  // Only the valid first registrations are exported, and the output stays valid.
  std::vector<prometheus::Family> families = MustParse(registry.Render());
  EXPECT_THAT(FamilyNames(families), ElementsAre("dup", "lat", "x_count"));
  EXPECT_EQ(FindFamily(families, "dup")->help, "First.");
}

TEST(RegistryTest, DetachedFamiliesStillWork) {
  Registry registry;
  CounterFamily* bad = registry.AddCounter("bad", "No _total.", {"k"});
  Counter* c = bad->With({"v"});
  c->Inc(4);
  EXPECT_EQ(c->value(), 4);
  EXPECT_EQ(registry.Render(), "");
}

TEST(RegistryTest, WrongArityGetsADummyThatIsNotExported) {
  Registry registry;
  CounterFamily* rpcs = registry.AddCounter("rpcs_total", "RPCs.", {"method", "code"});
  Counter* dummy = rpcs->With({"Submit"});
  dummy->Inc();
  EXPECT_EQ(rpcs->With({"a", "b", "c"}), dummy);  // one dummy per family
  EXPECT_NE(rpcs->With({"Submit", "OK"}), dummy);
  std::vector<prometheus::Family> families = MustParse(registry.Render());
  EXPECT_THAT(FindFamily(families, "rpcs_total")->samples, SizeIs(1));
  EXPECT_EQ(FindValue(families, "rpcs_total", {{"method", "Submit"}, {"code", "OK"}}), 0);
  EXPECT_THAT(registry.problems(),
              ElementsAre("rpcs_total: With() got 1 label values for 2 labels (method,code); "
                          "not exported"));
}

TEST(BucketsTest, Helpers) {
  EXPECT_THAT(ExponentialBuckets(1, 2, 4), ElementsAre(1, 2, 4, 8));
  EXPECT_THAT(ExponentialBuckets(0, 2, 4), IsEmpty());
  EXPECT_THAT(ExponentialBuckets(1, 1, 4), IsEmpty());
  EXPECT_THAT(ExponentialBuckets(1, 2, 0), IsEmpty());
  const std::vector<double> latency = LatencyBuckets();
  EXPECT_EQ(latency.front(), 0.001);
  EXPECT_EQ(latency.back(), 60);
  EXPECT_THAT(latency, SizeIs(13));
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
  EXPECT_TRUE(std::adjacent_find(latency.begin(), latency.end()) == latency.end());
  const std::vector<double> bytes = ByteBuckets();
  EXPECT_THAT(bytes, SizeIs(14));
  EXPECT_EQ(bytes.front(), 1024);
  EXPECT_EQ(bytes[1], 4096);
  EXPECT_EQ(bytes.back(), 64.0 * 1024 * 1024 * 1024);
}

// A registry with every kind of family, labels that need escaping, and a collector.
void FillRich(Registry& registry) {
  CounterFamily* rpcs = registry.AddCounter("forge_rpcs_total", "RPCs handled, by method and code.",
                                            {"method", "code"});
  rpcs->With({"SubmitJob", "OK"})->Inc(12);
  rpcs->With({"SubmitJob", "INVALID_ARGUMENT"})->Inc(1);
  rpcs->With({"Heartbeat", "OK"})->Inc(4000);
  registry.AddGauge("forge_workers", "Workers connected.", {})->With({})->Set(3);
  GaugeFamily* gpu_free =
      registry.AddGauge("forge_gpu_memory_free_bytes",
                        "Free GPU memory.\nPer device \\ per worker.", {"worker", "device"});
  gpu_free->With({"w\"1\"", "0"})->Set(7.5e10);
  gpu_free->With({"w\\2\n", "1"})->Set(0);
  HistogramFamily* lat = registry.AddHistogram(
      "forge_rpc_duration_seconds", "RPC latency in seconds.", {"method"}, LatencyBuckets());
  for (double v : {0.0004, 0.003, 0.02, 0.2, 2.0, 120.0}) lat->With({"SubmitJob"})->Observe(v);
  HistogramFamily* bytes = registry.AddHistogram("forge_checkpoint_size_bytes",
                                                 "Checkpoint sizes in bytes.", {}, ByteBuckets());
  bytes->With({})->Observe(3e9);
  registry.AddCollector([](ExpositionWriter& w) {
    w.Gauge("forge_jobs", "Jobs by state.",
            {{{{"state", "RUNNING"}}, 2}, {{{"state", "QUEUED"}}, 1}});
    w.CounterValue("forge_steps_total", "Training steps run.", {{{{"job", "j-1"}}, 1500}});
    w.Gauge("forge_uptime_seconds", "Seconds since start.", {});
  });
}

TEST(RenderTest, RichRegistryRoundTrips) {
  Registry registry;
  FillRich(registry);
  std::vector<prometheus::Family> families = MustParse(registry.Render());
  EXPECT_THAT(registry.problems(), IsEmpty());
  EXPECT_THAT(FamilyNames(families),
              ElementsAre("forge_checkpoint_size_bytes", "forge_gpu_memory_free_bytes",
                          "forge_jobs", "forge_rpc_duration_seconds", "forge_rpcs_total",
                          "forge_steps_total", "forge_uptime_seconds", "forge_workers"));
  EXPECT_EQ(FindValue(families, "forge_rpcs_total", {{"method", "Heartbeat"}, {"code", "OK"}}),
            4000);
  EXPECT_EQ(
      FindValue(families, "forge_gpu_memory_free_bytes", {{"worker", "w\"1\""}, {"device", "0"}}),
      7.5e10);
  EXPECT_EQ(
      FindValue(families, "forge_gpu_memory_free_bytes", {{"worker", "w\\2\n"}, {"device", "1"}}),
      0);
  EXPECT_EQ(FindValue(families, "forge_rpc_duration_seconds_bucket",
                      {{"method", "SubmitJob"}, {"le", "0.001"}}),
            1);
  EXPECT_EQ(FindValue(families, "forge_rpc_duration_seconds_bucket",
                      {{"method", "SubmitJob"}, {"le", "60"}}),
            5);
  EXPECT_EQ(FindValue(families, "forge_rpc_duration_seconds_count", {{"method", "SubmitJob"}}), 6);
  EXPECT_EQ(FindValue(families, "forge_checkpoint_size_bytes_bucket", {{"le", "4294967296"}}), 1);
  EXPECT_EQ(FindValue(families, "forge_checkpoint_size_bytes_bucket", {{"le", "1073741824"}}), 0);
  EXPECT_EQ(FindValue(families, "forge_steps_total", {{"job", "j-1"}}), 1500);
  EXPECT_THAT(FindFamily(families, "forge_uptime_seconds")->samples, IsEmpty());
}

// promtool (Debian package "prometheus") parses with Prometheus's own parser and lints.
TEST(PromtoolTest, RichRegistryPassesCheckMetrics) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not on PATH (Debian package \"prometheus\"); skipping";
  }
  Registry registry;
  FillRich(registry);
  const std::filesystem::path dir = testing::TempDir();
  const std::string input = (dir / absl::StrCat("metrics_", getpid(), ".prom")).string();
  const std::string output = input + ".out";
  { std::ofstream(input) << registry.Render(); }
  const int status = std::system(
      absl::StrCat("promtool check metrics < '", input, "' > '", output, "' 2>&1").c_str());
  std::ifstream in(output);
  const std::string lint((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(input);
  std::filesystem::remove(output);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << lint;
  EXPECT_EQ(lint, "");
}

// The same check can fail: promtool flags what the registry refuses to write.
TEST(PromtoolTest, CheckMetricsFlagsAMissingTotalSuffix) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not on PATH (Debian package \"prometheus\"); skipping";
  }
  const int status = std::system(
      "printf '# HELP requests Requests.\\n# TYPE requests counter\\nrequests 1\\n' | "
      "promtool check metrics > /dev/null 2>&1");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
}

TEST(ContentTypeTest, IsTextFormat004) {
  EXPECT_STREQ(kContentType, "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace
}  // namespace forge::metrics
