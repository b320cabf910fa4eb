#include "worker/engine/mixture_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::engine {
namespace {

using ::testing::HasSubstr;

class VectorSource : public DocumentSource {
 public:
  explicit VectorSource(std::vector<std::vector<uint16_t>> docs) : docs_(std::move(docs)) {}
  int64_t num_documents() const override { return static_cast<int64_t>(docs_.size()); }
  absl::Span<const uint16_t> document(int64_t i) const override { return docs_[i]; }

 private:
  std::vector<std::vector<uint16_t>> docs_;
};

// Document i has TaggedLength(i) tokens, all equal to base + i (never the separator 0), so a
// stream can be cut back into document ids.
int TaggedLength(int i) { return 1 + (i * 7) % 11; }

std::shared_ptr<VectorSource> TaggedSource(int n, uint16_t base) {
  std::vector<std::vector<uint16_t>> docs;
  for (int i = 0; i < n; ++i) {
    docs.emplace_back(TaggedLength(i), static_cast<uint16_t>(base + i));
  }
  return std::make_shared<VectorSource>(std::move(docs));
}

MixtureSource Src(std::string name, double weight, int docs, uint16_t base) {
  return MixtureSource{std::move(name), weight, TaggedSource(docs, base)};
}

MixtureOptions Opts(int world, int rank, int batch, int seq_len, int64_t steps = 1000) {
  MixtureOptions o;
  o.world_size = world;
  o.rank = rank;
  o.sequences_per_rank = batch;
  o.seq_len = seq_len;
  o.total_steps = steps;
  o.seed = 7;
  return o;
}

MixtureSampler MustCreate(MixtureOptions o, std::vector<MixtureSource> s) {
  auto sampler = MixtureSampler::Create(std::move(o), std::move(s));
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return *std::move(sampler);
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  std::vector<int> sources;
  bool operator==(const Batch&) const = default;
};

Batch Next(MixtureSampler& s, int64_t step) {
  const auto& o = s.options();
  Batch b;
  b.inputs.resize(o.sequences_per_rank * o.seq_len);
  b.targets.resize(b.inputs.size());
  absl::Status st =
      s.NextBatch(step, absl::MakeSpan(b.inputs), absl::MakeSpan(b.targets), &b.sources);
  EXPECT_TRUE(st.ok()) << st;
  return b;
}

TEST(MixtureSamplerTest, WeightsFollowTheScheduleExactly) {
  MixtureOptions o = Opts(1, 0, 4, 8, /*steps=*/100);
  o.schedule = {{0.2, {{"a", 1}, {"b", 3}}}, {0.6, {{"a", 2}}}, {0.9, {{"b", 5}}}};
  MixtureSampler s = MustCreate(o, {Src("a", 1, 5, 1), Src("b", 1, 5, 100)});
  // Hand-computed: clamped before 0.2 and after 0.9, the knots, and midpoints (step 40:
  // raw (1.5, 1.5); step 75: raw (1, 2.5)).
  const std::map<int64_t, std::vector<double>> fixed = {
      {0, {0.25, 0.75}},          {20, {0.25, 0.75}}, {40, {0.5, 0.5}}, {60, {1.0, 0.0}},
      {75, {1 / 3.5, 2.5 / 3.5}}, {90, {0.0, 1.0}},   {150, {0.0, 1.0}}};
  constexpr double kTol = 1e-12;
  for (const auto& [step, w] : fixed) {
    std::vector<double> got = s.WeightsAt(step);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_NEAR(got[0], w[0], kTol) << "step " << step;
    EXPECT_NEAR(got[1], w[1], kTol) << "step " << step;
  }
  // Every step against an independent piecewise-linear formula.
  for (int64_t step = 0; step <= 120; ++step) {
    const double f = step / 100.0;
    double a, b;
    if (f <= 0.2) {
      a = 1, b = 3;
    } else if (f < 0.6) {
      const double t = (f - 0.2) / 0.4;
      a = 1 + t, b = 3 - 3 * t;
    } else if (f < 0.9) {
      const double t = (f - 0.6) / 0.3;
      a = 2 - 2 * t, b = 5 * t;
    } else {
      a = 0, b = 5;
    }
    std::vector<double> got = s.WeightsAt(step);
    EXPECT_NEAR(got[0], a / (a + b), kTol) << "step " << step;
    EXPECT_NEAR(got[1], b / (a + b), kTol) << "step " << step;
  }
  MixtureSampler flat = MustCreate(Opts(1, 0, 4, 8), {Src("a", 1, 5, 1), Src("b", 3, 5, 100)});
  EXPECT_EQ(flat.WeightsAt(0), (std::vector<double>{0.25, 0.75}));
  EXPECT_EQ(flat.WeightsAt(999), (std::vector<double>{0.25, 0.75}));
}

// Runs a 600-step three-phase schedule and compares realised with requested sequence counts
// per source: every step (stratification: under 1 sequence off) and over every 30-step window
// (at most `window_tolerance` sequences off, all ranks together).
void ExpectProportionsTrackTheSchedule(int world, int batch, double window_tolerance) {
  constexpr int kSteps = 600, kWindow = 30;
  const int slots = world * batch;
  MixtureOptions o = Opts(world, 0, batch, 8, kSteps);
  o.schedule = {{0.0, {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}}},
                {0.5, {{"a", 0.1}, {"b", 0.3}, {"c", 0.6}}},
                {1.0, {{"b", 1.0}}}};
  MixtureSampler s = MustCreate(o, {Src("a", 1, 9, 1), Src("b", 1, 9, 100), Src("c", 1, 9, 200)});
  double worst_step = 0, worst_window = 0;
  std::vector<double> want(3, 0.0), got(3, 0.0);
  for (int step = 0; step < kSteps; ++step) {
    const std::vector<double> w = s.WeightsAt(step);
    std::vector<int> count(3, 0);
    for (int r = 0; r < world; ++r) {
      for (int p = 0; p < batch; ++p) ++count[s.SourceOf(step, r, p)];
    }
    for (int k = 0; k < 3; ++k) {
      worst_step = std::max(worst_step, std::abs(count[k] - slots * w[k]));
      want[k] += slots * w[k];
      got[k] += count[k];
    }
    if ((step + 1) % kWindow == 0) {
      for (int k = 0; k < 3; ++k) {
        const double dev = std::abs(got[k] - want[k]);
        worst_window = std::max(worst_window, dev);
        EXPECT_LE(dev, window_tolerance) << "source " << k << " window ending at step " << step;
      }
      want.assign(3, 0.0);
      got.assign(3, 0.0);
    }
  }
  EXPECT_LT(worst_step, 1.0);
  std::printf("%d ranks x %d: worst step %.3f sequences; worst %d-step window %.2f of %d\n", world,
              batch, worst_step, kWindow, worst_window, slots * kWindow);
  // Past the end only "b" remains: a source of weight 0 is never chosen.
  for (int r = 0; r < world; ++r) EXPECT_EQ(s.SourceOf(kSteps, r, 0), 1);
}

