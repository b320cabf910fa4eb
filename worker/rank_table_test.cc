#include "worker/rank_table.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

forge::v1::Device MakeDevice(const std::string& id, forge::v1::DeviceKind kind) {
  forge::v1::Device d;
  d.set_id(id);
  d.set_kind(kind);
  return d;
}

forge::v1::Assignment Assign(const std::string& job, int attempt, int rank,
                             const std::string& device,
                             forge::v1::DeviceKind kind = forge::v1::DEVICE_KIND_CPU) {
  forge::v1::Assignment a;
  a.set_job_id(job);
  a.set_attempt(attempt);
  a.set_rank(rank);
  a.set_world_size(2);
  a.set_device(device);
  a.mutable_spec()->mutable_resources()->set_device(kind);
  return a;
}

class RankTableTest : public ::testing::Test {
 protected:
  RankTable table_{{MakeDevice("cpu:0", forge::v1::DEVICE_KIND_CPU),
                    MakeDevice("cpu:1", forge::v1::DEVICE_KIND_CPU),
                    MakeDevice("cuda:0", forge::v1::DEVICE_KIND_CUDA)}};
};

TEST_F(RankTableTest, AcceptedRankIsHeldAsAssigned) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 0, "cpu:1"), nullptr).ok());
  std::vector<forge::v1::RankInfo> held = table_.Snapshot();
  ASSERT_THAT(held, SizeIs(1));
  EXPECT_EQ(held[0].job_id(), "j1");
  EXPECT_EQ(held[0].attempt(), 1);
  EXPECT_EQ(held[0].rank(), 0);
  EXPECT_EQ(held[0].device(), "cpu:1");
  EXPECT_EQ(held[0].phase(), "assigned");
}

TEST_F(RankTableTest, ResendIsAcceptedOnce) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 0, "cpu:0"), nullptr).ok());
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 0, "cpu:0"), nullptr).ok());
  EXPECT_THAT(table_.Snapshot(), SizeIs(1));
}

TEST_F(RankTableTest, UnknownDeviceIsRefused) {
  absl::Status s =
      table_.Accept(Assign("j1", 1, 0, "cuda:3", forge::v1::DEVICE_KIND_CUDA), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("device 'cuda:3' is not on this worker"));
  EXPECT_THAT(s.message(), HasSubstr("cpu:0, cpu:1, cuda:0"));
  EXPECT_THAT(table_.Snapshot(), IsEmpty());
}

TEST_F(RankTableTest, KindMismatchIsRefused) {
  absl::Status s = table_.Accept(Assign("j1", 1, 0, "cuda:0", forge::v1::DEVICE_KIND_CPU), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cuda:0 is a cuda device but the job asks for cpu"));
  // An unspecified kind means cpu, as in JobSpec.
  s = table_.Accept(Assign("j1", 1, 0, "cuda:0", forge::v1::DEVICE_KIND_UNSPECIFIED), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      table_.Accept(Assign("j1", 1, 0, "cuda:0", forge::v1::DEVICE_KIND_CUDA), nullptr).ok());
}

TEST_F(RankTableTest, RankOutsideWorldIsRefused) {
  forge::v1::Assignment a = Assign("j1", 1, 2, "cpu:0");
  EXPECT_EQ(table_.Accept(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.set_job_id("");
  a.set_rank(0);
  EXPECT_EQ(table_.Accept(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RankTableTest, StaleAttemptIsRefused) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 2, 0, "cpu:0"), nullptr).ok());
  absl::Status s = table_.Accept(Assign("j1", 1, 1, "cpu:1"), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("stale attempt 1 of job j1: this worker holds its attempt 2"));
  EXPECT_THAT(table_.Snapshot(), SizeIs(1));
}

TEST_F(RankTableTest, NewerAttemptSupersedesOlderRanksOfTheJob) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 0, "cpu:0"), nullptr).ok());
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 1, "cpu:1"), nullptr).ok());
  std::vector<forge::v1::RankInfo> superseded;
  // Same device as attempt 1's rank 0: not busy, since that rank is superseded.
  ASSERT_TRUE(table_.Accept(Assign("j1", 2, 0, "cpu:0"), &superseded).ok());
  EXPECT_THAT(superseded, SizeIs(2));
  std::vector<forge::v1::RankInfo> held = table_.Snapshot();
  ASSERT_THAT(held, SizeIs(1));
  EXPECT_EQ(held[0].attempt(), 2);
}

TEST_F(RankTableTest, BusyDeviceIsRefused) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 1, 0, "cpu:0"), nullptr).ok());
  absl::Status other_job = table_.Accept(Assign("j2", 1, 0, "cpu:0"), nullptr);
  EXPECT_EQ(other_job.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other_job.message(), HasSubstr("device cpu:0 is busy with job j1 rank 0"));
  absl::Status same_job = table_.Accept(Assign("j1", 1, 1, "cpu:0"), nullptr);
  EXPECT_EQ(same_job.code(), absl::StatusCode::kFailedPrecondition);
  absl::Status moved = table_.Accept(Assign("j1", 1, 0, "cpu:1"), nullptr);
  EXPECT_EQ(moved.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(moved.message(), HasSubstr("already held on cpu:0"));
}

TEST_F(RankTableTest, StopDropsAttemptsUpToTheGivenOne) {
  ASSERT_TRUE(table_.Accept(Assign("j1", 3, 0, "cpu:0"), nullptr).ok());
  ASSERT_TRUE(table_.Accept(Assign("j2", 1, 0, "cpu:1"), nullptr).ok());
  EXPECT_THAT(table_.Stop("j1", 2), IsEmpty());  // attempt 3 is newer than the stop
  std::vector<forge::v1::RankInfo> stopped = table_.Stop("j1", 3);
  ASSERT_THAT(stopped, SizeIs(1));
  EXPECT_EQ(stopped[0].job_id(), "j1");
  std::vector<forge::v1::RankInfo> held = table_.Snapshot();
  ASSERT_THAT(held, SizeIs(1));
  EXPECT_EQ(held[0].job_id(), "j2");
}

}  // namespace
}  // namespace forge::worker
