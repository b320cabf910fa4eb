#include "worker/engine/trainer.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gloo/rendezvous/file_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/communicator.h"
#include "worker/engine/dataset_source.h"
#include "worker/engine/eval.h"

namespace forge::engine {
namespace {

using ::testing::HasSubstr;

// Runs body(rank, comm) for every rank on its own thread, each with its own Communicator over a
// gloo FileStore in a fresh directory. The short timeout makes a bug fail the test instead of
// hanging it.
void RunRanks(int world, const std::function<void(int, Communicator*)>& body) {
  std::string tmpl = ::testing::TempDir() + "/rdzv-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  auto store = std::make_shared<gloo::rendezvous::FileStore>(tmpl);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions co;
      co.rank = r;
      co.world_size = world;
      co.store = store;
      co.prefix = "trainer-test";
      co.timeout = absl::Seconds(20);
      absl::StatusOr<std::unique_ptr<Communicator>> comm = Communicator::Create(co);
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(r, comm->get());
    });
  }
  for (auto& t : threads) t.join();
}

// Synthetic documents in memory, built so that where a sequence comes from inside a source
// does not matter: every document of a source is the same `period - 1` tokens (a per-source
// pattern), so with the separator the source's token stream repeats every `period` tokens and,
// with seq_len a multiple of `period`, every sequence drawn from the source is the same. Two
// runs that give each slot the same source then see the same tokens, whichever documents and
// cursors each rank uses.
class SyntheticSource : public DocumentSource {
 public:
  SyntheticSource(int docs, int flavour, int period) {
    std::vector<uint16_t> doc(period - 1);
    for (size_t i = 0; i < doc.size(); ++i) {
      doc[i] = static_cast<uint16_t>(32 + flavour * 40 + (i * (flavour + 2) + i / 5) % 30);
    }
    docs_.assign(docs, doc);
  }
  int64_t num_documents() const override { return static_cast<int64_t>(docs_.size()); }
  absl::Span<const uint16_t> document(int64_t i) const override { return docs_[i]; }

 private:
  std::vector<std::vector<uint16_t>> docs_;
};

// A small model so a step takes milliseconds.
constexpr ModelShape kShape{2, 2, 32, 32, 256};

std::string TempDir(const std::string& tag) {
  std::string tmpl = ::testing::TempDir() + "/" + tag + "-XXXXXX";
  return mkdtemp(tmpl.data());
}

// Prepares a dataset of `docs` generated documents (different text per `flavour`).
std::shared_ptr<const Dataset> MakeDataset(const std::string& name, int docs, int flavour) {
  const std::string dir = TempDir("data-" + name);
  const std::string input = dir + "/input.jsonl";
  {
    std::ofstream out(input);
    for (int d = 0; d < docs; ++d) {
      std::string text;
      for (int w = 0; w < 20 + (d * 7) % 30; ++w) {
        text += (flavour == 0 ? "the cat sat on the mat " : "ticket closed: printer jam ");
        text += std::to_string((d * 31 + w * flavour) % 97) + " ";
      }
      out << "{\"text\": \"" << text << "\"}\n";
    }
  }
  PrepareOptions po;
  po.inputs = {input};
  po.name = name;
  po.out_dir = dir + "/prepared";
  po.heldout_fraction = 0.2;
  EXPECT_TRUE(PrepareDataset(po).ok());
  absl::StatusOr<Dataset> data = Dataset::Open(po.out_dir, VerifyMode::kFull);
  EXPECT_TRUE(data.ok()) << data.status();
  return std::make_shared<const Dataset>(*std::move(data));
}