TEST(MixtureSamplerTest, RealisedProportionsTrackTheScheduleAtEveryPhase) {
  ExpectProportionsTrackTheSchedule(3, 4, /*window_tolerance=*/3.0);  // 1% of 360
}

TEST(MixtureSamplerTest, RealisedProportionsTrackTheScheduleInTinyBatches) {
  ExpectProportionsTrackTheSchedule(1, 2, /*window_tolerance=*/3.0);  // 5% of 60
}

TEST(MixtureSamplerTest, ChoiceIsAPureFunctionOfTheTuple) {
  auto sources = [] { return std::vector{Src("a", 1, 20, 1), Src("b", 1, 20, 100)}; };
  MixtureSampler r0 = MustCreate(Opts(3, 0, 4, 8), sources());
  MixtureSampler r2 = MustCreate(Opts(3, 2, 4, 8), sources());
  std::vector<int> forward;
  for (int step = 0; step < 50; ++step) {
    for (int r = 0; r < 3; ++r) {
      for (int p = 0; p < 4; ++p) forward.push_back(r0.SourceOf(step, r, p));
    }
  }
  // Rank 2 draws batches (mutating its cursors) and answers in reverse order: same choices,
  // and its own batches carry exactly those sources.
  for (int step = 0; step < 50; ++step) {
    EXPECT_EQ(Next(r2, step).sources, (std::vector<int>(forward.begin() + step * 12 + 8,
                                                        forward.begin() + step * 12 + 12)));
  }
  for (int step = 49; step >= 0; --step) {
    for (int r = 2; r >= 0; --r) {
      for (int p = 3; p >= 0; --p)
        EXPECT_EQ(r2.SourceOf(step, r, p), forward[step * 12 + r * 4 + p]);
    }
  }
  // Not constant: both sources occur for every rank, and another seed gives other choices.
  for (int r = 0; r < 3; ++r) {
    int a = 0;
    for (int step = 0; step < 50; ++step) {
      for (int p = 0; p < 4; ++p) a += forward[step * 12 + r * 4 + p] == 0;
    }
    EXPECT_GT(a, 60) << "rank " << r;  // expect 100 of 200
    EXPECT_LT(a, 140) << "rank " << r;
  }
  MixtureOptions other = Opts(3, 0, 4, 8);
  other.seed = 8;
  MixtureSampler s8 = MustCreate(other, sources());
  int differ = 0;
  for (int step = 0; step < 50; ++step) differ += s8.SourceOf(step, 1, 1) != forward[step * 12 + 5];
  EXPECT_GT(differ, 10);
}

