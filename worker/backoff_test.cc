#include "worker/backoff.h"

#include "gtest/gtest.h"

namespace forge::worker {
namespace {

TEST(BackoffTest, CeilingDoublesUpToTheCap) {
  Backoff b({absl::Milliseconds(200), absl::Seconds(5)}, 1);
  const absl::Duration expected[] = {absl::Milliseconds(200),  absl::Milliseconds(400),
                                     absl::Milliseconds(800),  absl::Milliseconds(1600),
                                     absl::Milliseconds(3200), absl::Seconds(5),
                                     absl::Seconds(5)};
  for (absl::Duration ceiling : expected) {
    EXPECT_EQ(b.Ceiling(), ceiling);
    const absl::Duration d = b.Next();
    EXPECT_GE(d, absl::ZeroDuration());
    EXPECT_LE(d, ceiling);
  }
  for (int i = 0; i < 100; ++i) EXPECT_LE(b.Next(), absl::Seconds(5));
}

TEST(BackoffTest, ResetReturnsToTheInitialCeiling) {
  Backoff b({absl::Milliseconds(200), absl::Seconds(5)}, 1);
  for (int i = 0; i < 10; ++i) b.Next();
  b.Reset();
  EXPECT_EQ(b.Ceiling(), absl::Milliseconds(200));
}

TEST(BackoffTest, JitterSpreadsDelays) {
  // Full jitter: over many draws under one ceiling, delays cover both halves of the range.
  Backoff b({absl::Seconds(1), absl::Seconds(1)}, 7);
  int low = 0, high = 0;
  for (int i = 0; i < 200; ++i) (b.Next() < absl::Milliseconds(500) ? low : high)++;
  EXPECT_GT(low, 20);
  EXPECT_GT(high, 20);
}

TEST(BackoffTest, SameSeedSameDelays) {
  Backoff a({absl::Milliseconds(200), absl::Seconds(5)}, 42);
  Backoff b({absl::Milliseconds(200), absl::Seconds(5)}, 42);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.Next(), b.Next());
}

}  // namespace
}  // namespace forge::worker
