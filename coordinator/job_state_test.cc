#include "coordinator/job_state.h"

#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::JobState;

constexpr JobState kAll[] = {
    forge::v1::JOB_STATE_QUEUED,    forge::v1::JOB_STATE_RUNNING,
    forge::v1::JOB_STATE_RESTARTING, forge::v1::JOB_STATE_SUCCEEDED,
    forge::v1::JOB_STATE_FAILED,    forge::v1::JOB_STATE_CANCELLED};

TEST(JobStateTest, ExactlyTheDesignedTransitionsAreAllowed) {
  const std::set<std::pair<JobState, JobState>> allowed = {
      {forge::v1::JOB_STATE_QUEUED, forge::v1::JOB_STATE_RUNNING},
      {forge::v1::JOB_STATE_QUEUED, forge::v1::JOB_STATE_CANCELLED},
      {forge::v1::JOB_STATE_QUEUED, forge::v1::JOB_STATE_FAILED},
      {forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_SUCCEEDED},
      {forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_FAILED},
      {forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_CANCELLED},
      {forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_RESTARTING},
      {forge::v1::JOB_STATE_RESTARTING, forge::v1::JOB_STATE_RUNNING},
      {forge::v1::JOB_STATE_RESTARTING, forge::v1::JOB_STATE_FAILED},
      {forge::v1::JOB_STATE_RESTARTING, forge::v1::JOB_STATE_CANCELLED},
  };
  for (JobState from : kAll) {
    for (JobState to : kAll) {
      absl::Status s = CheckTransition(from, to);
      EXPECT_EQ(s.ok(), allowed.count({from, to}) == 1)
          << JobStateName(from) << " -> " << JobStateName(to);
      if (!s.ok()) {
        EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
        EXPECT_NE(s.message().find(JobStateName(from)), absl::string_view::npos);
      }
    }
  }
}

TEST(JobStateTest, TerminalStatesHaveNoWayOut) {
  for (JobState from : kAll) {
    if (!IsTerminal(from)) continue;
    for (JobState to : kAll) EXPECT_FALSE(CheckTransition(from, to).ok());
  }
  EXPECT_TRUE(IsTerminal(forge::v1::JOB_STATE_SUCCEEDED));
  EXPECT_TRUE(IsTerminal(forge::v1::JOB_STATE_FAILED));
  EXPECT_TRUE(IsTerminal(forge::v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(IsTerminal(forge::v1::JOB_STATE_RESTARTING));
}

}  // namespace
}  // namespace forge::coordinator