TEST(MixtureSamplerTest, SaveRestoreContinuesBitIdentically) {
  MixtureOptions o = Opts(2, 1, 3, 16, 200);
  o.schedule = {{0.0, {{"a", 0.8}, {"b", 0.2}}}, {1.0, {{"a", 0.2}, {"b", 0.8}}}};
  auto sources = [] { return std::vector{Src("a", 1, 13, 1), Src("b", 1, 7, 100)}; };
  MixtureSampler first = MustCreate(o, sources());
  for (int step = 0; step < 37; ++step) Next(first, step);
  const std::string saved = SamplerStateToJson(first.state()).dump();
  auto parsed = SamplerStateFromJson(nlohmann::json::parse(saved));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, first.state());
  MixtureSampler second = MustCreate(o, sources());
  ASSERT_TRUE(second.Restore(*parsed).ok());
  // 100 more steps cross several passes of both sources (7 and 13 documents, ~45 tokens/step).
  for (int step = 37; step < 137; ++step) {
    ASSERT_EQ(Next(first, step), Next(second, step)) << "step " << step;
  }
  EXPECT_EQ(first.state(), second.state());
  EXPECT_GT(first.state().sources[1].pass, parsed->sources[1].pass + 2);
}

// Cuts one rank's per-source token streams (concatenated input rows) into document ids.
std::vector<std::vector<int>> DocumentsRead(MixtureSampler& s, int steps, uint16_t base_a,
                                            uint16_t base_b) {
  const int len = s.options().seq_len;
  std::vector<std::vector<int32_t>> stream(2);
  std::vector<int32_t> last_target(2, -1);
  for (int step = 0; step < steps; ++step) {
    Batch b = Next(s, step);
    for (size_t i = 0; i < b.sources.size(); ++i) {
      const int k = b.sources[i];
      const int32_t* in = &b.inputs[i * len];
      const int32_t* tg = &b.targets[i * len];
      for (int j = 0; j + 1 < len; ++j) EXPECT_EQ(tg[j], in[j + 1]);
      if (last_target[k] >= 0) {
        EXPECT_EQ(in[0], last_target[k]);  // consecutive sequences of a source are contiguous
      }
      last_target[k] = tg[len - 1];
      stream[k].insert(stream[k].end(), in, in + len);
    }
  }
  std::vector<std::vector<int>> ids(2);
  for (int k = 0; k < 2; ++k) {
    const int base = k == 0 ? base_a : base_b;
    size_t i = 0;
    while (true) {
      size_t end = std::find(stream[k].begin() + i, stream[k].end(), 0) - stream[k].begin();
      if (end == stream[k].size()) break;  // trailing partial document
      const int id = stream[k][i] - base;
      EXPECT_EQ(static_cast<int>(end - i), TaggedLength(id)) << "document " << id;
      for (size_t j = i; j < end; ++j) EXPECT_EQ(stream[k][j], base + id);
      ids[k].push_back(id);
      i = end + 1;
    }
  }
  return ids;
}

