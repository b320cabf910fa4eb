#include "cli/spec_yaml.h"

#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>

namespace forge::cli {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The example of DESIGN.md "Job spec", comments included.
constexpr char kDesignExample[] = R"yaml(name: acme-support-expert
base: {model: forge-small, stage: mid-training}   # or {checkpoint: <id>}; or leave out `base`
                                                  # and give model: {preset: tiny} or
                                                  # {layers, heads, width, context} to start fresh
data:
  mixture:                                          # weights are normalised; each > 0
    - {dataset: general-english, weight: 0.25}     # replay of the base model's data
    - {dataset: acme-tickets,    weight: 0.75}
  schedule:                                         # optional: weights change over the run
    - {at: 0.0, weights: {general-english: 0.5, acme-tickets: 0.5}}
    - {at: 1.0, weights: {general-english: 0.1, acme-tickets: 0.9}}
train: {steps: 2000, seq_len: 256, batch_tokens: 32768, lr: 3e-4, warmup_steps: 100,
        lr_decay: cosine, min_lr: 3e-5, weight_decay: 0.1, grad_clip: 1.0, seed: 7}
resources: {ranks: 2, device: cpu}                  # or cuda
checkpoint: {every_steps: 200, keep_last: 3}
eval: {every_steps: 200, suites: [general-english, acme-tickets]}   # held-out splits
guard: {suite: general-english, max_regression: 0.02}  # relative to the base checkpoint
promote: {channel: acme-prod}                       # only when the guard passes
)yaml";

constexpr char kDesignExampleProto[] = R"pb(
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
)pb";

absl::StatusOr<forge::v1::JobSpec> Parse(absl::string_view yaml) {
  return ParseJobSpecYaml(yaml, "spec.yaml");
}

// The error message of parsing `yaml`, which must fail with INVALID_ARGUMENT.
std::string ErrorOf(absl::string_view yaml) {
  absl::StatusOr<forge::v1::JobSpec> spec = Parse(yaml);
  EXPECT_FALSE(spec.ok()) << "parsed: " << spec->DebugString();
  if (spec.ok()) return "";
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(spec.status().message());
}

TEST(SpecYamlTest, DesignExampleParsesToTheExpectedProto) {
  absl::StatusOr<forge::v1::JobSpec> spec = Parse(kDesignExample);
  ASSERT_TRUE(spec.ok()) << spec.status();
  forge::v1::JobSpec expected;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kDesignExampleProto, &expected));
  // Compares presence of optional fields and map contents (as maps) too.
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(expected, *spec)) << diff;

  EXPECT_EQ(spec->base().stage(), forge::v1::STAGE_MID_TRAINING);
  EXPECT_TRUE(spec->base().checkpoint().empty());
  EXPECT_FALSE(spec->has_model());
  EXPECT_DOUBLE_EQ(spec->train().lr(), 3e-4);
  EXPECT_DOUBLE_EQ(spec->train().min_lr(), 3e-5);
  EXPECT_EQ(spec->train().seed(), 7u);
  ASSERT_EQ(spec->data().schedule_size(), 2);
  EXPECT_DOUBLE_EQ(spec->data().schedule(1).weights().at("acme-tickets"), 0.9);
  EXPECT_EQ(spec->data().schedule(1).weights().size(), 2u);
  EXPECT_TRUE(spec->train().has_warmup_steps());
  EXPECT_TRUE(spec->guard().has_max_regression());
  EXPECT_FALSE(spec->has_max_restarts());
  EXPECT_EQ(spec->priority(), 0);
}

