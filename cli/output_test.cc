// Table, age and JSON formatting, the job/fleet views, and the exit-code mapping.
#include "cli/output.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "cli/exit_codes.h"
#include "cli/fleet_view.h"
#include "cli/job_view.h"
#include "common/proto_time.h"

namespace forge::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

google::protobuf::Timestamp Ago(absl::Duration d) { return ToProtoTime(kNow - d); }

TEST(TableTest, AlignsColumnsAndLeavesNoTrailingBlanks) {
  Table table({"ID", "NAME", "MESSAGE"});
  table.AddRow({"j-1", "a-long-name", "x"});
  table.AddRow({"j-22", "b", ""});
  EXPECT_EQ(table.Render(),
            "ID    NAME         MESSAGE\n"
            "j-1   a-long-name  x\n"
            "j-22  b\n");
}

TEST(TableTest, CountsUtf8CodePointsForWidth) {
  Table table({"A", "B"});
  table.AddRow({"é—", "x"});
  EXPECT_EQ(table.Render(),
            "A   B\n"
            "é—  x\n");
}

TEST(FormatTest, ShortDurationsRoundDown) {
  EXPECT_EQ(FormatShortDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatShortDuration(absl::Milliseconds(3900)), "3s");
  EXPECT_EQ(FormatShortDuration(absl::Seconds(119)), "119s");
  EXPECT_EQ(FormatShortDuration(absl::Seconds(120)), "2m");
  EXPECT_EQ(FormatShortDuration(absl::Minutes(119)), "119m");
  EXPECT_EQ(FormatShortDuration(absl::Hours(5) + absl::Minutes(59)), "5h");
  EXPECT_EQ(FormatShortDuration(absl::Hours(50)), "2d");
  EXPECT_EQ(FormatShortDuration(absl::Seconds(-5)), "0s");  // clock skew
}

TEST(FormatTest, AgesAndTimestamps) {
  EXPECT_EQ(FormatAgo(Ago(absl::Seconds(3)), kNow), "3s ago");
  EXPECT_EQ(FormatAgo(google::protobuf::Timestamp(), kNow), "never");
  EXPECT_EQ(FormatAge(Ago(absl::Minutes(7)), kNow), "7m");
  EXPECT_EQ(FormatAge(google::protobuf::Timestamp(), kNow), "-");
  EXPECT_EQ(FormatTimestamp(Ago(absl::Seconds(90)), kNow), "2027-01-15 07:58:30 UTC (90s ago)");
  EXPECT_EQ(FormatTimestamp(google::protobuf::Timestamp(), kNow), "-");
}

TEST(FormatTest, OneLineFlattensAndTruncates) {
  EXPECT_EQ(OneLine("a\nb\tc", 10), "a b c");
  EXPECT_EQ(OneLine("abcdefghij", 10), "abcdefghij");
  EXPECT_EQ(OneLine("abcdefghijk", 10), "abcdefg...");
  EXPECT_EQ(OneLine("ééééééé", 5), "éé...");
}

TEST(FormatTest, EnumLabelsStripThePrefix) {
  EXPECT_EQ(JobStateName(forge::v1::JOB_STATE_RESTARTING), "RESTARTING");
  EXPECT_EQ(JobStateName(static_cast<forge::v1::JobState>(99)), "99");
  EXPECT_EQ(WorkerStateName(forge::v1::WORKER_STATE_DEAD), "DEAD");
  EXPECT_EQ(TokenKindName(forge::v1::TOKEN_KIND_WORKER), "worker");
}

TEST(FormatTest, ParseJobStateIgnoresCaseAndListsNames) {
  EXPECT_EQ(*ParseJobState("queued"), forge::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(*ParseJobState("Cancelled"), forge::v1::JOB_STATE_CANCELLED);
  absl::StatusOr<forge::v1::JobState> bad = ParseJobState("done");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ExitCodeFor(bad.status()), kExitUsage);
  EXPECT_EQ(bad.status().message(),
            "unknown job state \"done\"; use queued, running, restarting, succeeded, failed, "
            "cancelled");
}

