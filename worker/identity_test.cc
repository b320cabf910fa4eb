#include "worker/identity.h"

#include <stdlib.h>

#include <regex>
#include <string>

#include "common/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::worker {
namespace {

using ::testing::HasSubstr;

std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "/identity_test.XXXXXX";
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

TEST(ReadTokenFileTest, TrimsWhitespace) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomic(dir + "/tok", "  forge_worker_abc \n", 0600).ok());
  absl::StatusOr<std::string> t = ReadTokenFile(dir + "/tok");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "forge_worker_abc");
}

TEST(ReadTokenFileTest, MissingEmptyAndUnsetNameTheFlag) {
  const std::string dir = TempDir();
  absl::StatusOr<std::string> missing = ReadTokenFile(dir + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("--token-file=" + dir + "/nope"));
  ASSERT_TRUE(WriteFileAtomic(dir + "/empty", " \n\t", 0600).ok());
  absl::StatusOr<std::string> empty = ReadTokenFile(dir + "/empty");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("is empty"));
  absl::StatusOr<std::string> unset = ReadTokenFile("");
  EXPECT_THAT(unset.status().message(), HasSubstr("--token-file is required"));
}

TEST(LoadOrCreateWorkerIdTest, CreatedOnceThenReused) {
  const std::string dir = TempDir();
  absl::StatusOr<std::string> first = LoadOrCreateWorkerId(dir, "gpu-host.example.com");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(std::regex_match(*first, std::regex("gpu-host\\.example\\.com-[0-9a-f]{6}")))
      << *first;
  absl::StatusOr<std::string> again = LoadOrCreateWorkerId(dir, "another-name");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *first);
}

TEST(LoadOrCreateWorkerIdTest, HostnameIsMadeAValidId) {
  const std::string dir = TempDir();
  absl::StatusOr<std::string> id = LoadOrCreateWorkerId(dir, "_weird host!");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_TRUE(std::regex_match(*id, std::regex("weird-host--[0-9a-f]{6}"))) << *id;
}

TEST(LoadOrCreateWorkerIdTest, CorruptStoredIdIsReported) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomic(dir + "/worker_id", "not valid!\n").ok());
  absl::StatusOr<std::string> id = LoadOrCreateWorkerId(dir, "h");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(id.status().message(), HasSubstr("delete it"));
}

}  // namespace
}  // namespace forge::worker
