// Schedules end to end, with the real binaries on loopback: `forge schedule create` checks the
// cron expression and the spec up front; an every-minute schedule submits exactly one job for
// its first slot, still exactly one after the coordinator is killed (-9) and restarted inside
// that slot's minute; the next slot, with no new data, is skipped and says so; list, history
// and delete through the CLI. Takes one to two minutes of wall time (two cron slots).
#include <httplib.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/webhook_receiver.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

class SchedulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator({"--schedule-tick-ms=200", "--alert-webhook=" + hooks_.url(),
                               "--http=127.0.0.1:0",
                               "--http-port-file=" + cluster_.dir() + "/http.port"});
    tenant_ = cluster_.CreateTenant("acme");
    cluster_.RegisterDataset(tenant_, "general", 60, 1);
    spec_ = cluster_.WriteFile("nightly.yaml",
                               "name: nightly\nmodel: {preset: tiny}\n"
                               "data:\n  mixture:\n    - {dataset: general, weight: 1}\n"
                               "train: {steps: 4, seq_len: 64, batch_tokens: 512}\n"
                               "resources: {ranks: 1, device: cpu}\n");
  }

  CliResult Cli(const std::vector<std::string>& args) { return cluster_.Cli(args, tenant_); }

  std::vector<forge::v1::ScheduleRun> Runs(const std::string& id) {
    auto stub = forge::v1::ScheduleService::NewStub(cluster_.channel());
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::ListScheduleRunsRequest req;
    req.set_schedule_id(id);
    forge::v1::ListScheduleRunsResponse resp;
    if (!stub->ListScheduleRuns(&ctx, req, &resp).ok()) return {};
    return {resp.runs().begin(), resp.runs().end()};
  }

  std::vector<forge::v1::Job> Jobs() {
    auto stub = forge::v1::JobService::NewStub(cluster_.channel());
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::ListJobsResponse resp;
    EXPECT_TRUE(stub->ListJobs(&ctx, forge::v1::ListJobsRequest(), &resp).ok());
    return {resp.jobs().begin(), resp.jobs().end()};
  }

  WebhookReceiver hooks_;  // declared first: outlives the coordinator that posts to it
  Cluster cluster_;
  std::string tenant_;
  std::string spec_;
};