TEST(FormatTest, JsonUsesProtoFieldNamesAndShowsDefaults) {
  forge::v1::Job job;
  job.set_id("j-1");
  job.set_state(forge::v1::JOB_STATE_RUNNING);
  job.mutable_spec()->mutable_resources()->set_ranks(2);
  absl::StatusOr<std::string> json = ToJson(job);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"trainer_attached\": false"));
  EXPECT_THAT(*json, HasSubstr("\"state\": \"JOB_STATE_RUNNING\""));
  EXPECT_THAT(*json, Not(HasSubstr("trainerAttached")));
  EXPECT_EQ(json->back(), '\n');
  forge::v1::Job back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &back).ok());
  EXPECT_EQ(back.spec().resources().ranks(), 2);
}

TEST(ExitCodeTest, MapsEveryOutcome) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeFor(UsageError("bad flag")), 2);
  EXPECT_TRUE(IsUsageError(UsageError("x")));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("x")));
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("spec.name ...")), 3);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("finished")), 3);
  EXPECT_EQ(ExitCodeFor(absl::AlreadyExistsError("tenant")), 3);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("job")), 4);
  EXPECT_EQ(ExitCodeFor(absl::UnauthenticatedError("token")), 5);
  EXPECT_EQ(ExitCodeFor(absl::PermissionDeniedError("admin only")), 5);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("down")), 6);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("slow")), 6);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("bug")), 1);
  EXPECT_EQ(ExitCodeFor(absl::UnknownError("?")), 1);
  EXPECT_THAT(std::string(ExitCodesHelp()), HasSubstr("6  coordinator unreachable"));
}

forge::v1::Job RunningJob() {
  forge::v1::Job job;
  job.set_id("j-00000000000000a1");
  job.set_tenant("acme");
  job.set_state(forge::v1::JOB_STATE_RUNNING);
  job.set_attempt(1);
  job.set_trainer_attached(false);
  job.mutable_create_time()->CopyFrom(Ago(absl::Minutes(5)));
  job.mutable_start_time()->CopyFrom(Ago(absl::Minutes(4)));
  auto* spec = job.mutable_spec();
  spec->set_name("acme-expert");
  spec->set_priority(10);
  spec->set_max_restarts(3);
  spec->mutable_resources()->set_ranks(2);
  spec->mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  spec->mutable_base()->set_model("forge-small");
  spec->mutable_base()->set_stage(forge::v1::STAGE_MID_TRAINING);
  auto* p0 = job.add_placement();
  p0->set_rank(0);
  p0->set_worker_id("w-a");
  p0->set_device("cpu:0");
  auto* p1 = job.add_placement();
  p1->set_rank(1);
  p1->set_worker_id("w-b");
  p1->set_device("cpu:3");
  return job;
}

TEST(JobViewTest, JobsTable) {
  forge::v1::ListJobsResponse response;
  *response.add_jobs() = RunningJob();
  forge::v1::Job* queued = response.add_jobs();
  queued->set_id("j-00000000000000b2");
  queued->set_state(forge::v1::JOB_STATE_QUEUED);
  queued->set_message("needs 64 cpu devices; the fleet has 16");
  queued->set_unschedulable(true);
  queued->mutable_spec()->set_name("big");
  queued->mutable_spec()->mutable_resources()->set_ranks(64);
  queued->mutable_spec()->mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  queued->mutable_create_time()->CopyFrom(Ago(absl::Seconds(30)));
  EXPECT_EQ(JobsTable(response, kNow),
            "ID                  NAME         STATE    RANKS   PRIO  AGE  MESSAGE\n"
            "j-00000000000000a1  acme-expert  RUNNING  2 cpu   10    5m   trainers starting\n"
            "j-00000000000000b2  big          QUEUED   64 cpu  0     30s  needs 64 cpu devices; "
            "the fleet has 16\n");
}

TEST(JobViewTest, DetailsOfARunningJobWithoutTrainer) {
  const std::string details = JobDetails(RunningJob(), kNow);
  EXPECT_THAT(details, HasSubstr("job:        j-00000000000000a1\n"));
  EXPECT_THAT(details, HasSubstr("state:      RUNNING\n"));
  EXPECT_THAT(details,
              HasSubstr("trainer:    not attached — the training engine is not available yet; "
                        "the job holds its devices but does not train\n"));
  EXPECT_THAT(details, HasSubstr("restarts:   0 of 3 allowed\n"));
  EXPECT_THAT(details, HasSubstr("base:       model forge-small at mid-training\n"));
  EXPECT_THAT(details, HasSubstr("started:    "));
  EXPECT_THAT(details, HasSubstr("(4m ago)\n"));
  EXPECT_THAT(details, HasSubstr("ended:      -\n"));
  EXPECT_THAT(details, HasSubstr("placement (attempt 1):\n"
                                 "  RANK  WORKER  DEVICE\n"
                                 "  0     w-a     cpu:0\n"
                                 "  1     w-b     cpu:3\n"));
  EXPECT_THAT(details, Not(HasSubstr("waiting:")));
}

