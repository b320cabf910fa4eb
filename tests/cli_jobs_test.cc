// Submit, list, inspect and cancel jobs through the real `forge` CLI against a real
// coordinator on loopback; bad specs are refused with the field named and change nothing.
#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace forge::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kSpec[] = R"(name: acme-support-expert
model: {preset: tiny}
data:
  mixture:
    - {dataset: general-english, weight: 0.25}
    - {dataset: acme-tickets, weight: 0.75}
train: {steps: 100, seq_len: 64, lr: 3e-4, seed: 7}
resources: {ranks: 2, device: cpu}
checkpoint: {every_steps: 50, keep_last: 2}
)";

template <typename M>
M ParseJson(const std::string& json) {
  M m;
  auto s = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << json;
  return m;
}

class CliJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator();
    token_ = cluster_.CreateTenant("acme");
    ASSERT_THAT(token_, ContainsRegex("^forge_tenant_"));
    for (const char* name : {"general-english", "acme-tickets", "a"}) {
      cluster_.RegisterDataset(token_, name, 20);
    }
  }
  Cluster cluster_;
  std::string token_;
};

TEST_F(CliJobsTest, SubmitListStatusCancel) {
  const std::string spec = cluster_.WriteFile("spec.yaml", kSpec);
  CliResult submit = cluster_.Cli({"submit", spec}, token_);
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  EXPECT_THAT(submit.out, ContainsRegex("^j-[0-9a-f]{16}\n$"));  // the id alone
  const std::string id(absl::StripAsciiWhitespace(submit.out));

  CliResult jobs = cluster_.Cli({"jobs", "-o", "json"}, token_);
  ASSERT_EQ(jobs.exit_code, 0) << jobs.err;
  auto list = ParseJson<forge::v1::ListJobsResponse>(jobs.out);
  ASSERT_EQ(list.jobs_size(), 1);
  EXPECT_EQ(list.jobs(0).id(), id);
  EXPECT_EQ(list.jobs(0).state(), forge::v1::JOB_STATE_QUEUED);
  // Defaults were filled in and stored.
  EXPECT_EQ(list.jobs(0).spec().train().steps(), 100);
  EXPECT_TRUE(list.jobs(0).spec().train().has_weight_decay());

  CliResult table = cluster_.Cli({"jobs"}, token_);
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr(id));
  EXPECT_THAT(table.out, HasSubstr("QUEUED"));

  // No workers: once the control loop's next scheduling pass has looked at the job (it runs
  // after the submission is answered, so not necessarily before this first status), the wait
  // reason says why.
  CliResult status;
  EXPECT_TRUE(WaitFor(
      [&] {
        status = cluster_.Cli({"status", id}, token_);
        return status.exit_code == 0 && absl::StrContains(status.out, "cpu devices");
      },
      absl::Seconds(10)))
      << status.out << status.err;
  EXPECT_THAT(status.out, HasSubstr("QUEUED"));

  CliResult cancel = cluster_.Cli({"cancel", id, "--reason", "test over", "-o", "json"}, token_);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  // The reply is the job as cancelled, not as it was before.
  EXPECT_EQ(ParseJson<forge::v1::Job>(cancel.out).state(), forge::v1::JOB_STATE_CANCELLED);
  CliResult after = cluster_.Cli({"status", id, "-o", "json"}, token_);
  ASSERT_EQ(after.exit_code, 0) << after.err;
  auto job = ParseJson<forge::v1::Job>(after.out);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(job.message(), HasSubstr("test over"));

  // Cancelling a finished job is refused as a precondition (exit 3), state unchanged.
  CliResult again = cluster_.Cli({"cancel", id}, token_);
  EXPECT_EQ(again.exit_code, 3);
  EXPECT_THAT(again.err, HasSubstr("CANCELLED"));

  CliResult missing = cluster_.Cli({"status", "j-0000000000000000"}, token_);
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_THAT(missing.err, HasSubstr("not found"));
}

TEST_F(CliJobsTest, UnknownKeyIsRefusedWithKeyAndLine) {
  const std::string spec = cluster_.WriteFile("bad.yaml", R"(name: x
model: {preset: tiny}
data:
  mixture:
    - {dataset: a, weight: 1}
train:
  steps: 10
  lerning_rate: 0.1
)");
  CliResult r = cluster_.Cli({"submit", spec}, token_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("lerning_rate"));
  EXPECT_THAT(r.err, HasSubstr(":8:"));  // its line
  EXPECT_THAT(r.out, IsEmpty());
}

TEST_F(CliJobsTest, InvalidValuesAreRefusedByFieldAndChangeNothing) {
  const std::string spec = cluster_.WriteFile("bad.yaml", R"(name: x
model: {preset: tiny}
data:
  mixture:
    - {dataset: a, weight: -0.2}
resources: {ranks: -1}
)");
  CliResult r = cluster_.Cli({"submit", spec}, token_);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("data.mixture[0].weight"));
  EXPECT_THAT(r.err, HasSubstr("resources.ranks"));
  CliResult jobs = cluster_.Cli({"jobs", "-o", "json"}, token_);
  ASSERT_EQ(jobs.exit_code, 0);
  EXPECT_EQ(ParseJson<forge::v1::ListJobsResponse>(jobs.out).jobs_size(), 0);
}

TEST_F(CliJobsTest, HelpAndUsageErrors) {
  CliResult help = cluster_.Cli({"--help"}, "");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("submit"));
  CliResult sub = cluster_.Cli({"submit", "--help"}, "");
  EXPECT_EQ(sub.exit_code, 0);
  CliResult no_token = cluster_.Cli({"jobs"}, "");
  EXPECT_EQ(no_token.exit_code, 2);
  EXPECT_THAT(no_token.err, HasSubstr("FORGE_TOKEN"));
  CliResult bad_token = cluster_.Cli({"jobs"}, "forge_tenant_nope");
  EXPECT_EQ(bad_token.exit_code, 5);
}

}  // namespace
}  // namespace forge::testing
