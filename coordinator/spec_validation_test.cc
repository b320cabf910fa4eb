#include "coordinator/spec_validation.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::JobSpec;
using google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

JobSpec Parse(const std::string& text) {
  JobSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

// DESIGN.md's example spec, every field given explicitly.
JobSpec FullBaseSpec() {
  return Parse(R"pb(
    name: "acme-support-expert"
    base { model: "forge-small" stage: STAGE_MID_TRAINING }
    data {
      mixture { dataset: "general-english" weight: 0.25 }
      mixture { dataset: "acme-tickets" weight: 0.75 }
      schedule {
        at: 0
        weights { key: "general-english" value: 0.5 }
        weights { key: "acme-tickets" value: 0.5 }
      }
      schedule {
        at: 1
        weights { key: "general-english" value: 0.1 }
        weights { key: "acme-tickets" value: 0.9 }
      }
    }
    train {
      steps: 2000
      seq_len: 256
      batch_tokens: 32768
      lr: 3e-4
      warmup_steps: 100
      lr_decay: LR_DECAY_COSINE
      min_lr: 3e-5
      weight_decay: 0.1
      grad_clip: 1.0
      seed: 7
    }
    resources { ranks: 2 device: DEVICE_KIND_CPU }
    checkpoint { every_steps: 200 keep_last: 3 }
    eval { every_steps: 200 suites: "general-english" suites: "acme-tickets" }
    guard { suite: "general-english" max_regression: 0.02 }
    promote { channel: "acme-prod" }
    priority: 5
    max_restarts: 2
  )pb");
}

// A valid fresh-model spec that the rule cases below break one field at a time:
// seq_len x ranks = 128 x 2 = 256.
JobSpec FreshSpec() {
  return Parse(R"pb(
    name: "fresh"
    model { preset: "tiny" }
    data {
      mixture { dataset: "general-english" weight: 0.25 }
      mixture { dataset: "acme-tickets" weight: 0.75 }
      schedule {
        at: 0
        weights { key: "general-english" value: 0.5 }
        weights { key: "acme-tickets" value: 0.5 }
      }
      schedule {
        at: 1
        weights { key: "acme-tickets" value: 1 }
      }
    }
    train { steps: 100 seq_len: 128 batch_tokens: 1024 lr: 1e-3 min_lr: 1e-4 }
    resources { ranks: 2 device: DEVICE_KIND_CUDA }
    eval { suites: "general-english" suites: "acme-tickets" }
    guard { suite: "general-english" }
    promote { channel: "acme-prod" }
  )pb");
}

JobSpec MinimalSpec() {
  return Parse(R"pb(
    name: "tiny-run"
    model { preset: "tiny" }
    data { mixture { dataset: "general-english" weight: 1 } }
  )pb");
}

// Byte-exact identity, NaN included (MessageDifferencer finds NaN != NaN); deterministic so
// map order does not matter.
std::string Bytes(const JobSpec& spec) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&coded);
  }
  return out;
}

// Validates `spec` expecting INVALID_ARGUMENT; checks the spec was left unchanged and
// returns the message.
std::string InvalidMessage(const JobSpec& spec, const forge::v1::ModelSpec* base_shape = nullptr) {
  JobSpec copy = spec;
  absl::Status status = ValidateAndFillDefaults(&copy, base_shape);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(Bytes(copy), Bytes(spec)) << "invalid spec was modified:\n" << copy.DebugString();
  return std::string(status.message());
}

TEST(SpecValidationTest, FullySpecifiedSpecPassesUnchanged) {
  JobSpec spec = FullBaseSpec();
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(spec, FullBaseSpec())) << spec.DebugString();
}

TEST(SpecValidationTest, FreshSpecGetsResolvedModelAndRemainingDefaults) {
  JobSpec spec = FreshSpec();
  absl::Status status = ValidateAndFillDefaults(&spec);
  ASSERT_TRUE(status.ok()) << status;
  JobSpec expected = FreshSpec();
  auto* model = expected.mutable_model();
  model->set_layers(4);
  model->set_heads(4);
  model->set_width(256);
  model->set_context(128);
  model->set_vocab(256);
  auto* train = expected.mutable_train();
  train->set_warmup_steps(0);
  train->set_lr_decay(forge::v1::LR_DECAY_COSINE);
  train->set_weight_decay(0.1);
  train->set_grad_clip(1.0);
  train->set_seed(1);
  expected.mutable_checkpoint()->set_every_steps(10);
  expected.mutable_checkpoint()->set_keep_last(3);
  expected.mutable_eval()->set_every_steps(10);
  expected.mutable_guard()->set_max_regression(0.02);
  expected.set_max_restarts(3);
  EXPECT_TRUE(MessageDifferencer::Equals(spec, expected)) << spec.DebugString();
}