TEST_F(SchedulesTest, BadScheduleIsRefusedAtCreateNamingTheFlagOrField) {
  CliResult r = Cli({"schedule", "create", "--cron", "0 25 * * *", "--spec", spec_});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--cron: hour"));
  r = Cli({"schedule", "create", "--cron", "0 2 * * *", "--time-zone", "Nowhere/City", "--spec",
           spec_});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--time-zone:"));
  const std::string bad = cluster_.WriteFile(
      "bad.yaml",
      "name: bad\nmodel: {preset: tiny}\ndata:\n  mixture:\n    - {dataset: nope, weight: 1}\n");
  r = Cli({"schedule", "create", "--cron", "0 2 * * *", "--spec", bad});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("data.mixture[0].dataset"));
  r = Cli({"schedule", "create", "--cron", "0 2 * * *"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--spec"));

  r = Cli({"schedule", "create", "--cron", "0 2 * * *", "--time-zone", "Europe/Paris", "--spec",
           spec_, "--name", "paris"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("s-"));
  EXPECT_THAT(r.err, HasSubstr("next run: "));
  EXPECT_THAT(r.err, HasSubstr("02:00"));
  EXPECT_THAT(r.err, HasSubstr("(Europe/Paris)"));
}

TEST_F(SchedulesTest, OneRunPerSlotAcrossAKilledCoordinatorThenSkipsWithoutNewData) {
  CliResult r =
      Cli({"schedule", "create", "--cron", "* * * * *", "--spec", spec_, "--name", "every-minute"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id(absl::StripTrailingAsciiWhitespace(r.out));
  EXPECT_THAT(r.err, HasSubstr("(UTC)"));

  // The first slot (within a minute) submits one job.
  ASSERT_TRUE(WaitFor([&] { return !Runs(id).empty(); }, absl::Seconds(75)));
  std::vector<forge::v1::ScheduleRun> runs = Runs(id);
  ASSERT_EQ(runs.size(), 1u);
  const forge::v1::ScheduleRun first = runs[0];
  EXPECT_EQ(first.outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED) << first.message();
  // The run row is read from the store; the job joins the coordinator's view in the commit's
  // callback, just after.
  ASSERT_TRUE(WaitFor([&] { return !Jobs().empty(); }, absl::Seconds(10)));
  ASSERT_EQ(Jobs().size(), 1u);
  EXPECT_EQ(Jobs()[0].id(), first.job_id());

  // Killed and restarted inside the slot's minute: the slot is not run again.
  cluster_.KillCoordinator(9);
  cluster_.StartCoordinator({"--schedule-tick-ms=200", "--alert-webhook=" + hooks_.url(),
                             "--http=127.0.0.1:0",
                             "--http-port-file=" + cluster_.dir() + "/http.port"});
  absl::SleepFor(absl::Seconds(2));  // ten ticks
  runs = Runs(id);
  int for_first_slot = 0;
  for (const auto& run : runs) {
    if (FromProtoTime(run.slot_time()) == FromProtoTime(first.slot_time())) ++for_first_slot;
  }
  EXPECT_EQ(for_first_slot, 1);
  ASSERT_EQ(Jobs().size(), 1u);
  EXPECT_EQ(Jobs()[0].id(), first.job_id());

  // The next slot: the dataset did not change, so it is skipped, saying why.
  ASSERT_TRUE(WaitFor([&] { return Runs(id).size() >= 2; }, absl::Seconds(75)));
  runs = Runs(id);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);
  EXPECT_THAT(runs[0].message(), HasSubstr("no new data since the run of"));
  EXPECT_THAT(runs[0].message(), HasSubstr("datasets unchanged: general@"));
  EXPECT_EQ(FromProtoTime(runs[0].slot_time()),
            FromProtoTime(first.slot_time()) + absl::Minutes(1));
  EXPECT_EQ(Jobs().size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return hooks_.Has("schedule_skipped", "schedule", "id", id); },
                      absl::Seconds(10)))
      << "operators are told of the skipped slot";
  // And the dashboard's Schedules page shows both slots, to the tenant and to an admin.
  int http_port = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = ReadFile(cluster_.dir() + "/http.port");
        return s.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*s), &http_port);
      },
      absl::Seconds(5)));
  for (const std::string& token : {tenant_, cluster_.admin_token()}) {
    httplib::Client web("127.0.0.1", http_port);
    auto page = web.Get("/schedules", {{"Authorization", "Bearer " + token}});
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, 200);
    EXPECT_THAT(page->body, HasSubstr("id=\"schedule-" + id + "\""));
    EXPECT_THAT(page->body, HasSubstr(">skipped<"));
    EXPECT_THAT(page->body, HasSubstr(first.job_id()));
  }

  // The CLI views.
  r = Cli({"schedule", "history", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SLOT"));
  EXPECT_THAT(r.out, HasSubstr("SKIPPED_NO_NEW_DATA"));
  EXPECT_THAT(r.out, HasSubstr(first.job_id()));
  r = Cli({"schedule", "history", id, "--limit", "1"});  // the newest slot only
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SKIPPED_NO_NEW_DATA"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr(first.job_id())));
  r = Cli({"schedule", "history", id, "--limit", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--limit must be in 1..10000"));
  r = Cli({"schedule", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("NEXT RUN"));
  EXPECT_THAT(r.out, HasSubstr(id));
  EXPECT_THAT(r.out, HasSubstr("* * * * *"));
  r = Cli({"schedule", "list", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"last_run\""));

  r = Cli({"schedule", "delete", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"schedule", "history", id});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  r = Cli({"schedule", "list", "-o", "json"});
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr(id)));
}

}  // namespace
}  // namespace forge::testing