void ExpectEachDocumentOncePerPass(int world) {
  constexpr int kDocs[2] = {50, 23};
  std::vector<std::vector<std::vector<int>>> read;  // [rank][source] -> ids in order
  for (int r = 0; r < world; ++r) {
    MixtureSampler s =
        MustCreate(Opts(world, r, 4, 16), {Src("a", 1, kDocs[0], 1), Src("b", 1, kDocs[1], 1000)});
    read.push_back(DocumentsRead(s, 120, 1, 1000));
  }
  for (int k = 0; k < 2; ++k) {
    const int d = kDocs[k];
    std::vector<std::vector<int>> order(3);  // pass -> ids by stream index k = r + world * j
    for (int pass = 0; pass < 3; ++pass) {
      std::vector<int> times(d, 0);
      for (int g = pass * d; g < (pass + 1) * d; ++g) {
        const auto& mine = read[g % world][k];
        ASSERT_LT(static_cast<size_t>(g / world), mine.size()) << "read too little";
        const int id = mine[g / world];
        ++times[id];
        order[pass].push_back(id);
      }
      for (int id = 0; id < d; ++id) {
        EXPECT_EQ(times[id], 1) << "source " << k << " pass " << pass << " document " << id;
      }
    }
    EXPECT_NE(order[0], order[1]);
    EXPECT_NE(order[1], order[2]);
  }
}

TEST(MixtureSamplerTest, EachDocumentReadOncePerPassOneRank) { ExpectEachDocumentOncePerPass(1); }
TEST(MixtureSamplerTest, EachDocumentReadOncePerPassThreeRanks) {
  ExpectEachDocumentOncePerPass(3);
}

TEST(MixtureSamplerTest, EmptyDocumentsAreJustSeparators) {
  auto docs = std::make_shared<VectorSource>(std::vector<std::vector<uint16_t>>{{}, {5}, {}});
  MixtureOptions o = Opts(1, 0, 1, 4);
  o.separator_token = 9;
  MixtureSampler s = MustCreate(o, {MixtureSource{"e", 1, docs}});
  std::vector<int32_t> all;
  for (int step = 0; step < 3; ++step) {  // 12 tokens = three passes of 4 tokens
    Batch b = Next(s, step);
    all.insert(all.end(), b.inputs.begin(), b.inputs.end());
  }
  for (int pass = 0; pass < 3; ++pass) {
    auto first = all.begin() + 4 * pass;
    EXPECT_EQ(std::count(first, first + 4, 5), 1);
    EXPECT_EQ(std::count(first, first + 4, 9), 3);
  }
}

TEST(MixtureSamplerTest, CountsAddUp) {
  constexpr int kWorld = 2, kBatch = 5, kLen = 8, kSteps = 40;
  std::vector<int64_t> total_sequences(2, 0), chosen(2, 0);
  for (int r = 0; r < kWorld; ++r) {
    MixtureSampler s =
        MustCreate(Opts(kWorld, r, kBatch, kLen), {Src("a", 1, 10, 1), Src("b", 2, 10, 100)});
    std::vector<int64_t> seen(2, 0);
    for (int step = 0; step < kSteps; ++step) {
      for (int src : Next(s, step).sources) ++seen[src];
      for (int p = 0; p < kBatch; ++p) ++chosen[s.SourceOf(step, r, p)];
    }
    const SamplerState st = s.state();
    EXPECT_EQ(st.next_step, kSteps);
    EXPECT_EQ(st.sources[0].sequences + st.sources[1].sequences, kSteps * kBatch);
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(st.sources[k].sequences, seen[k]);
      EXPECT_EQ(st.sources[k].tokens, seen[k] * kLen);
      total_sequences[k] += st.sources[k].sequences;
    }
  }
  EXPECT_EQ(total_sequences, chosen);
  // Weights 1:2 over 400 sequences with per-step stratification: within 1 per step of 10.
  EXPECT_NEAR(total_sequences[1], 400 * 2 / 3.0, kSteps);
}