class TrainerTest : public ::testing::Test {
 protected:
  TrainerOptions Options(int threads = 1) {
    TrainerOptions o;
    o.shape = kShape;
    o.sources = {
        {"general", 0.25, std::make_shared<DatasetSplitSource>(general(), Split::kTrain)},
        {"domain", 0.75, std::make_shared<DatasetSplitSource>(domain(), Split::kTrain)}};
    o.schedule = {{0.0, {{"general", 0.5}, {"domain", 0.5}}},
                  {1.0, {{"general", 0.1}, {"domain", 0.9}}}};
    o.steps = 8;
    o.seq_len = 32;
    o.micro_batch = 2;
    o.grad_accum = 2;
    o.lr = {3e-3, 2, LrDecay::kCosine, 3e-4, 8};
    o.seed = 7;
    o.threads = threads;
    return o;
  }
  static std::shared_ptr<const Dataset> general() {
    static auto* d = new std::shared_ptr<const Dataset>(MakeDataset("general", 60, 0));
    return *d;
  }
  static std::shared_ptr<const Dataset> domain() {
    static auto* d = new std::shared_ptr<const Dataset>(MakeDataset("domain", 60, 1));
    return *d;
  }
  static std::string Bytes(const Trainer& t) {
    const size_t n = t.backend().num_params();
    std::vector<float> state(3 * n);
    EXPECT_TRUE(t.backend().CopyState(state.data(), state.data() + n, state.data() + 2 * n).ok());
    return std::string(reinterpret_cast<const char*>(state.data()), state.size() * sizeof(float));
  }
};

TEST_F(TrainerTest, ResumeFromCheckpointIsBitIdentical) {
  auto straight = *Trainer::Create(Options());
  std::vector<double> losses;
  for (int i = 0; i < 8; ++i) losses.push_back(straight->Step()->loss);

  const std::string ckpt = TempDir("ckpt") + "/step-4";
  {
    auto first_half = *Trainer::Create(Options());
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(first_half->Step().ok());
    ASSERT_TRUE(first_half->SaveCheckpoint(ckpt, {{"lineage", {{"parent", nullptr}}}}).ok());
  }
  auto resumed = *Trainer::Create(Options());  // a fresh process, in effect
  nlohmann::json extra;
  ASSERT_TRUE(resumed->LoadCheckpoint(ckpt, &extra).ok());
  EXPECT_EQ(extra, nlohmann::json({{"lineage", {{"parent", nullptr}}}}));  // ours, exactly
  EXPECT_EQ(resumed->step(), 4);
  for (int i = 4; i < 8; ++i) {
    absl::StatusOr<StepStats> s = resumed->Step();
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->loss, losses[i]) << "step " << i;  // exact, not approximately
  }
  EXPECT_TRUE(Bytes(*resumed) == Bytes(*straight)) << "parameters or moments differ";
  EXPECT_EQ(resumed->Step().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TrainerTest, SameBitsWhateverTheThreadCount) {
  auto one = *Trainer::Create(Options(1));
  auto two = *Trainer::Create(Options(2));
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(one->Step().ok());
    ASSERT_TRUE(two->Step().ok());
  }
  EXPECT_TRUE(Bytes(*one) == Bytes(*two));
}

// A forward-only CPU model for evaluation tests: kShape, random weights from `seed`.
std::unique_ptr<ModelBackend> EvalModel(int max_batch, uint64_t seed = 5) {
  BackendConfig c;
  c.shape = kShape;
  c.max_batch = max_batch;
  c.max_seq = 32;
  absl::StatusOr<std::unique_ptr<ModelBackend>> m = CreateCpuBackend(c);
  EXPECT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->InitRandom(seed).ok());
  return *std::move(m);
}

TEST_F(TrainerTest, EvaluationSharedByRanksGivesTheOneRankResultOnEveryRank) {
  for (int64_t max_tokens : {int64_t{0}, int64_t{150}}) {
    SCOPED_TRACE(::testing::Message() << "max_tokens " << max_tokens);
    auto model = EvalModel(2);
    absl::StatusOr<EvalResult> one = EvaluateHeldOut(*model, *domain(), 32, 2, max_tokens);
    ASSERT_TRUE(one.ok()) << one.status();
    ASSERT_GT(one->tokens, 0);
    for (int world : {2, 3}) {
      std::vector<absl::StatusOr<EvalResult>> got(world, absl::UnknownError("not run"));
      RunRanks(world, [&](int rank, Communicator* comm) {
        auto m = EvalModel(2);
        got[rank] = EvaluateHeldOut(*m, *domain(), 32, 2, max_tokens, comm);
      });
      for (int r = 0; r < world; ++r) {
        ASSERT_TRUE(got[r].ok()) << "world " << world << " rank " << r << ": " << got[r].status();
        EXPECT_EQ(got[r]->tokens, one->tokens);
        EXPECT_EQ(got[r]->documents, one->documents);
        // Per-token losses are fp32, and a window batched with different neighbours may
        // round differently (the CPU matmul's blocking depends on the row count); the sums'
        // order differs too. Far below anything a guard budget looks at.
        EXPECT_NEAR(got[r]->loss, one->loss, 1e-6 * one->loss);
        EXPECT_EQ(got[r]->loss, got[0]->loss) << "ranks disagree";
      }
    }
  }
}

