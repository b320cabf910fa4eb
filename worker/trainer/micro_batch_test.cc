#include "worker/trainer/micro_batch.h"

#include <gtest/gtest.h>

namespace forge::trainer {
namespace {

TEST(ChooseMicroBatchTest, TheLargestDivisorUpToTheCap) {
  EXPECT_EQ(ChooseMicroBatch(8, kCpuMicroBatchCap), 8);
  EXPECT_EQ(ChooseMicroBatch(512, kCpuMicroBatchCap), 8);
  EXPECT_EQ(ChooseMicroBatch(12, kCpuMicroBatchCap), 6);
  EXPECT_EQ(ChooseMicroBatch(3, kCpuMicroBatchCap), 3);
  EXPECT_EQ(ChooseMicroBatch(11, kCpuMicroBatchCap), 1);  // a prime above the cap
  EXPECT_EQ(ChooseMicroBatch(1, kCpuMicroBatchCap), 1);
  EXPECT_EQ(ChooseMicroBatch(512, kCudaMicroBatchCap), 64);
  EXPECT_EQ(ChooseMicroBatch(96, kCudaMicroBatchCap), 48);
}

TEST(ChooseMicroBatchTest, TheMemoryBudgetLowersIt) {
  const auto bytes = [](int m) { return static_cast<size_t>(m) * 100; };
  EXPECT_EQ(ChooseMicroBatch(512, 64, bytes, 6400), 64);
  EXPECT_EQ(ChooseMicroBatch(512, 64, bytes, 6399), 32);
  EXPECT_EQ(ChooseMicroBatch(512, 64, bytes, 1000), 8);
  EXPECT_EQ(ChooseMicroBatch(96, 64, bytes, 1000), 8);
  EXPECT_EQ(ChooseMicroBatch(90, 64, bytes, 1000), 10);
  EXPECT_EQ(ChooseMicroBatch(90, 64, bytes, 999), 9);
  // Even one sequence over the budget still runs as 1: the device's allocation says whether
  // it fits, naming train.micro_batch.
  EXPECT_EQ(ChooseMicroBatch(512, 64, bytes, 50), 1);
}

}  // namespace
}  // namespace forge::trainer
