#include "coordinator/alert_events.h"

#include "common/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using ::testing::HasSubstr;

forge::v1::Job JobIn(forge::v1::JobState state) {
  forge::v1::Job j;
  j.set_id("j-0123456789abcdef");
  j.set_tenant("acme");
  j.mutable_spec()->set_name("support-expert");
  j.mutable_spec()->set_max_restarts(3);
  j.mutable_spec()->mutable_train()->set_steps(500);
  j.set_state(state);
  j.set_attempt(2);
  j.set_restarts(1);
  j.set_message("worker w1 lost; restart 1 of 3");
  j.mutable_progress()->set_step(120);
  *j.mutable_update_time() = ToProtoTime(absl::FromUnixSeconds(1764000000));
  return j;
}

TEST(AlertEventsTest, FailedAndRestartedJobs) {
  auto restarted =
      AlertForTransition(JobIn(forge::v1::JOB_STATE_RESTARTING), forge::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(restarted.has_value());
  EXPECT_EQ(restarted->type, "job_restarted");
  EXPECT_EQ(restarted->severity, "warning");
  EXPECT_EQ(restarted->summary,
            "job j-0123456789abcdef (acme/support-expert) is restarting (restart 1 of 3): worker "
            "w1 lost; restart 1 of 3");
  EXPECT_EQ(restarted->details["job"]["id"], "j-0123456789abcdef");
  EXPECT_EQ(restarted->details["job"]["state"], "restarting");
  EXPECT_EQ(restarted->details["job"]["update_time"], "2025-11-24T16:00:00.000Z");

  auto failed =
      AlertForTransition(JobIn(forge::v1::JOB_STATE_FAILED), forge::v1::JOB_STATE_RESTARTING);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->type, "job_failed");
  EXPECT_EQ(failed->severity, "critical");
  EXPECT_THAT(failed->summary, HasSubstr("failed at step 120"));
  // Failing again while restarting uses another restart: told. Ordinary changes are not.
  auto again =
      AlertForTransition(JobIn(forge::v1::JOB_STATE_RESTARTING), forge::v1::JOB_STATE_RESTARTING);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->type, "job_restarted");
  EXPECT_FALSE(
      AlertForTransition(JobIn(forge::v1::JOB_STATE_RUNNING), forge::v1::JOB_STATE_QUEUED));
  EXPECT_FALSE(
      AlertForTransition(JobIn(forge::v1::JOB_STATE_CANCELLED), forge::v1::JOB_STATE_RUNNING));
}

TEST(AlertEventsTest, OnlyABlockedGuardAlertsOnSuccess) {
  forge::v1::Job j = JobIn(forge::v1::JOB_STATE_SUCCEEDED);
  EXPECT_FALSE(AlertForTransition(j, forge::v1::JOB_STATE_RUNNING)) << "no guard";
  j.mutable_spec()->mutable_guard()->set_suite("general-english");
  j.mutable_spec()->mutable_promote()->set_channel("acme-prod");
  j.mutable_guard()->set_suite("general-english");
  j.mutable_guard()->set_passed(true);
  EXPECT_FALSE(AlertForTransition(j, forge::v1::JOB_STATE_RUNNING)) << "passed";
  j.mutable_guard()->set_passed(false);
  j.mutable_guard()->set_base_loss(2.0);
  j.mutable_guard()->set_loss(3.0);
  j.mutable_guard()->set_regression(0.5);
  j.mutable_guard()->set_max_regression(0.02);
  j.mutable_guard()->set_message("general-english +50.0 % > +2.0 %");
  auto blocked = AlertForTransition(j, forge::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(blocked.has_value());
  EXPECT_EQ(blocked->type, "guard_blocked");
  EXPECT_THAT(blocked->summary, HasSubstr("blocked the promotion to acme-prod"));
  EXPECT_EQ(blocked->details["guard"]["regression"], 0.5);
  EXPECT_EQ(blocked->details["guard"]["channel"], "acme-prod");
}

TEST(AlertEventsTest, WorkerLostNamesItsJobs) {
  forge::v1::Worker w;
  w.set_id("w1");
  w.set_hostname("gpu-node-7");
  w.add_devices()->set_id("cuda:0");
  auto* r = w.add_ranks();
  r->set_job_id("j-a");
  w.add_ranks()->set_job_id("j-a");
  w.add_ranks()->set_job_id("j-b");
  AlertEvent e = WorkerLostAlert(w, absl::Milliseconds(3500));
  EXPECT_EQ(e.type, "worker_lost");
  EXPECT_EQ(e.severity, "critical");
  EXPECT_EQ(e.summary,
            "worker w1 (gpu-node-7) lost: no heartbeat for 3.5 s; the ranks it ran were stopped, "
            "their jobs restart or fail: j-a, j-b");
  EXPECT_EQ(e.details["worker"]["jobs"], nlohmann::json({"j-a", "j-b"}));
  w.clear_ranks();
  EXPECT_EQ(WorkerLostAlert(w, absl::Seconds(4)).severity, "warning");
}

TEST(AlertEventsTest, ScheduleSkipped) {
  forge::v1::Schedule s;
  s.set_id("s-1");
  s.set_tenant("acme");
  s.set_name("nightly");
  forge::v1::ScheduleRun run;
  run.set_outcome(forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);
  run.set_message("no new data since the run of 2026-11-23T02:00Z");
  *run.mutable_slot_time() = ToProtoTime(absl::FromUnixSeconds(1764000000));
  AlertEvent e = ScheduleSkippedAlert(s, run);
  EXPECT_EQ(e.type, "schedule_skipped");
  EXPECT_EQ(e.severity, "info");
  EXPECT_EQ(e.details["schedule"]["reason"], "no_new_data");
  run.set_outcome(forge::v1::SCHEDULE_RUN_FAILED);
  e = ScheduleSkippedAlert(s, run);
  EXPECT_EQ(e.severity, "warning");
  EXPECT_EQ(e.details["schedule"]["reason"], "submission_refused");
  EXPECT_THAT(e.summary, HasSubstr("schedule s-1 (acme/nightly) skipped its"));
}

TEST(AlertEventsTest, OutboxRowRoundTrip) {
  AlertEvent e =
      *AlertForTransition(JobIn(forge::v1::JOB_STATE_FAILED), forge::v1::JOB_STATE_RUNNING);
  e.id = "a-0123";
  e.time = absl::FromUnixMillis(1764000000123);
  AlertRecord r = ToRecord(e);
  EXPECT_EQ(r.id, "a-0123");
  absl::StatusOr<AlertEvent> back = FromRecord(r);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, e.id);
  EXPECT_EQ(back->type, "job_failed");
  EXPECT_EQ(back->severity, e.severity);
  EXPECT_EQ(back->summary, e.summary);
  EXPECT_EQ(back->details, e.details);
  EXPECT_EQ(back->time, e.time);
  EXPECT_EQ(FromRecord({"a-1", "not json"}).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace forge::coordinator