TEST_F(TrainerTest, EvaluationFailingOnOneRankFailsOnEveryRankWithoutAHang) {
  // Rank 1's model holds one sequence per call; the evaluation batches two: its forward pass
  // is refused, and rank 0 must hear of it rather than wait in the exchange.
  std::vector<absl::StatusOr<EvalResult>> got(2, absl::UnknownError("not run"));
  RunRanks(2, [&](int rank, Communicator* comm) {
    auto m = EvalModel(rank == 1 ? 1 : 2);
    got[rank] = EvaluateHeldOut(*m, *domain(), 32, 2, 0, comm);
  });
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kInvalidArgument) << got[1].status();
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kAborted) << got[0].status();
  EXPECT_THAT(got[0].status().message(), HasSubstr("failed on 1 other rank"));
}

TEST_F(TrainerTest, LearnsAndEvaluatesHeldOut) {
  TrainerOptions o = Options();
  o.steps = 60;
  o.lr = {3e-3, 5, LrDecay::kCosine, 3e-4, 60};
  auto t = *Trainer::Create(o);
  const double before = EvaluateHeldOut(t->backend(), *domain(), 32, 2)->loss;
  EXPECT_NEAR(before, std::log(256.0), 0.3);  // untrained: about uniform over bytes
  double first = 0, last = 0;
  int64_t domain_sequences = 0, general_sequences = 0;
  for (int i = 0; i < 60; ++i) {
    StepStats s = *t->Step();
    if (i == 0) first = s.loss;
    last = s.loss;
    general_sequences += s.sequences_per_source[0];
    domain_sequences += s.sequences_per_source[1];
    EXPECT_GT(s.lr, 0);
  }
  EXPECT_LT(last, first - 1.5) << "training loss did not fall";
  absl::StatusOr<EvalResult> after = EvaluateHeldOut(t->backend(), *domain(), 32, 2);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->loss, before - 1.5);
  EXPECT_DOUBLE_EQ(after->bits_per_byte, after->loss / std::log(2.0));
  EXPECT_GT(after->tokens, 100);
  // The schedule moves from 50/50 to 10/90: the domain got most sequences overall.
  EXPECT_GT(domain_sequences, 2 * general_sequences);
}

TEST_F(TrainerTest, ResumeWithADifferentRunIsRefused) {
  const std::string ckpt = TempDir("ckpt") + "/step-1";
  {
    auto t = *Trainer::Create(Options());
    ASSERT_TRUE(t->Step().ok());
    ASSERT_TRUE(t->SaveCheckpoint(ckpt).ok());
  }
  TrainerOptions other = Options();
  other.seed = 8;
  auto t = *Trainer::Create(other);
  absl::Status s = t->LoadCheckpoint(ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("seed"));
  EXPECT_EQ(t->step(), 0);  // nothing changed
}

// What a resumed rank reads before building its trainer, so a default micro-batch that
// changed since the checkpoint was written does not refuse the resume.
TEST_F(TrainerTest, CheckpointMicroBatchIsWhatTheRunUsed) {
  const std::string ckpt = TempDir("ckpt-micro") + "/step-1";
  TrainerOptions o = Options();
  o.micro_batch *= 2;
  o.grad_accum = 1;
  {
    auto t = *Trainer::Create(o);
    ASSERT_TRUE(t->Step().ok());
    ASSERT_TRUE(t->SaveCheckpoint(ckpt).ok());
  }
  absl::StatusOr<int> m = CheckpointMicroBatch(ckpt);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, o.micro_batch);
  EXPECT_EQ(CheckpointMicroBatch(TempDir("empty")).status().code(), absl::StatusCode::kNotFound);
}