TEST(SpecValidationTest, MinimalSpecGetsEveryDefault) {
  JobSpec spec = MinimalSpec();
  absl::Status status = ValidateAndFillDefaults(&spec);
  ASSERT_TRUE(status.ok()) << status;
  JobSpec expected = Parse(R"pb(
    name: "tiny-run"
    model { preset: "tiny" layers: 4 heads: 4 width: 256 context: 128 vocab: 256 }
    data { mixture { dataset: "general-english" weight: 1 } }
    train {
      steps: 1000
      seq_len: 128
      batch_tokens: 1024
      lr: 3e-4
      warmup_steps: 0
      lr_decay: LR_DECAY_COSINE
      weight_decay: 0.1
      grad_clip: 1.0
      seed: 1
    }
    resources { ranks: 1 device: DEVICE_KIND_CPU }
    checkpoint { every_steps: 100 keep_last: 3 }
    eval { every_steps: 100 }
    max_restarts: 3
  )pb");
  EXPECT_DOUBLE_EQ(spec.train().min_lr(), 3e-5);
  expected.mutable_train()->set_min_lr(spec.train().min_lr());
  EXPECT_TRUE(MessageDifferencer::Equals(spec, expected)) << spec.DebugString();
  // No guard or promote appears from nowhere.
  EXPECT_FALSE(spec.has_guard());
  EXPECT_FALSE(spec.has_promote());
  EXPECT_FALSE(spec.has_base());
}

TEST(SpecValidationTest, DefaultsAreIdempotent) {
  JobSpec spec = MinimalSpec();
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  JobSpec again = spec;
  ASSERT_TRUE(ValidateAndFillDefaults(&again).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(spec, again)) << again.DebugString();
}

TEST(SpecValidationTest, DefaultsFollowGivenValues) {
  JobSpec spec = MinimalSpec();
  spec.mutable_model()->set_context(512);
  spec.mutable_train()->set_steps(5);
  spec.mutable_train()->set_lr(0.01);
  spec.mutable_resources()->set_ranks(3);
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_EQ(spec.train().seq_len(), 512);
  EXPECT_EQ(spec.train().batch_tokens(), 512 * 3 * 8);
  EXPECT_DOUBLE_EQ(spec.train().min_lr(), 0.001);
  EXPECT_EQ(spec.checkpoint().every_steps(), 0);  // 5 / 10: only at the end
  EXPECT_EQ(spec.eval().every_steps(), 0);
}

TEST(SpecValidationTest, MicroBatchIsLeftToTheTrainerUnlessGiven) {
  JobSpec spec = FullBaseSpec();
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_FALSE(spec.train().has_micro_batch());
  spec.mutable_train()->set_micro_batch(16);  // 32768 / (256 x 2) = 64 sequences per rank
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_EQ(spec.train().micro_batch(), 16);
  spec.mutable_train()->set_micro_batch(64);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
  spec.mutable_train()->set_micro_batch(1);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
}

TEST(SpecValidationTest, MicroBatchTimesHeadsIsNoLimitOnCpu) {
  JobSpec spec = FreshSpec();
  spec.mutable_model()->set_heads(32);
  spec.mutable_train()->set_batch_tokens(128 * 2 * 4096);
  spec.mutable_train()->set_micro_batch(4096);
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CUDA);
  spec.mutable_train()->set_micro_batch(2048);  // 2048 x 32 = 65536
  EXPECT_FALSE(ValidateAndFillDefaults(&spec).ok());
  spec.mutable_train()->set_micro_batch(1024);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
}

TEST(SpecValidationTest, ExplicitZerosAreKept) {
  JobSpec spec = MinimalSpec();
  spec.mutable_train()->set_seed(0);
  spec.mutable_train()->set_grad_clip(0);
  spec.mutable_train()->set_weight_decay(0);
  spec.mutable_train()->set_min_lr(0);
  spec.mutable_checkpoint()->set_every_steps(0);
  spec.set_max_restarts(0);
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_EQ(spec.train().seed(), 0u);
  EXPECT_EQ(spec.train().grad_clip(), 0);
  EXPECT_EQ(spec.train().weight_decay(), 0);
  EXPECT_EQ(spec.train().min_lr(), 0);
  EXPECT_EQ(spec.checkpoint().every_steps(), 0);
  EXPECT_EQ(spec.eval().every_steps(), 0);  // follows checkpoint.every_steps
  EXPECT_EQ(spec.max_restarts(), 0);
}

