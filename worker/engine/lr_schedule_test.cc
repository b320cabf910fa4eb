#include "worker/engine/lr_schedule.h"

#include "gtest/gtest.h"

namespace forge::engine {
namespace {

constexpr double kTol = 1e-12;

TEST(LearningRate, WarmupIsLinearUpToPeak) {
  const LrSchedule s{
      .lr = 1e-3, .warmup_steps = 10, .decay = LrDecay::kCosine, .min_lr = 1e-4, .steps = 110};
  EXPECT_NEAR(LearningRate(0, s), 1e-4, kTol);
  EXPECT_NEAR(LearningRate(4, s), 5e-4, kTol);
  EXPECT_NEAR(LearningRate(9, s), 1e-3, kTol);
  EXPECT_NEAR(LearningRate(10, s), 1e-3, kTol);  // first decay step, r = 0
}

TEST(LearningRate, CosineLinearAndConstantDecays) {
  LrSchedule s{
      .lr = 1e-3, .warmup_steps = 10, .decay = LrDecay::kCosine, .min_lr = 1e-4, .steps = 110};
  EXPECT_NEAR(LearningRate(60, s), 5.5e-4, kTol);                         // r = 1/2
  EXPECT_NEAR(LearningRate(35, s), 1e-4 + 9e-4 * 0.853553390593, 1e-12);  // r = 1/4
  EXPECT_NEAR(LearningRate(110, s), 1e-4, kTol);
  EXPECT_NEAR(LearningRate(500, s), 1e-4, kTol);  // past the end: stays at the floor
  s.decay = LrDecay::kLinear;
  EXPECT_NEAR(LearningRate(35, s), 1e-3 - 9e-4 * 0.25, kTol);
  EXPECT_NEAR(LearningRate(110, s), 1e-4, kTol);
  s.decay = LrDecay::kConstant;
  EXPECT_NEAR(LearningRate(35, s), 1e-3, kTol);
  EXPECT_NEAR(LearningRate(109, s), 1e-3, kTol);
  EXPECT_NEAR(LearningRate(3, s), 4e-4, kTol);  // warmup still applies
}

TEST(LearningRate, NoWarmupAndAllWarmup) {
  const LrSchedule none{
      .lr = 2.0, .warmup_steps = 0, .decay = LrDecay::kLinear, .min_lr = 0.0, .steps = 4};
  EXPECT_NEAR(LearningRate(0, none), 2.0, kTol);
  EXPECT_NEAR(LearningRate(2, none), 1.0, kTol);
  const LrSchedule all{
      .lr = 2.0, .warmup_steps = 4, .decay = LrDecay::kCosine, .min_lr = 0.5, .steps = 4};
  EXPECT_NEAR(LearningRate(3, all), 2.0, kTol);
  EXPECT_NEAR(LearningRate(4, all), 0.5, kTol);
}

TEST(LearningRate, DecayFromProto) {
  EXPECT_EQ(LrDecayFromProto(forge::v1::LR_DECAY_UNSPECIFIED), LrDecay::kCosine);
  EXPECT_EQ(LrDecayFromProto(forge::v1::LR_DECAY_COSINE), LrDecay::kCosine);
  EXPECT_EQ(LrDecayFromProto(forge::v1::LR_DECAY_LINEAR), LrDecay::kLinear);
  EXPECT_EQ(LrDecayFromProto(forge::v1::LR_DECAY_CONSTANT), LrDecay::kConstant);
}

}  // namespace
}  // namespace forge::engine