// The tiny preset on synthetic documents: `world` ranks, each with `micro_batch` sequences.
TrainerOptions TinyOptions(int world, int rank, int micro_batch, Communicator* comm) {
  static auto* a = new std::shared_ptr<const DocumentSource>(new SyntheticSource(64, 0, 32));
  static auto* b = new std::shared_ptr<const DocumentSource>(new SyntheticSource(64, 1, 64));
  TrainerOptions o;
  o.shape = *PresetShape("tiny");
  o.sources = {{"a", 0.3, *a}, {"b", 0.7, *b}};
  o.steps = 16;
  o.seq_len = 64;
  o.micro_batch = micro_batch;
  o.grad_accum = 1;
  o.lr = {1e-3, 2, LrDecay::kCosine, 1e-4, 16};
  o.seed = 11;
  o.world_size = world;
  o.rank = rank;
  o.communicator = comm;
  return o;
}

// 2 ranks x 4 sequences follow 1 rank x 8 sequences. Slot g of a step has the same source in
// both runs (mixture_sampler.h), but each rank reads its own documents of that source; the
// SyntheticSource above makes every sequence of a source identical, so both runs see the same
// tokens in the same slots and differ only in float rounding: 1 rank sums the gradient over 8
// sequences inside one backward, 2 ranks sum 4 + 4 and add the halves. Measured gap over 16
// steps: 4.8e-7 (at loss 0.77). Tolerance 1e-4: 200x that rounding drift, far below what a
// real bug moves (a rank training on its own half alone, a missing / world_size, or a loss
// averaged wrongly changes the loss by > 1e-2 within a few steps).
TEST(TrainerDataParallelTest, TwoRanksHalfBatchFollowOneRankFullBatch) {
  std::vector<double> one_losses;
  {
    auto t = Trainer::Create(TinyOptions(1, 0, 8, nullptr));
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 16; ++i) {
      absl::StatusOr<StepStats> s = (*t)->Step();
      ASSERT_TRUE(s.ok()) << s.status();
      one_losses.push_back(s->loss);
    }
  }
  std::vector<std::vector<StepStats>> stats(2);
  RunRanks(2, [&](int r, Communicator* comm) {
    auto t = Trainer::Create(TinyOptions(2, r, 4, comm));
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 16; ++i) {
      absl::StatusOr<StepStats> s = (*t)->Step();
      ASSERT_TRUE(s.ok()) << s.status();
      stats[r].push_back(*s);
    }
  });
  ASSERT_EQ(stats[0].size(), 16u);
  ASSERT_EQ(stats[1].size(), 16u);
  double max_gap = 0;
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(stats[0][i].loss, stats[1][i].loss) << "step " << i << ": ranks disagree";
    EXPECT_NEAR(stats[0][i].loss, one_losses[i], 1e-4) << "step " << i;
    max_gap = std::max(max_gap, std::abs(stats[0][i].loss - one_losses[i]));
    EXPECT_EQ(stats[0][i].tokens, 4 * 64);
    EXPECT_EQ(stats[0][i].tokens_all_ranks, 8 * 64);
    EXPECT_EQ(stats[0][i].sequences_per_source_all_ranks,
              stats[1][i].sequences_per_source_all_ranks);
    for (int s = 0; s < 2; ++s) {
      EXPECT_EQ(stats[0][i].sequences_per_source[s] + stats[1][i].sequences_per_source[s],
                stats[0][i].sequences_per_source_all_ranks[s]);
    }
  }
  EXPECT_LT(stats[0][15].loss, stats[0][0].loss - 1.0) << "2-rank training did not learn";
  EXPECT_GT(stats[0][0].sequences_per_source_all_ranks[0], 0);  // both sources in play
  EXPECT_GT(stats[0][0].sequences_per_source_all_ranks[1], 0);
  std::printf("max |loss(2 ranks) - loss(1 rank)| over 16 steps: %.3g\n", max_gap);
}

// The small model and datasets of TrainerTest, on `world` ranks with a communicator.
class TrainerTwoRankTest : public TrainerTest {
 protected:
  TrainerOptions RankOptions(int world, int rank, Communicator* comm) {
    TrainerOptions o = Options();
    o.world_size = world;
    o.rank = rank;
    o.communicator = comm;
    return o;
  }
};

