#include "worker/engine/trainer.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/engine/dataset_source.h"
#include "worker/engine/eval.h"

namespace forge::engine {
namespace {

using ::testing::HasSubstr;

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
    const auto& m = t.model();
    std::string out(reinterpret_cast<const char*>(m.params()), m.num_params() * sizeof(float));
    out.append(reinterpret_cast<const char*>(t.optimizer().m()), m.num_params() * sizeof(float));
    out.append(reinterpret_cast<const char*>(t.optimizer().v()), m.num_params() * sizeof(float));
    return out;
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
  ASSERT_TRUE(resumed->LoadCheckpoint(ckpt).ok());
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

TEST_F(TrainerTest, LearnsAndEvaluatesHeldOut) {
  TrainerOptions o = Options();
  o.steps = 60;
  o.lr = {3e-3, 5, LrDecay::kCosine, 3e-4, 60};
  auto t = *Trainer::Create(o);
  const double before = EvaluateHeldOut(t->model(), *domain(), 32, 2)->loss;
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
  absl::StatusOr<EvalResult> after = EvaluateHeldOut(t->model(), *domain(), 32, 2);
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

}  // namespace
}  // namespace forge::engine
