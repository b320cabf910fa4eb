#include "common/spec_names.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

using ::testing::HasSubstr;

TEST(SpecNamesTest, StageRoundTrips) {
  for (auto stage : {forge::v1::STAGE_PRE_TRAINING, forge::v1::STAGE_MID_TRAINING,
                     forge::v1::STAGE_POST_TRAINING}) {
    auto parsed = ParseStage(StageName(stage));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, stage);
  }
  EXPECT_EQ(StageName(forge::v1::STAGE_PRE_TRAINING), "pre-training");
  EXPECT_EQ(StageName(forge::v1::STAGE_MID_TRAINING), "mid-training");
  EXPECT_EQ(StageName(forge::v1::STAGE_POST_TRAINING), "post-training");
}

TEST(SpecNamesTest, DeviceKindRoundTrips) {
  EXPECT_EQ(DeviceKindName(forge::v1::DEVICE_KIND_CPU), "cpu");
  EXPECT_EQ(DeviceKindName(forge::v1::DEVICE_KIND_CUDA), "cuda");
  EXPECT_EQ(*ParseDeviceKind("cpu"), forge::v1::DEVICE_KIND_CPU);
  EXPECT_EQ(*ParseDeviceKind("cuda"), forge::v1::DEVICE_KIND_CUDA);
}

TEST(SpecNamesTest, LrDecayRoundTrips) {
  EXPECT_EQ(LrDecayName(forge::v1::LR_DECAY_COSINE), "cosine");
  EXPECT_EQ(LrDecayName(forge::v1::LR_DECAY_LINEAR), "linear");
  EXPECT_EQ(LrDecayName(forge::v1::LR_DECAY_CONSTANT), "constant");
  EXPECT_EQ(*ParseLrDecay("cosine"), forge::v1::LR_DECAY_COSINE);
  EXPECT_EQ(*ParseLrDecay("linear"), forge::v1::LR_DECAY_LINEAR);
  EXPECT_EQ(*ParseLrDecay("constant"), forge::v1::LR_DECAY_CONSTANT);
}

TEST(SpecNamesTest, UnspecifiedAndOutOfRangeValuesPrintAsUnspecified) {
  EXPECT_EQ(StageName(forge::v1::STAGE_UNSPECIFIED), "unspecified");
  EXPECT_EQ(DeviceKindName(forge::v1::DEVICE_KIND_UNSPECIFIED), "unspecified");
  EXPECT_EQ(LrDecayName(forge::v1::LR_DECAY_UNSPECIFIED), "unspecified");
  EXPECT_EQ(StageName(static_cast<forge::v1::Stage>(42)), "unspecified");
}

TEST(SpecNamesTest, ParseRejectsUnknownSpellingsAndListsTheKnownOnes) {
  auto stage = ParseStage("Pre-Training");
  EXPECT_EQ(stage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stage.status().message(),
            "unknown stage \"Pre-Training\"; use pre-training, mid-training or post-training");
  auto device = ParseDeviceKind("gpu");
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(device.status().message(), HasSubstr("cpu or cuda"));
  auto decay = ParseLrDecay("unspecified");
  EXPECT_EQ(decay.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decay.status().message(), HasSubstr("cosine, linear or constant"));
  EXPECT_EQ(ParseLrDecay("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpecNamesTest, ParseBoundsTheEchoedText) {
  std::string long_text(1000, 'x');
  auto stage = ParseStage(long_text);
  ASSERT_FALSE(stage.ok());
  EXPECT_LT(stage.status().message().size(), 200u);
  EXPECT_THAT(stage.status().message(), HasSubstr("...\""));
}

}  // namespace
}  // namespace forge