TEST_F(TrainerTwoRankTest, RanksStayBitIdenticalAndSameBitsOnRerun) {
  std::vector<std::string> run1(2), run2(2);
  for (auto* out : {&run1, &run2}) {
    RunRanks(2, [&](int r, Communicator* comm) {
      auto t = *Trainer::Create(RankOptions(2, r, comm));
      for (int i = 0; i < 6; ++i) ASSERT_TRUE(t->Step().ok());
      (*out)[r] = Bytes(*t);
    });
  }
  ASSERT_FALSE(run1[0].empty());
  EXPECT_TRUE(run1[0] == run1[1]) << "the ranks' parameters or moments differ";
  EXPECT_TRUE(run1[0] == run2[0]) << "the same 2-rank run gave different bits";
}

TEST_F(TrainerTwoRankTest, ResumeIsBitIdenticalWithTwoRanks) {
  std::vector<std::string> straight(2);
  std::vector<std::vector<double>> straight_losses(2);
  RunRanks(2, [&](int r, Communicator* comm) {
    auto t = *Trainer::Create(RankOptions(2, r, comm));
    for (int i = 0; i < 8; ++i) straight_losses[r].push_back(t->Step()->loss);
    straight[r] = Bytes(*t);
  });
  const std::string ckpt = TempDir("ckpt2") + "/step-4";
  RunRanks(2, [&](int r, Communicator* comm) {
    auto t = *Trainer::Create(RankOptions(2, r, comm));
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(t->Step().ok());
    if (r == 0) {
      ASSERT_TRUE(t->SaveCheckpoint(ckpt).ok());
    }
  });
  std::vector<std::string> resumed(2);
  RunRanks(2, [&](int r, Communicator* comm) {  // new processes, in effect
    auto t = *Trainer::Create(RankOptions(2, r, comm));
    absl::Status load = t->LoadCheckpoint(ckpt);  // the one directory rank 0 wrote
    ASSERT_TRUE(load.ok()) << load;
    ASSERT_EQ(t->step(), 4);
    for (int i = 4; i < 8; ++i) {
      absl::StatusOr<StepStats> s = t->Step();
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->loss, straight_losses[r][i]) << "rank " << r << " step " << i;
    }
    resumed[r] = Bytes(*t);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(resumed[r] == straight[r]) << "rank " << r << ": resumed run differs";
  }
  // A 1-rank run cannot take the 2-rank checkpoint.
  auto single = *Trainer::Create(Options());
  EXPECT_EQ(single->LoadCheckpoint(ckpt).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TrainerTwoRankTest, CheckReplicasAgreeCatchesADivergedRank) {
  std::vector<absl::Status> before(2), after(2);
  std::vector<uint64_t> sums(2);
  RunRanks(2, [&](int r, Communicator* comm) {
    auto t = *Trainer::Create(RankOptions(2, r, comm));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(t->Step().ok());
    before[r] = t->CheckReplicasAgree();
    sums[r] = *t->ParamChecksum();
    if (r == 1) {  // one float, one rank
      std::vector<float> params(t->backend().num_params());
      ASSERT_TRUE(t->backend().CopyState(params.data(), nullptr, nullptr).ok());
      params[123] += 1e-3f;
      ASSERT_TRUE(t->backend()
                      .LoadState(params.data(), nullptr, nullptr, t->backend().optimizer_step())
                      .ok());
    }
    after[r] = t->CheckReplicasAgree();
  });
  EXPECT_TRUE(before[0].ok()) << before[0];
  EXPECT_TRUE(before[1].ok()) << before[1];
  EXPECT_EQ(sums[0], sums[1]);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(after[r].code(), absl::StatusCode::kDataLoss) << "rank " << r << ": " << after[r];
    EXPECT_THAT(after[r].message(), HasSubstr("rank 1"));
    EXPECT_THAT(after[r].message(), HasSubstr("step 3"));
  }
}