TEST(SpecValidationTest, WithBaseAnUnsetSeqLenAndBatchTokensStayUnset) {
  JobSpec spec = FullBaseSpec();
  spec.mutable_train()->clear_seq_len();
  spec.mutable_train()->clear_batch_tokens();
  ASSERT_TRUE(ValidateAndFillDefaults(&spec).ok());
  EXPECT_FALSE(spec.train().has_seq_len());
  EXPECT_FALSE(spec.train().has_batch_tokens());
}

TEST(SpecValidationTest, TheResolvedBasesShapeFillsAndBoundsTheTrainFields) {
  forge::v1::ModelSpec shape;  // gpt2-124m-shape
  shape.set_layers(12);
  shape.set_heads(12);
  shape.set_width(768);
  shape.set_context(1024);
  shape.set_vocab(50304);
  JobSpec spec = FullBaseSpec();  // 2 ranks
  spec.mutable_train()->clear_seq_len();
  spec.mutable_train()->clear_batch_tokens();
  JobSpec filled = spec;
  ASSERT_TRUE(ValidateAndFillDefaults(&filled, &shape).ok());
  EXPECT_EQ(filled.train().seq_len(), 1024);
  EXPECT_EQ(filled.train().batch_tokens(), 1024 * 2 * 8);
  EXPECT_FALSE(filled.has_model()) << "the shape stays the base's, not the spec's";
  // A schedule's spec (its base resolves at each slot) leaves them to that submission.
  JobSpec unresolved = spec;
  ASSERT_TRUE(ValidateAndFillDefaults(&unresolved).ok());
  EXPECT_FALSE(unresolved.train().has_seq_len());

  spec.mutable_train()->set_seq_len(2048);
  EXPECT_EQ(InvalidMessage(spec, &shape),
            "job spec: train.seq_len must be in 1..1024 (the base checkpoint's context) (got "
            "2048); lower it");
  spec.mutable_train()->clear_seq_len();
  spec.mutable_train()->set_micro_batch(3);
  EXPECT_EQ(InvalidMessage(spec, &shape),
            "job spec: train.micro_batch must divide the sequences each rank takes per step, "
            "train.batch_tokens / (seq_len x ranks) = 8 (got 3); use 2 or 4, or a "
            "train.batch_tokens that is a multiple of seq_len x ranks x micro_batch = 6144");
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CUDA);
  spec.mutable_train()->set_batch_tokens(1024 * 2 * 8192);
  spec.mutable_train()->set_micro_batch(4096);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec, &shape).ok());  // 4096 x 12 heads
  shape.set_heads(32);
  EXPECT_EQ(InvalidMessage(spec, &shape),
            "job spec: train.micro_batch x the base model's heads must be at most 65535 with "
            "resources.device: cuda (got 4096 x 32; the GPU attention runs one grid row per "
            "sequence and head): use a train.micro_batch of at most 2047");
  // The divisors suggested for one that does not divide the rank's 8192 sequences stay within
  // that bound too: 2048 and 4096 divide it but are over it.
  spec.mutable_train()->set_micro_batch(3000);
  EXPECT_THAT(InvalidMessage(spec, &shape),
              HasSubstr("= 8192 (got 3000); use 1024, or a train.batch_tokens"));
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  EXPECT_THAT(InvalidMessage(spec, &shape),
              HasSubstr("= 8192 (got 3000); use 2048 or 4096, or a train.batch_tokens"));
}

TEST(SpecValidationTest, WithBaseSeqLenIsNotCheckedAgainstAnUnknownContext) {
  JobSpec spec = FullBaseSpec();
  spec.mutable_train()->set_seq_len(4096);
  spec.mutable_train()->set_batch_tokens(4096 * 2 * 4);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
  spec.mutable_train()->set_seq_len(65537);
  EXPECT_EQ(InvalidMessage(spec), "job spec: train.seq_len must be in 1..65536 (got 65537)");
}

TEST(SpecValidationTest, AWidthTheGpuCannotTakeIsFineOnCpu) {
  JobSpec spec = FreshSpec();
  spec.mutable_model()->set_width(260);
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CUDA);
  EXPECT_FALSE(ValidateAndFillDefaults(&spec).ok());
}

TEST(SpecValidationTest, ACheckpointBaseNeedsNoStage) {
  JobSpec spec = FullBaseSpec();
  spec.mutable_base()->Clear();
  spec.mutable_base()->set_checkpoint("ck-0123456789abcdef");
  EXPECT_TRUE(ValidateAndFillDefaults(&spec).ok());
}

// One rule broken on an otherwise valid spec: exactly one problem, with this message.
struct RuleCase {
  std::string label;
  std::function<JobSpec()> spec;
  std::string problem;
};

JobSpec Fresh(const std::function<void(JobSpec*)>& change) {
  JobSpec spec = FreshSpec();
  change(&spec);
  return spec;
}

