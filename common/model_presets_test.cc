#include "common/model_presets.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr ModelShape kTiny{.layers = 4, .heads = 4, .width = 256, .context = 128, .vocab = 256};
constexpr ModelShape kGpt2{
    .layers = 12, .heads = 12, .width = 768, .context = 1024, .vocab = 50304};

TEST(ModelPresetsTest, PresetsHaveTheDocumentedShapes) {
  EXPECT_THAT(PresetNames(), ElementsAre("tiny", "gpt2-124m-shape"));
  auto tiny = PresetShape("tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(*tiny, kTiny);
  auto gpt2 = PresetShape("gpt2-124m-shape");
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ(*gpt2, kGpt2);
}

TEST(ModelPresetsTest, UnknownPresetListsTheKnownOnes) {
  auto shape = PresetShape("huge");
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(),
            "unknown model preset \"huge\"; known presets: tiny, gpt2-124m-shape");
}

TEST(ModelPresetsTest, ResolvesAPresetAlone) {
  forge::v1::ModelSpec spec;
  spec.set_preset("tiny");
  auto shape = ResolveModelShape(spec);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(*shape, kTiny);
}

TEST(ModelPresetsTest, OverridesReplaceOnlyTheirOwnField) {
  forge::v1::ModelSpec spec;
  spec.set_preset("tiny");
  spec.set_layers(2);
  spec.set_context(512);
  auto shape = ResolveModelShape(spec);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(*shape, (ModelShape{.layers = 2, .heads = 4, .width = 256, .context = 512,
                                .vocab = 256}));
}

TEST(ModelPresetsTest, ResolvesExplicitNumbersWithoutAPreset) {
  forge::v1::ModelSpec spec;
  spec.set_layers(6);
  spec.set_heads(8);
  spec.set_width(512);
  spec.set_context(256);
  spec.set_vocab(1000);
  auto shape = ResolveModelShape(spec);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(*shape, (ModelShape{.layers = 6, .heads = 8, .width = 512, .context = 256,
                                .vocab = 1000}));
}

TEST(ModelPresetsTest, EmptySpecAsksForAPresetOrTheNumbers) {
  auto shape = ResolveModelShape(forge::v1::ModelSpec());
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(),
            "model: give a preset (tiny, gpt2-124m-shape) or layers/heads/width/context/vocab");
}

TEST(ModelPresetsTest, PartialNumbersWithoutAPresetNameTheMissingOnes) {
  forge::v1::ModelSpec spec;
  spec.set_layers(2);
  spec.set_width(64);
  spec.set_context(64);
  auto shape = ResolveModelShape(spec);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(), HasSubstr("(missing heads, vocab)"));
}

TEST(ModelPresetsTest, UnknownPresetInSpecNamesTheField) {
  forge::v1::ModelSpec spec;
  spec.set_preset("gpt5");
  auto shape = ResolveModelShape(spec);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(),
            "model.preset \"gpt5\" is not a preset; use one of tiny, gpt2-124m-shape");
}

TEST(ModelPresetsTest, ReportsEveryOutOfRangeFieldAndHeadsNotDividingWidth) {
  forge::v1::ModelSpec spec;
  spec.set_preset("tiny");
  spec.set_layers(0);
  spec.set_heads(129);
  spec.set_width(16385);
  spec.set_context(7);
  spec.set_vocab(1048577);
  std::vector<std::string> problems;
  EXPECT_FALSE(ResolveModelShape(spec, &problems).has_value());
  EXPECT_THAT(problems,
              ElementsAre("model.layers must be in 1..96 (got 0)",
                          "model.heads must be in 1..128 (got 129)",
                          "model.width must be in 8..16384 (got 16385)",
                          "model.context must be in 8..65536 (got 7)",
                          "model.vocab must be in 2..1048576 (got 1048577)",
                          "model.heads must divide model.width (got heads 129, width 16385)"));
}

TEST(ModelPresetsTest, HeadsMustDivideWidth) {
  forge::v1::ModelSpec spec;
  spec.set_preset("tiny");
  spec.set_heads(3);
  auto shape = ResolveModelShape(spec);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(),
            "model.heads must divide model.width (got heads 3, width 256)");
}

TEST(ModelPresetsTest, BoundsAreInclusive) {
  forge::v1::ModelSpec spec;
  spec.set_layers(96);
  spec.set_heads(128);
  spec.set_width(16384);
  spec.set_context(8);
  spec.set_vocab(2);
  EXPECT_TRUE(ResolveModelShape(spec).ok());
}

TEST(ModelPresetsTest, ParameterCountMatchesGpt2Small) {
  // The published GPT-2 small count (vocab 50257, tied head).
  EXPECT_EQ(ParameterCount({.layers = 12, .heads = 12, .width = 768, .context = 1024,
                            .vocab = 50257}),
            124439808);
  // Padding the vocabulary to 50304 adds 47 rows of 768.
  EXPECT_EQ(ParameterCount(kGpt2), 124439808 + 47 * 768);
}

TEST(ModelPresetsTest, TrainingFlopsPerTokenIsNanoGptsEstimate) {
  // GPT-2 small: N = 124,439,808 less wpe's 1024 x 768 = 123,653,376; 6N = 741,920,256;
  // 12 x 12 layers x 768 x 1024 = 113,246,208.
  const ModelShape gpt2{.layers = 12, .heads = 12, .width = 768, .context = 1024, .vocab = 50257};
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(gpt2, 1024), 741920256.0 + 113246208.0);
  // Shorter sequences: only the attention term shrinks.
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(gpt2, 256), 741920256.0 + 113246208.0 / 4);
}

TEST(ModelPresetsTest, ParameterCountOfTiny) {
  // (256 + 128) * 256 embeddings + 4 * (12 * 256^2 + 13 * 256) + 2 * 256 final LayerNorm.
  EXPECT_EQ(ParameterCount(kTiny), 3257856);
}

TEST(ModelPresetsTest, ParameterCountDoesNotOverflowAtTheLimits) {
  ModelShape big{.layers = kMaxLayers, .heads = kMaxHeads, .width = kMaxWidth,
                 .context = kMaxContext, .vocab = kMaxVocab};
  const int64_t w = kMaxWidth;
  EXPECT_EQ(ParameterCount(big), (int64_t{kMaxVocab} + kMaxContext) * w +
                                     kMaxLayers * (12 * w * w + 13 * w) + 2 * w);
  EXPECT_GT(ParameterCount(big), int64_t{1} << 31);
}

}  // namespace
}  // namespace forge