void ExpectRefused(const absl::Status& status, absl::StatusCode code, const std::string& text) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(text));
}

TEST(MixtureSamplerTest, BadInputsAreRefusedWithTheFieldNamed) {
  struct Case {
    std::string want;
    std::function<void(MixtureOptions&, std::vector<MixtureSource>&)> breaks;
  };
  const std::vector<Case> cases = {
      {"data.mixture must have 1..64", [](auto&, auto& s) { s.clear(); }},
      {"data.mixture[1].weight must be > 0 and finite (got -0.2)",
       [](auto&, auto& s) { s[1].weight = -0.2; }},
      {"data.mixture[0].weight", [](auto&, auto& s) { s[0].weight = 0; }},
      {"data.mixture[1].dataset: 'a' is listed twice", [](auto&, auto& s) { s[1].name = "a"; }},
      {"data.mixture[1].dataset: 'acme-tickets' has no training documents",
       [](auto&, auto& s) {
         s[1].documents = std::make_shared<VectorSource>(std::vector<std::vector<uint16_t>>{});
       }},
      {"data.schedule[1].weights.acme-tickets: not a dataset",
       [](auto& o, auto& s) {
         s[1].name = "b";
         o.schedule = {{0, {{"a", 1}}}, {1, {{"acme-tickets", 1}}}};
       }},
      {"data.schedule[0].weights.a must be >= 0",
       [](auto& o, auto&) {
         o.schedule = {{0, {{"a", -1}}}};
       }},
      {"data.schedule[0].weights must have a positive sum",
       [](auto& o, auto&) {
         o.schedule = {{0, {{"a", 0}}}};
       }},
      {"data.schedule[0].at must be in [0, 1]",
       [](auto& o, auto&) {
         o.schedule = {{1.5, {{"a", 1}}}};
       }},
      {"data.schedule[1].at must be greater than data.schedule[0].at",
       [](auto& o, auto&) {
         o.schedule = {{0.5, {{"a", 1}}}, {0.5, {{"a", 2}}}};
       }},
      {"train.steps must be >= 1", [](auto& o, auto&) { o.total_steps = 0; }},
      {"train.seq_len must be >= 1", [](auto& o, auto&) { o.seq_len = 0; }},
      {"resources.ranks must be >= 1", [](auto& o, auto&) { o.world_size = 0; }},
      {"rank must be in [0, resources.ranks = 2) (got 2)", [](auto& o, auto&) { o.rank = 2; }},
      {"sequences_per_rank", [](auto& o, auto&) { o.sequences_per_rank = 0; }},
      {"separator_token must be >= 0", [](auto& o, auto&) { o.separator_token = -1; }},
  };
  for (const Case& c : cases) {
    MixtureOptions o = Opts(2, 0, 2, 4);
    std::vector<MixtureSource> s = {Src("a", 1, 3, 1), Src("acme-tickets", 1, 3, 100)};
    ASSERT_TRUE(MixtureSampler::Create(o, s).ok()) << "baseline must be valid";
    c.breaks(o, s);
    ExpectRefused(MixtureSampler::Create(o, s).status(), absl::StatusCode::kInvalidArgument,
                  c.want);
  }
}