JobSpec WithBase(const std::function<void(JobSpec*)>& change) {
  JobSpec spec = FullBaseSpec();
  change(&spec);
  return spec;
}

class SpecRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(SpecRuleTest, ReportsExactlyThisProblem) {
  const RuleCase& c = GetParam();
  JobSpec spec = c.spec();
  EXPECT_EQ(InvalidMessage(spec), absl::StrCat("job spec: ", c.problem));
}

const RuleCase kRuleCases[] = {
    // name
    {"NameRequired", [] { return Fresh([](JobSpec* s) { s->clear_name(); }); },
     "name is required (letters, digits, '.', '_' and '-')"},
    {"NameTooLong", [] { return Fresh([](JobSpec* s) { s->set_name(std::string(129, 'a')); }); },
     "name is 129 characters long; the limit is 128"},
    {"NameCharset", [] { return Fresh([](JobSpec* s) { s->set_name("my job"); }); },
     "name may contain only letters, digits, '.', '_' and '-' (got \"my job\")"},
    // base / model
    {"NeitherBaseNorModel", [] { return Fresh([](JobSpec* s) { s->clear_model(); }); },
     "model: give a preset (tiny, gpt2-124m-shape) or layers/heads/width/context/vocab"},
    {"BaseAndModel",
     [] { return WithBase([](JobSpec* s) { s->mutable_model()->set_preset("tiny"); }); },
     "model: give either base or model, not both (model describes a fresh model; base starts "
     "from an existing one)"},
    {"BaseCheckpointAndModel",
     [] { return WithBase([](JobSpec* s) { s->mutable_base()->set_checkpoint("ck-1"); }); },
     "base: give either checkpoint or model, not both"},
    {"BaseEmpty", [] { return WithBase([](JobSpec* s) { s->mutable_base()->Clear(); }); },
     "base: give a checkpoint id, or a model with its stage"},
    {"BaseStageRequired",
     [] { return WithBase([](JobSpec* s) { s->mutable_base()->clear_stage(); }); },
     "base.stage is required with base.model (pre-training, mid-training or post-training)"},
    {"BaseStageOutOfEnum",
     [] {
       return WithBase(
           [](JobSpec* s) { s->mutable_base()->set_stage(static_cast<forge::v1::Stage>(9)); });
     },
     "base.stage must be pre-training, mid-training or post-training (got 9)"},
    {"BaseStageWithCheckpoint",
     [] {
       return WithBase([](JobSpec* s) {
         s->mutable_base()->clear_model();
         s->mutable_base()->set_checkpoint("ck-1");
       });
     },
     "base.stage goes with base.model only; a checkpoint records its own stage: remove "
     "base.stage (got mid-training)"},
    {"BaseModelName",
     [] { return WithBase([](JobSpec* s) { s->mutable_base()->set_model("Forge/Small"); }); },
     "base.model must start with a letter or digit (got \"Forge/Small\")"},
    {"BaseCheckpointTooLong",
     [] {
       return WithBase([](JobSpec* s) {
         s->mutable_base()->clear_model();
         s->mutable_base()->clear_stage();
         s->mutable_base()->set_checkpoint(std::string(129, 'c'));
       });
     },
     "base.checkpoint is 129 characters long; the limit is 128"},
    {"UnknownPreset",
     [] { return Fresh([](JobSpec* s) { s->mutable_model()->set_preset("huge"); }); },
     "model.preset \"huge\" is not a preset; use one of tiny, gpt2-124m-shape"},
    {"HeadsDivideWidth", [] { return Fresh([](JobSpec* s) { s->mutable_model()->set_heads(3); }); },
     "model.heads must divide model.width (got heads 3, width 256)"},
    {"LayersRange", [] { return Fresh([](JobSpec* s) { s->mutable_model()->set_layers(97); }); },
     "model.layers must be in 1..96 (got 97)"},
    {"SeqLenAboveContext",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_seq_len(256); }); },
     "train.seq_len must be in 1..128 (the model's context) (got 256); lower it or raise "
     "model.context"},
    // data
    {"MixtureRequired", [] { return Fresh([](JobSpec* s) { s->clear_data(); }); },
     "data.mixture is required: give 1..64 sources as {dataset, weight}"},
    {"MixtureWeightPositive",
     [] {
       return Fresh([](JobSpec* s) { s->mutable_data()->mutable_mixture(1)->set_weight(-0.2); });
     },
     "data.mixture[1].weight must be > 0 (got -0.2)"},
    {"MixtureWeightMissing",
     [] {
       return Fresh([](JobSpec* s) { s->mutable_data()->mutable_mixture(0)->clear_weight(); });
     },
     "data.mixture[0].weight must be > 0 (got 0)"},
    {"MixtureWeightNaN",
     [] {
       return Fresh([](JobSpec* s) { s->mutable_data()->mutable_mixture(0)->set_weight(kNaN); });
     },
     "data.mixture[0].weight must be a finite number (got nan)"},
    {"MixtureWeightInf",
     [] {
       return Fresh([](JobSpec* s) { s->mutable_data()->mutable_mixture(0)->set_weight(kInf); });
     },
     "data.mixture[0].weight must be a finite number (got inf)"},
    {"MixtureWeightSumOverflows",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_data()->mutable_mixture(0)->set_weight(1.5e308);
         s->mutable_data()->mutable_mixture(1)->set_weight(1.5e308);
       });
     },
     "data.mixture weights sum past the largest number; use smaller weights"},
    {"MixtureDatasetName",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_data()->mutable_mixture(1)->set_dataset("acme tickets");
         s->mutable_data()->mutable_schedule(0)->mutable_weights()->erase("acme-tickets");
         s->mutable_data()->mutable_schedule(1)->mutable_weights()->erase("acme-tickets");
         s->mutable_data()->mutable_schedule(1)->mutable_weights()->insert({"general-english", 1});
         s->mutable_eval()->mutable_suites()->RemoveLast();
       });
     },
     "data.mixture[1].dataset may contain only lower-case letters, digits, '.', '_' and '-' "
     "(got \"acme tickets\")"},
    {"MixtureDatasetUnique",
     [] {
       return Fresh([](JobSpec* s) {
         auto* entry = s->mutable_data()->add_mixture();
         entry->set_dataset("general-english");
         entry->set_weight(1);
       });
     },
     "data.mixture[2].dataset \"general-english\" is already data.mixture[0]; list each "
     "dataset once"},
    {"MixtureTooManySources",
     [] {
       return Fresh([](JobSpec* s) {
         for (int i = 0; i < 63; ++i) {
           auto* entry = s->mutable_data()->add_mixture();
           entry->set_dataset(absl::StrCat("d", i));
           entry->set_weight(1);
         }
       });
     },
     "data.mixture has 65 sources; the limit is 64"},
    {"ScheduleAtRange",
     [] { return Fresh([](JobSpec* s) { s->mutable_data()->mutable_schedule(1)->set_at(1.5); }); },
     "data.schedule[1].at must be in 0..1 (got 1.5)"},
    {"ScheduleAtNaN",
     [] { return Fresh([](JobSpec* s) { s->mutable_data()->mutable_schedule(1)->set_at(kNaN); }); },
     "data.schedule[1].at must be a finite number (got nan)"},
    {"ScheduleAtIncreasing",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_data()->mutable_schedule(0)->set_at(0.5);
         s->mutable_data()->mutable_schedule(1)->set_at(0.5);
       });
     },
     "data.schedule[1].at must be greater than data.schedule[0].at = 0.5 (got 0.5); list "
     "points in increasing order of at"},
    {"ScheduleDatasetInMixture",
     [] {
       return Fresh([](JobSpec* s) {
         (*s->mutable_data()->mutable_schedule(1)->mutable_weights())["wiki"] = 1;
       });
     },
     "data.schedule[1].weights names \"wiki\", which is not in data.mixture; add it to "
     "data.mixture or remove it here"},
    {"ScheduleWeightNonNegative",
     [] {
       return Fresh([](JobSpec* s) {
         (*s->mutable_data()->mutable_schedule(0)->mutable_weights())["acme-tickets"] = -1;
       });
     },
     "data.schedule[0].weights.acme-tickets must be >= 0 (got -1)"},
    {"ScheduleWeightFinite",
     [] {
       return Fresh([](JobSpec* s) {
         (*s->mutable_data()->mutable_schedule(0)->mutable_weights())["acme-tickets"] = kInf;
       });
     },
     "data.schedule[0].weights.acme-tickets must be a finite number (got inf)"},
    {"ScheduleSumPositive",
     [] {
       return Fresh([](JobSpec* s) {
         (*s->mutable_data()->mutable_schedule(1)->mutable_weights())["acme-tickets"] = 0;
       });
     },
     "data.schedule[1].weights must sum to > 0 (got 0); give at least one dataset a positive "
     "weight"},
    {"ScheduleTooManyPoints",
     [] {
       return Fresh([](JobSpec* s) {
         auto* schedule = s->mutable_data()->mutable_schedule();
         schedule->Clear();
         for (int i = 0; i < 65; ++i) {
           auto* point = schedule->Add();
           point->set_at(i / 64.0);
           (*point->mutable_weights())["acme-tickets"] = 1;
         }
       });
     },
     "data.schedule has 65 points; the limit is 64"},
    // train
    {"StepsMin", [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_steps(0); }); },
     "train.steps must be in 1..10000000 (got 0)"},
    {"StepsMax", [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_steps(10000001); }); },
     "train.steps must be in 1..10000000 (got 10000001)"},
    {"BatchTokensMultiple",
     [] { return WithBase([](JobSpec* s) { s->mutable_train()->set_batch_tokens(1000); }); },
     "train.batch_tokens must be a multiple of seq_len x ranks = 512 (got 1000); use 1024"},
    {"BatchTokensRoundsDown",
     [] { return WithBase([](JobSpec* s) { s->mutable_train()->set_batch_tokens(1100); }); },
     "train.batch_tokens must be a multiple of seq_len x ranks = 512 (got 1100); use 1024"},
    {"BatchTokensPositive",
     [] { return WithBase([](JobSpec* s) { s->mutable_train()->set_batch_tokens(0); }); },
     "train.batch_tokens must be a positive multiple of seq_len x ranks = 512 (got 0); use "
     "512"},
    {"MicroBatchDividesTheShare",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_micro_batch(3); }); },
     "train.micro_batch must divide the sequences each rank takes per step, "
     "train.batch_tokens / (seq_len x ranks) = 4 (got 3); use 2 or 4, or a train.batch_tokens "
     "that is a multiple of seq_len x ranks x micro_batch = 768"},
    {"MicroBatchAboveTheShare",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_micro_batch(6); }); },
     "train.micro_batch must divide the sequences each rank takes per step, "
     "train.batch_tokens / (seq_len x ranks) = 4 (got 6); use 4, or a train.batch_tokens that "
     "is a multiple of seq_len x ranks x micro_batch = 1536"},
    {"MicroBatchWithDefaultBatchTokens",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_train()->clear_batch_tokens();
         s->mutable_train()->set_micro_batch(5);
       });
     },
     "train.micro_batch must divide the sequences each rank takes per step, "
     "train.batch_tokens / (seq_len x ranks) = 8 (got 5); use 4 or 8, or a train.batch_tokens "
     "that is a multiple of seq_len x ranks x micro_batch = 1280"},
    {"MicroBatchTimesHeadsOnCuda",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_model()->set_heads(32);
         s->mutable_train()->set_batch_tokens(128 * 2 * 4096);
         s->mutable_train()->set_micro_batch(4096);
       });
     },
     "train.micro_batch x model.heads must be at most 65535 with resources.device: cuda (got "
     "4096 x 32; the GPU attention runs one grid row per sequence and head): use a "
     "train.micro_batch of at most 2047"},
    {"MicroBatchMin",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_micro_batch(0); }); },
     "train.micro_batch must be in 1..4096 (got 0)"},
    {"MicroBatchMax",
     [] { return WithBase([](JobSpec* s) { s->mutable_train()->set_micro_batch(4097); }); },
     "train.micro_batch must be in 1..4096 (got 4097)"},
    {"LrZero", [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_lr(0); }); },
     "train.lr must be in (0, 1] (got 0)"},
    {"LrAboveOne", [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_lr(1.5); }); },
     "train.lr must be in (0, 1] (got 1.5)"},
    {"LrNaN", [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_lr(kNaN); }); },
     "train.lr must be a finite number (got nan)"},
    {"WarmupAboveSteps",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_warmup_steps(101); }); },
     "train.warmup_steps must be in 0..train.steps = 100 (got 101)"},
    {"MinLrAboveLr",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_min_lr(0.002); }); },
     "train.min_lr must be in 0..train.lr = 0.001 (got 0.002)"},
    {"MinLrNegative",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_min_lr(-1e-5); }); },
     "train.min_lr must be in 0..train.lr = 0.001 (got -1e-05)"},
    {"LrDecayOutOfEnum",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_train()->set_lr_decay(static_cast<forge::v1::LrDecay>(7));
       });
     },
     "train.lr_decay must be cosine, linear or constant (got 7)"},
    {"WeightDecayRange",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_weight_decay(1.5); }); },
     "train.weight_decay must be in 0..1 (got 1.5)"},
    {"GradClipNegative",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_grad_clip(-1); }); },
     "train.grad_clip must be in 0..1e+06 (got -1)"},
    {"LrShownExactly",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_lr(1.0000001); }); },
     "train.lr must be in (0, 1] (got 1.0000001)"},
    {"GradClipInf",
     [] { return Fresh([](JobSpec* s) { s->mutable_train()->set_grad_clip(-kInf); }); },
     "train.grad_clip must be a finite number (got -inf)"},
    // resources
    {"RanksNegative",
     [] { return Fresh([](JobSpec* s) { s->mutable_resources()->set_ranks(-1); }); },
     "resources.ranks must be in 1..4096 (got -1)"},
    {"RanksMax", [] { return Fresh([](JobSpec* s) { s->mutable_resources()->set_ranks(4097); }); },
     "resources.ranks must be in 1..4096 (got 4097)"},
    {"CudaWidthMultipleOfEight",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_model()->set_width(260);  // heads 4 divide it; 260 % 8 == 4
         s->mutable_resources()->set_device(forge::v1::DEVICE_KIND_CUDA);
       });
     },
     "model.width must be a multiple of 8 with resources.device: cuda (got 260; the GPU "
     "matmuls need 16-byte aligned rows): use width 256 or 264 (heads must still divide it), "
     "or resources.device: cpu"},
    {"DeviceOutOfEnum",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_resources()->set_device(static_cast<forge::v1::DeviceKind>(5));
       });
     },
     "resources.device must be cpu or cuda (got 5)"},
    // checkpoint / eval
    {"CheckpointEveryAboveSteps",
     [] { return Fresh([](JobSpec* s) { s->mutable_checkpoint()->set_every_steps(101); }); },
     "checkpoint.every_steps must be in 0..train.steps = 100 (got 101); 0 means only at the "
     "end"},
    {"KeepLastRange",
     [] { return Fresh([](JobSpec* s) { s->mutable_checkpoint()->set_keep_last(0); }); },
     "checkpoint.keep_last must be in 1..1000 (got 0)"},
    {"EvalEveryNegative",
     [] { return Fresh([](JobSpec* s) { s->mutable_eval()->set_every_steps(-1); }); },
     "eval.every_steps must be in 0..train.steps = 100 (got -1); 0 means only at the end"},
    {"EvalSuiteName", [] { return Fresh([](JobSpec* s) { s->mutable_eval()->add_suites("-x"); }); },
     "eval.suites[2] must start with a letter or digit (got \"-x\")"},
    {"EvalSuitesUnique",
     [] { return Fresh([](JobSpec* s) { s->mutable_eval()->add_suites("acme-tickets"); }); },
     "eval.suites[2] \"acme-tickets\" is already eval.suites[1]; list each suite once"},
    {"EvalTooManySuites",
     [] {
       return Fresh([](JobSpec* s) {
         for (int i = 0; i < 63; ++i) s->mutable_eval()->add_suites(absl::StrCat("s", i));
       });
     },
     "eval.suites has 65 datasets; the limit is 64"},
    // guard / promote
    {"GuardSuiteInEvalSuites",
     [] { return Fresh([](JobSpec* s) { s->mutable_guard()->set_suite("x"); }); },
     "guard.suite \"x\" is not one of eval.suites [general-english, acme-tickets]; add it to "
     "eval.suites"},
    {"GuardSuiteRequired",
     [] { return Fresh([](JobSpec* s) { s->mutable_guard()->clear_suite(); }); },
     "guard.suite is required (or guard.suites for several); name one of eval.suites "
     "[general-english, acme-tickets]"},
    {"GuardSuiteOrSuites",
     [] { return Fresh([](JobSpec* s) { s->mutable_guard()->add_suites("acme-tickets"); }); },
     "guard has both suite (\"general-english\") and suites; give one: suites lists every "
     "guarded suite"},
    {"GuardSuitesInEvalSuites",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_guard()->clear_suite();
         s->mutable_guard()->add_suites("general-english");
         s->mutable_guard()->add_suites("code");
       });
     },
     "guard.suites[1] \"code\" is not one of eval.suites [general-english, acme-tickets]; add "
     "it to eval.suites"},
    {"GuardSuitesUnique",
     [] {
       return Fresh([](JobSpec* s) {
         s->mutable_guard()->clear_suite();
         s->mutable_guard()->add_suites("acme-tickets");
         s->mutable_guard()->add_suites("acme-tickets");
       });
     },
     "guard.suites[1] \"acme-tickets\" is already guard.suites[0]; list each suite once"},
    {"GuardMaxRegressionRange",
     [] { return Fresh([](JobSpec* s) { s->mutable_guard()->set_max_regression(10.5); }); },
     "guard.max_regression must be in 0..10 (got 10.5)"},
    {"PromoteNeedsGuard", [] { return Fresh([](JobSpec* s) { s->clear_guard(); }); },
     "promote needs a guard: add guard: {suite: ..., max_regression: ...}"},
    {"PromoteChannelRequired",
     [] { return Fresh([](JobSpec* s) { s->mutable_promote()->clear_channel(); }); },
     "promote.channel is required (lower-case letters, digits, '.', '_' and '-')"},
    // top level
    {"PriorityMax", [] { return Fresh([](JobSpec* s) { s->set_priority(101); }); },
     "priority must be in -100..100 (got 101)"},
    {"PriorityMin", [] { return Fresh([](JobSpec* s) { s->set_priority(-101); }); },
     "priority must be in -100..100 (got -101)"},
    {"MaxRestartsMax", [] { return Fresh([](JobSpec* s) { s->set_max_restarts(101); }); },
     "max_restarts must be in 0..100 (got 101)"},
    {"MaxRestartsNegative", [] { return Fresh([](JobSpec* s) { s->set_max_restarts(-1); }); },
     "max_restarts must be in 0..100 (got -1)"},
};

