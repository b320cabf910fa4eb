#include "coordinator/rendezvous.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "coordinator/rank_tokens.h"

namespace forge::coordinator {
namespace {

TEST(RendezvousStoreTest, GetWaitsForSetAndScopesAreSeparate) {
  RendezvousStore store;
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store.Set("j/1", "rank0", "addr0").ok());
  });
  absl::StatusOr<std::string> v = store.Get("j/1", "rank0", absl::Seconds(5));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "addr0");
  // Another attempt of the same job never sees it.
  absl::StatusOr<std::string> other = store.Get("j/2", "rank0", absl::Milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(other.status())) << other.status();
  store.DropScopes("j/");
  EXPECT_TRUE(absl::IsDeadlineExceeded(store.Get("j/1", "rank0", absl::Milliseconds(1)).status()));
}

TEST(RendezvousStoreTest, RefusesOversizedValuesAndEmptyKeys) {
  RendezvousStore store;
  EXPECT_TRUE(absl::IsInvalidArgument(store.Set("s", "", "v")));
  EXPECT_TRUE(absl::IsInvalidArgument(
      store.Set("s", "k", std::string(RendezvousStore::kMaxValueBytes + 1, 'x'))));
}

TEST(RendezvousStoreTest, ScopeByteCapAndDroppingEarlierAttempts) {
  RendezvousStore store;
  const std::string big(RendezvousStore::kMaxValueBytes, 'x');
  absl::Status s;
  int i = 0;
  while ((s = store.Set("j/1", "k" + std::to_string(i++), big)).ok()) {
  }
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_LE(i, 66);  // 4 MiB / 64 KiB, plus the refused one
  ASSERT_TRUE(store.Set("j/2", "k", "v").ok());
  store.DropOtherScopes("j/", "j/2");
  EXPECT_TRUE(absl::IsDeadlineExceeded(store.Get("j/1", "k0", absl::Milliseconds(1)).status()));
  EXPECT_TRUE(store.Get("j/2", "k", absl::Milliseconds(1)).ok());
}

TEST(RankTokensTest, TokenIsScopedToOneAttemptAndSurvivesReopen) {
  char tmpl[] = "/tmp/forge-rank-tokens-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string key = dir + "/rank-token.key";
  absl::StatusOr<std::unique_ptr<RankTokens>> a = RankTokens::Open(key);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string t = (*a)->TokenFor("j-1", 2, 0);
  EXPECT_TRUE((*a)->Verify("Bearer " + t, "j-1", 2, 0).ok());
  EXPECT_TRUE(absl::IsUnauthenticated((*a)->Verify("Bearer " + t, "j-1", 3, 0)));
  EXPECT_TRUE(absl::IsUnauthenticated((*a)->Verify("Bearer " + t, "j-2", 2, 0)));
  EXPECT_TRUE(absl::IsUnauthenticated((*a)->Verify("Bearer " + t, "j-1", 2, 1)));  // rank 1
  EXPECT_TRUE(absl::IsUnauthenticated((*a)->Verify(t, "j-1", 2, 0)));  // no "Bearer "
  absl::StatusOr<std::unique_ptr<RankTokens>> b = RankTokens::Open(key);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->TokenFor("j-1", 2, 0), t);  // a restarted coordinator accepts running ranks
}

}  // namespace
}  // namespace forge::coordinator