// A loss that is not finite stops the run before the update: DATA_LOSS naming the step and
// the fix, the parameters and AdamW state untouched, the step count unchanged. (A NaN in
// wte's first entry reaches every row's logits through the tied output head.)
TEST_F(TrainerTest, NonFiniteLossStopsTheRunBeforeAnyUpdate) {
  auto t = *Trainer::Create(Options());
  ASSERT_TRUE(t->Step().ok());
  std::vector<float> params(t->backend().num_params());
  ASSERT_TRUE(t->backend().CopyState(params.data(), nullptr, nullptr).ok());
  params[0] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(
      t->backend().LoadState(params.data(), nullptr, nullptr, t->backend().optimizer_step()).ok());
  const std::string before = Bytes(*t);
  const absl::StatusOr<StepStats> s = t->Step();
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("step 2: the training loss is nan"));
  EXPECT_THAT(s.status().message(), HasSubstr("train.lr"));
  EXPECT_EQ(t->step(), 1);
  EXPECT_EQ(t->backend().optimizer_step(), 1);
  EXPECT_TRUE(Bytes(*t) == before) << "the parameters or AdamW moments changed";
}

// The CPU engine behind a wrapper whose subclasses change one answer.
class ForwardingBackend : public ModelBackend {
 public:
  explicit ForwardingBackend(std::unique_ptr<ModelBackend> inner) : inner_(std::move(inner)) {}
  std::string Describe() const override { return inner_->Describe(); }
  const std::vector<ParamInfo>& Parameters() const override { return inner_->Parameters(); }
  size_t num_params() const override { return inner_->num_params(); }
  absl::Status InitRandom(uint64_t seed) override { return inner_->InitRandom(seed); }
  absl::Status ZeroGrad() override { return inner_->ZeroGrad(); }
  absl::StatusOr<double> ForwardBackward(const int32_t* tokens, const int32_t* targets, int B,
                                         int T, bool last) override {
    return inner_->ForwardBackward(tokens, targets, B, T, last);
  }
  absl::Status ForwardLosses(const int32_t* tokens, const int32_t* targets, int B, int T,
                             float* losses) override {
    return inner_->ForwardLosses(tokens, targets, B, T, losses);
  }
  absl::Status FinishGradients() override { return inner_->FinishGradients(); }
  absl::StatusOr<double> OptimizerStep(float grad_scale, double max_norm, float lr) override {
    return inner_->OptimizerStep(grad_scale, max_norm, lr);
  }
  int64_t optimizer_step() const override { return inner_->optimizer_step(); }
  absl::Status CopyState(float* params, float* adam_m, float* adam_v) const override {
    return inner_->CopyState(params, adam_m, adam_v);
  }
  absl::Status CopyGradients(float* grads) const override { return inner_->CopyGradients(grads); }
  absl::Status LoadState(const float* params, const float* adam_m, const float* adam_v,
                         int64_t step) override {
    return inner_->LoadState(params, adam_m, adam_v, step);
  }

 private:
  std::unique_ptr<ModelBackend> inner_;
};

// The CPU engine with an optimizer step that reports an infinite gradient norm, as an
// overflowing backward would (a finite loss with non-finite gradients is hard to set up in
// the real model).
class InfiniteNormBackend : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  absl::StatusOr<double> OptimizerStep(float grad_scale, double max_norm, float lr) override {
    RETURN_IF_ERROR(ForwardingBackend::OptimizerStep(grad_scale, max_norm, lr).status());
    return std::numeric_limits<double>::infinity();
  }
};

// The CPU engine as if it ran on a device of known peak.
class KnownPeakBackend : public ForwardingBackend {
 public:
  KnownPeakBackend(std::unique_ptr<ModelBackend> inner, double peak)
      : ForwardingBackend(std::move(inner)), peak_(peak) {}
  double PeakFlops() const override { return peak_; }

 private:
  double peak_;
};

// A make_backend giving the CPU engine a peak of `peak` FLOP/s (0: unknown, as it is).
std::function<absl::StatusOr<std::unique_ptr<ModelBackend>>(const BackendConfig&)> WithPeak(
    double peak) {
  return [peak](const BackendConfig& c) -> absl::StatusOr<std::unique_ptr<ModelBackend>> {
    ASSIGN_OR_RETURN(std::unique_ptr<ModelBackend> inner, CreateCpuBackend(c));
    return std::unique_ptr<ModelBackend>(
        std::make_unique<KnownPeakBackend>(std::move(inner), peak));
  };
}