TEST(SpecYamlTest, GuardTakesSeveralSuites) {
  absl::StatusOr<forge::v1::JobSpec> spec =
      Parse("name: j\nguard: {suites: [general-english, general-code], max_regression: 0.03}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->guard().suites_size(), 2);
  EXPECT_EQ(spec->guard().suites(1), "general-code");
  EXPECT_TRUE(spec->guard().suite().empty());
  EXPECT_DOUBLE_EQ(spec->guard().max_regression(), 0.03);
}

TEST(SpecYamlTest, OptionalFieldsAreSetExactlyWhenPresent) {
  absl::StatusOr<forge::v1::JobSpec> spec =
      Parse("name: j\ntrain: {steps: 10, lr: 0}\nmax_restarts: 0\npriority: -5\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->train().has_steps());
  EXPECT_TRUE(spec->train().has_lr());  // present with value 0
  EXPECT_EQ(spec->train().lr(), 0.0);
  EXPECT_FALSE(spec->train().has_seq_len());
  EXPECT_FALSE(spec->train().has_seed());
  EXPECT_EQ(spec->train().lr_decay(), forge::v1::LR_DECAY_UNSPECIFIED);
  EXPECT_TRUE(spec->has_max_restarts());
  EXPECT_EQ(spec->max_restarts(), 0);
  EXPECT_EQ(spec->priority(), -5);
  EXPECT_FALSE(spec->has_base());
  EXPECT_FALSE(spec->has_checkpoint());
}

TEST(SpecYamlTest, BaseCheckpointForm) {
  absl::StatusOr<forge::v1::JobSpec> spec = Parse("name: j\nbase: {checkpoint: c-0123abcd}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->has_base());
  EXPECT_EQ(spec->base().checkpoint(), "c-0123abcd");
  EXPECT_TRUE(spec->base().model().empty());
  EXPECT_EQ(spec->base().stage(), forge::v1::STAGE_UNSPECIFIED);
  EXPECT_FALSE(spec->has_model());
}

TEST(SpecYamlTest, ModelPresetAndExplicitShapeForms) {
  absl::StatusOr<forge::v1::JobSpec> preset = Parse("name: j\nmodel: {preset: tiny}\n");
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_FALSE(preset->has_base());
  EXPECT_EQ(preset->model().preset(), "tiny");
  EXPECT_FALSE(preset->model().has_layers());

  absl::StatusOr<forge::v1::JobSpec> shape =
      Parse("name: j\nmodel:\n  layers: 4\n  heads: 4\n  width: 256\n  context: 128\n");
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_TRUE(shape->model().preset().empty());
  EXPECT_EQ(shape->model().layers(), 4);
  EXPECT_EQ(shape->model().heads(), 4);
  EXPECT_EQ(shape->model().width(), 256);
  EXPECT_EQ(shape->model().context(), 128);
  EXPECT_FALSE(shape->model().has_vocab());
}

TEST(SpecYamlTest, UnknownTopLevelKeyNamesKeyLineAndAllowedKeys) {
  EXPECT_EQ(ErrorOf("name: j\nresource: {ranks: 2}\n"),
            "spec.yaml:2:1: unknown key \"resource\" at top level; allowed: name, base, model, "
            "data, train, resources, checkpoint, eval, guard, promote, priority, max_restarts, "
            "stage");
}

TEST(SpecYamlTest, UnknownNestedKeyNamesPathAndColumn) {
  EXPECT_EQ(ErrorOf("name: j\ntrain:\n  steps: 10\n  lerning_rate: 0.1\n"),
            "spec.yaml:4:3: unknown key \"lerning_rate\" in train; allowed: steps, seq_len, "
            "batch_tokens, lr, warmup_steps, lr_decay, min_lr, weight_decay, grad_clip, seed, "
            "micro_batch");
  // In a flow map, the column is the key's.
  EXPECT_THAT(ErrorOf("name: j\ncheckpoint: {every_steps: 5, keep: 3}\n"),
              StartsWith("spec.yaml:2:30: unknown key \"keep\" in checkpoint; allowed: "
                         "every_steps, keep_last"));
}

TEST(SpecYamlTest, UnknownKeyInListElementNamesTheIndex) {
  EXPECT_THAT(ErrorOf("data:\n  mixture:\n    - {dataset: a, weight: 1}\n"
                      "    - {dataset: b, wieght: 1}\n"),
              StartsWith("spec.yaml:4:20: unknown key \"wieght\" in data.mixture[1]; allowed: "
                         "dataset, weight"));
}

TEST(SpecYamlTest, WrongScalarTypesNameThePathAndLine) {
  EXPECT_EQ(ErrorOf("train:\n  steps: many\n"),
            "spec.yaml:2:10: train.steps: expected an integer, got \"many\"");
  EXPECT_EQ(ErrorOf("train: {steps: 2.5}\n"),
            "spec.yaml:1:16: train.steps: expected an integer, got \"2.5\"");
  EXPECT_EQ(ErrorOf("train: {seq_len: 3000000000}\n"),
            "spec.yaml:1:18: train.seq_len: expected an integer from -2147483648 to "
            "2147483647, got 3000000000 (out of range)");
  EXPECT_EQ(ErrorOf("train: {lr: \"3e-4\"}\n"),
            "spec.yaml:1:13: train.lr: expected a number, got the quoted string \"3e-4\"");
  EXPECT_EQ(ErrorOf("train: {seed: -1}\n"),
            "spec.yaml:1:15: train.seed: expected a non-negative integer, got \"-1\"");
  EXPECT_EQ(ErrorOf("priority: [1]\n"), "spec.yaml:1:11: priority: expected a number, got a list");
}

TEST(SpecYamlTest, WrongStructureNamesThePath) {
  EXPECT_EQ(ErrorOf("data: [a, b]\n"),
            "spec.yaml:1:7: data: expected a map (key: value), got a list");
  EXPECT_EQ(ErrorOf("data: {mixture: {dataset: a, weight: 1}}\n"),
            "spec.yaml:1:17: data.mixture: expected a list, got a map");
  EXPECT_EQ(ErrorOf("eval: {suites: general}\n"),
            "spec.yaml:1:16: eval.suites: expected a list, got \"general\"");
  EXPECT_EQ(ErrorOf("data: {mixture: [a]}\n"),
            "spec.yaml:1:18: data.mixture[0]: expected a map (key: value), got \"a\"");
  EXPECT_EQ(ErrorOf("data: {schedule: [{at: 0, weights: {a: x}}]}\n"),
            "spec.yaml:1:40: data.schedule[0].weights.a: expected a number, got \"x\"");
  EXPECT_EQ(ErrorOf("name: j\nguard:\n"),
            "spec.yaml:2:1: guard: no value given; give one or remove the key");
  EXPECT_EQ(ErrorOf("- name: j\n"), "spec.yaml:1:1: a job spec is a map (key: value), got a list");
}

TEST(SpecYamlTest, BadEnumValuesListTheAcceptedOnes) {
  EXPECT_EQ(ErrorOf("base: {model: m, stage: mid}\n"),
            "spec.yaml:1:25: base.stage: unknown stage \"mid\"; use pre-training, mid-training "
            "or post-training");
  EXPECT_EQ(ErrorOf("resources: {device: gpu}\n"),
            "spec.yaml:1:21: resources.device: unknown device kind \"gpu\"; use cpu or cuda");
  EXPECT_EQ(ErrorOf("train: {lr_decay: Cosine}\n"),
            "spec.yaml:1:19: train.lr_decay: unknown lr_decay \"Cosine\"; use cosine, linear or "
            "constant");
}

TEST(SpecYamlTest, DuplicateKeysAreErrors) {
  EXPECT_EQ(ErrorOf("name: a\npriority: 1\nname: b\n"),
            "spec.yaml:3:1: duplicate key \"name\" at top level (first at 1:1)");
  EXPECT_EQ(ErrorOf("train: {steps: 1, steps: 2}\n"),
            "spec.yaml:1:19: duplicate key \"steps\" in train (first at 1:9)");
  EXPECT_EQ(ErrorOf("data: {schedule: [{at: 0, weights: {a: 1, a: 2}}]}\n"),
            "spec.yaml:1:43: duplicate key \"a\" in data.schedule[0].weights (first at 1:37)");
}

TEST(SpecYamlTest, SyntaxErrorsReportTheLine) {
  EXPECT_THAT(ErrorOf("name: j\ntrain: {steps: 1\nresources: {ranks: 2}\n"),
              AllOf(StartsWith("spec.yaml:"), HasSubstr("YAML syntax error")));
  EXPECT_EQ(ErrorOf("name: j\n  train: 1\n"),
            "spec.yaml:2:8: YAML syntax error: illegal map value");
}

TEST(SpecYamlTest, EveryProblemIsReportedOneALine) {
  EXPECT_EQ(ErrorOf("nme: j\ntrain: {steps: x}\nresources: {device: tpu}\n"),
            "spec.yaml:1:1: unknown key \"nme\" at top level; allowed: name, base, model, data, "
            "train, resources, checkpoint, eval, guard, promote, priority, max_restarts, stage\n"
            "spec.yaml:2:16: train.steps: expected an integer, got \"x\"\n"
            "spec.yaml:3:21: resources.device: unknown device kind \"tpu\"; use cpu or cuda");
}

TEST(SpecYamlTest, EmptyAndMultiDocumentInputsAreRejected) {
  EXPECT_EQ(ErrorOf(""), "spec.yaml: the job spec is empty");
  EXPECT_EQ(ErrorOf("# nothing\n"), "spec.yaml: the job spec is empty");
  EXPECT_THAT(ErrorOf("name: a\n---\nname: b\n"),
              HasSubstr("a job spec is one YAML document, found 2"));
}

TEST(SpecYamlTest, UntrustedTextIsEscapedAndBounded) {
  const std::string message = ErrorOf("\"bad\\x01key" + std::string(200, 'k') + "\": 1\n");
  EXPECT_THAT(message, HasSubstr("unknown key \"bad\\x01key"));
  EXPECT_LT(message.size(), 400u);
}

}  // namespace
}  // namespace forge::cli