TEST(JobViewTest, DetailsOfAQueuedUnschedulableJob) {
  forge::v1::Job job;
  job.set_id("j-2");
  job.set_state(forge::v1::JOB_STATE_QUEUED);
  job.set_unschedulable(true);
  job.set_message("needs 64 cpu devices; the fleet has 16");
  job.mutable_spec()->mutable_model()->set_preset("tiny");
  const std::string details = JobDetails(job, kNow);
  EXPECT_THAT(details, HasSubstr("message:    needs 64 cpu devices; the fleet has 16\n"));
  EXPECT_THAT(details, HasSubstr("waiting:    unschedulable: the job cannot fit"));
  EXPECT_THAT(details, HasSubstr("base:       new model (preset tiny)\n"));
  EXPECT_THAT(details, Not(HasSubstr("trainer:")));
  EXPECT_THAT(details, Not(HasSubstr("placement")));
}

TEST(FleetViewTest, WorkersTable) {
  forge::v1::ListWorkersResponse response;
  forge::v1::Worker* w = response.add_workers();
  w->set_id("w-a");
  w->set_hostname("host-a");
  w->set_state(forge::v1::WORKER_STATE_ALIVE);
  for (int i = 0; i < 4; ++i) w->add_devices()->set_kind(forge::v1::DEVICE_KIND_CPU);
  w->add_devices()->set_kind(forge::v1::DEVICE_KIND_CUDA);
  w->add_ranks()->set_job_id("j-1");
  w->mutable_last_heartbeat()->CopyFrom(Ago(absl::Seconds(3)));
  forge::v1::Worker* dead = response.add_workers();
  dead->set_id("w-b");
  dead->set_hostname("host-b");
  dead->set_state(forge::v1::WORKER_STATE_DEAD);
  dead->mutable_last_heartbeat()->CopyFrom(Ago(absl::Minutes(10)));
  EXPECT_EQ(WorkersTable(response, kNow),
            "ID   HOST    STATE  DEVICES        RANKS  LAST-HEARTBEAT\n"
            "w-a  host-a  ALIVE  4 cpu, 1 cuda  1      3s ago\n"
            "w-b  host-b  DEAD   none           0      10m ago\n");
}

TEST(FleetViewTest, TokensTable) {
  forge::v1::ListTokensResponse response;
  forge::v1::TokenInfo* t = response.add_tokens();
  t->set_token_id("tok-1");
  t->set_kind(forge::v1::TOKEN_KIND_TENANT);
  t->set_tenant("acme");
  t->set_note("ci\nbot");
  t->mutable_create_time()->CopyFrom(Ago(absl::Hours(3)));
  forge::v1::TokenInfo* w = response.add_tokens();
  w->set_token_id("tok-2");
  w->set_kind(forge::v1::TOKEN_KIND_WORKER);
  w->set_revoked(true);
  EXPECT_EQ(TokensTable(response, kNow),
            "ID     KIND    TENANT  STATE    AGE  NOTE\n"
            "tok-1  tenant  acme    active   3h   ci bot\n"
            "tok-2  worker  -       revoked  -\n");
}

TEST(FormatBytesTest, BinaryUnitsWithThreeSignificantDigits) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(int64_t{18} << 20), "18.0 MiB");
  EXPECT_EQ(FormatBytes(int64_t{600} << 20), "600 MiB");
  EXPECT_EQ(FormatBytes((int64_t{1} << 30) - 1), "1.00 GiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 40), "3.00 TiB");
}

TEST(FormatCountTest, SiSuffixes) {
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(812), "812");
  EXPECT_EQ(FormatCount(18234), "18.2k");
  EXPECT_EQ(FormatCount(999'600), "1.00M");
  EXPECT_EQ(FormatCount(3.4e6), "3.40M");
}

}  // namespace
}  // namespace forge::cli