// MFU: this rank's tokens/s x TrainingFlopsPerToken over the backend's peak; none for the CPU
// engine, whose peak is unknown.
TEST_F(TrainerTest, MfuIsTheFlopRateOverTheBackendsPeak) {
  auto cpu = *Trainer::Create(Options());
  EXPECT_EQ(cpu->Mfu(1000), 0);
  TrainerOptions o = Options();
  o.make_backend = WithPeak(1e12);
  auto t = *Trainer::Create(o);
  EXPECT_DOUBLE_EQ(t->Mfu(1000), 1000 * TrainingFlopsPerToken(o.shape, o.seq_len) / 1e12);
}

// With several ranks the job's MFU is its tokens/s over the sum of the ranks' peaks, the same
// on every rank, whatever devices they have; unknown on one rank, unknown for the job.
TEST_F(TrainerTwoRankTest, MfuIsTheJobsFlopRateOverEveryRanksPeak) {
  std::vector<double> mfu(2, -1), unknown(2, -1);
  const TrainerOptions o = Options();
  const double flops = TrainingFlopsPerToken(o.shape, o.seq_len);
  RunRanks(2, [&](int r, Communicator* comm) {
    TrainerOptions ro = RankOptions(2, r, comm);
    ro.make_backend = WithPeak(r == 0 ? 1e12 : 3e12);
    mfu[r] = (*Trainer::Create(ro))->Mfu(1000);
    ro.make_backend = WithPeak(r == 0 ? 1e12 : 0);
    unknown[r] = (*Trainer::Create(ro))->Mfu(1000);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NEAR(mfu[r], 2 * 1000 * flops / 4e12, 1e-6 * mfu[r]) << "rank " << r;
    EXPECT_EQ(unknown[r], 0) << "rank " << r;
  }
}

TEST_F(TrainerTest, NonFiniteGradientNormStopsTheRun) {
  TrainerOptions o = Options();
  o.make_backend = [](const BackendConfig& c) -> absl::StatusOr<std::unique_ptr<ModelBackend>> {
    ASSIGN_OR_RETURN(std::unique_ptr<ModelBackend> cpu, CreateCpuBackend(c));
    return std::unique_ptr<ModelBackend>(std::make_unique<InfiniteNormBackend>(std::move(cpu)));
  };
  auto t = *Trainer::Create(std::move(o));
  const absl::StatusOr<StepStats> s = t->Step();
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("step 1: the gradient norm is inf"));
  EXPECT_THAT(s.status().message(), HasSubstr("no longer usable"));
  EXPECT_EQ(t->step(), 0);
}

TEST_F(TrainerTest, SnapshotIsWrittenAsOfItsStepWhileTrainingGoesOn) {
  auto t = *Trainer::Create(Options());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(t->Step().ok());
  CheckpointSnapshot snap = *t->Snapshot();
  const std::string at_snapshot = Bytes(*t);
  const uint64_t checksum_at_snapshot = *t->ParamChecksum();
  const std::string dir = TempDir("snap") + "/step-2";
  absl::Status written;
  std::thread writer([&] { written = WriteCheckpointSnapshot(snap, dir, {{"lineage", "x"}}); });
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(t->Step().ok());  // meanwhile, training goes on
  writer.join();
  ASSERT_TRUE(written.ok()) << written;
  ASSERT_NE(*t->ParamChecksum(), checksum_at_snapshot);

  ASSERT_TRUE(VerifyCheckpoint(dir).ok());
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 2);
  EXPECT_EQ(loaded->state["lineage"], "x");
  EXPECT_EQ(loaded->state["trainer"]["step"], 2);
  std::ifstream manifest(dir + "/" + kCheckpointManifestFile);
  std::string text((std::istreambuf_iterator<char>(manifest)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("\"config.json\""));

  auto resumed = *Trainer::Create(Options());
  ASSERT_TRUE(resumed->LoadCheckpoint(dir).ok());
  EXPECT_EQ(resumed->step(), 2);
  EXPECT_TRUE(Bytes(*resumed) == at_snapshot) << "the checkpoint is not the snapshot's state";
  EXPECT_EQ(*resumed->ParamChecksum(), checksum_at_snapshot);
}

}  // namespace
}  // namespace forge::engine