TEST(MixtureSamplerTest, MisuseOfNextBatchChangesNothing) {
  MixtureSampler s = MustCreate(Opts(1, 0, 2, 4), {Src("a", 1, 3, 1)});
  std::vector<int32_t> in(8), tg(8), small(7);
  ExpectRefused(s.NextBatch(1, absl::MakeSpan(in), absl::MakeSpan(tg), nullptr),
                absl::StatusCode::kFailedPrecondition, "asked for step 1 but the next step is 0");
  ExpectRefused(s.NextBatch(0, absl::MakeSpan(small), absl::MakeSpan(tg), nullptr),
                absl::StatusCode::kInvalidArgument, "= 8 tokens (got 7 and 8)");
  EXPECT_EQ(s.state(), MustCreate(Opts(1, 0, 2, 4), {Src("a", 1, 3, 1)}).state());
}

TEST(MixtureSamplerTest, RestoreRefusesAStateThatDoesNotFit) {
  auto make = [] { return MustCreate(Opts(2, 1, 2, 4), {Src("a", 1, 5, 1), Src("b", 1, 4, 9)}); };
  MixtureSampler s = make();
  for (int step = 0; step < 3; ++step) Next(s, step);
  const SamplerState good = s.state();
  struct Case {
    absl::StatusCode code;
    std::string want;
    std::function<void(SamplerState&)> breaks;
  };
  using C = absl::StatusCode;
  const std::vector<Case> cases = {
      {C::kFailedPrecondition, "source 'zz' is not in data.mixture",
       [](SamplerState& st) { st.sources[1].name = "zz"; }},
      {C::kFailedPrecondition, "no cursor for source 'b'",
       [](SamplerState& st) { st.sources.pop_back(); }},
      {C::kFailedPrecondition, "source 'b' had 5 training documents when saved; the dataset has 4",
       [](SamplerState& st) { st.sources[1].num_documents = 5; }},
      {C::kFailedPrecondition, "saved for rank 0 of 2", [](SamplerState& st) { st.rank = 0; }},
      {C::kFailedPrecondition, "seed", [](SamplerState& st) { st.seed = 99; }},
      {C::kInvalidArgument, "source 'a': cursor out of range",
       [](SamplerState& st) { st.sources[0].position = 5; }},
      {C::kInvalidArgument, "source 'a': document",  // position 0 of pass 0 is rank 0's
       [](SamplerState& st) { st.sources[0].pass = 0, st.sources[0].position = 0; }},
      {C::kInvalidArgument, "source 'b': offset 1000 past the end",
       [](SamplerState& st) { st.sources[1].offset = 1000; }},
  };
  for (const Case& c : cases) {
    SamplerState bad = good;
    c.breaks(bad);
    MixtureSampler fresh = make();
    ExpectRefused(fresh.Restore(bad), c.code, c.want);
    EXPECT_EQ(fresh.state(), make().state()) << "a refused restore must change nothing";
  }
  MixtureSampler fresh = make();
  EXPECT_TRUE(fresh.Restore(good).ok());
}

TEST(SamplerStateJsonTest, MalformedFieldsAreNamed) {
  SamplerState st;
  st.seed = 0xFFFFFFFFFFFFFFFFULL;  // survives the round trip as an unsigned 64-bit number
  st.world_size = 2;
  st.next_step = 5;
  st.sources.push_back({"a", 3, 1, 2, 0, 40, 5});
  nlohmann::json j = SamplerStateToJson(st);
  auto back = SamplerStateFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, st);
  nlohmann::json missing = j;
  missing["sources"][0].erase("pass");
  ExpectRefused(SamplerStateFromJson(missing).status(), absl::StatusCode::kInvalidArgument,
                "sources[0].pass is missing");
  nlohmann::json mistyped = j;
  mistyped["next_step"] = "5";
  ExpectRefused(SamplerStateFromJson(mistyped).status(), absl::StatusCode::kInvalidArgument,
                "next_step must be an integer");
  nlohmann::json negative = j;
  negative["sources"][0]["offset"] = -1;
  ExpectRefused(SamplerStateFromJson(negative).status(), absl::StatusCode::kInvalidArgument,
                "sources[0].offset must be in [0,");
  nlohmann::json version = j;
  version["version"] = 2;
  ExpectRefused(SamplerStateFromJson(version).status(), absl::StatusCode::kInvalidArgument,
                "version must be 1 (got 2)");
}

}  // namespace
}  // namespace forge::engine