INSTANTIATE_TEST_SUITE_P(Rules, SpecRuleTest, ::testing::ValuesIn(kRuleCases),
                         [](const ::testing::TestParamInfo<RuleCase>& info) {
                           return info.param.label;
                         });

TEST(SpecValidationTest, RuleCasesStartFromValidSpecs) {
  // Otherwise a rule case could pass on a problem of its starting spec.
  JobSpec fresh = FreshSpec();
  EXPECT_TRUE(ValidateAndFillDefaults(&fresh).ok());
  JobSpec base = FullBaseSpec();
  EXPECT_TRUE(ValidateAndFillDefaults(&base).ok());
}

TEST(SpecValidationTest, BoundsAreInclusive) {
  JobSpec spec = FreshSpec();
  spec.set_priority(-100);
  spec.set_max_restarts(100);
  spec.mutable_train()->set_lr(1);
  spec.mutable_train()->set_min_lr(1);
  spec.mutable_train()->set_warmup_steps(100);
  spec.mutable_train()->set_seq_len(1);
  spec.mutable_train()->set_batch_tokens(2);
  spec.mutable_checkpoint()->set_every_steps(100);
  spec.mutable_checkpoint()->set_keep_last(1000);
  spec.mutable_guard()->set_max_regression(10);
  absl::Status status = ValidateAndFillDefaults(&spec);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(SpecValidationTest, ReportsAllProblemsTogetherInFieldOrder) {
  JobSpec spec = FreshSpec();
  spec.clear_name();
  spec.mutable_data()->mutable_mixture(1)->set_weight(-0.2);
  spec.mutable_train()->set_lr(2);
  spec.set_priority(500);
  EXPECT_EQ(InvalidMessage(spec),
            "job spec: name is required (letters, digits, '.', '_' and '-'); "
            "data.mixture[1].weight must be > 0 (got -0.2); "
            "train.lr must be in (0, 1] (got 2); "
            "priority must be in -100..100 (got 500)");
}

TEST(SpecValidationTest, CapsTheListAtTwentyProblems) {
  JobSpec spec = FreshSpec();
  spec.mutable_data()->clear_schedule();
  for (int i = 0; i < 23; ++i) {
    auto* entry = spec.mutable_data()->add_mixture();
    entry->set_dataset(absl::StrCat("extra-", i));
    entry->set_weight(-1);
  }
  std::string message = InvalidMessage(spec);
  std::vector<std::string> parts = absl::StrSplit(message, "; ");
  ASSERT_EQ(parts.size(), 21u) << message;
  EXPECT_EQ(parts[0], "job spec: data.mixture[2].weight must be > 0 (got -1)");
  EXPECT_EQ(parts[19], "data.mixture[21].weight must be > 0 (got -1)");
  EXPECT_EQ(parts[20], "and 3 more");
}

TEST(SpecValidationTest, EchoedUserTextIsBounded) {
  JobSpec spec = FreshSpec();
  spec.mutable_model()->set_preset(std::string(100000, 'p'));
  spec.mutable_guard()->set_suite(std::string(100000, 'g'));
  std::string message = InvalidMessage(spec);
  EXPECT_LT(message.size(), 1000u);
  EXPECT_THAT(message, StartsWith("job spec: model.preset \"pppp"));
  EXPECT_THAT(message, HasSubstr("...\" is not a preset"));
  EXPECT_THAT(message, HasSubstr("guard.suite \"gggg"));
}

TEST(SpecValidationTest, InvalidSpecIsLeftUnmodified) {
  // Invalid only at the end, after every default would have been filled.
  JobSpec spec = MinimalSpec();
  spec.set_priority(1000);
  JobSpec before = spec;
  EXPECT_EQ(ValidateAndFillDefaults(&spec).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageDifferencer::Equals(spec, before)) << spec.DebugString();
  EXPECT_FALSE(spec.has_train());
  EXPECT_FALSE(spec.model().has_layers());
}

}  // namespace
}  // namespace forge::coordinator
