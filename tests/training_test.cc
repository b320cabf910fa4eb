// Distributed training end to end, with the real binaries on loopback: a 2-rank job trained
// to SUCCEEDED across two workers (checkpoints verified against their manifests, logs and
// metrics kept); a worker killed mid-run (the job resumes from its last committed checkpoint
// and ends bit-identical to an uninterrupted run); the coordinator killed mid-run (the job
// still completes); a hung (SIGSTOPped) rank caught by the collective/step timeouts.
#include <dirent.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "forge/v1/training.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "worker/engine/checkpoint.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kJobTimeout = absl::Seconds(240);

class TrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator({"--step-timeout-ms=20000", "--collective-timeout-ms=8000"});
    tenant_ = cluster_.CreateTenant("acme");
    worker_token_ = cluster_.CreateWorkerToken();
    jobs_ = forge::v1::JobService::NewStub(cluster_.channel());
    checkpoints_ = forge::v1::CheckpointService::NewStub(cluster_.channel());
    cluster_.RegisterDataset(tenant_, "general", 120, 1);
    cluster_.RegisterDataset(tenant_, "tickets", 120, 2);
  }

  // micro_batch 0: left to the trainer (8, all of a rank's 1024 / (64 x 2) sequences).
  std::string Spec(int steps, int every, int micro_batch = 0) {
    const std::string micro =
        micro_batch > 0 ? absl::StrCat(", micro_batch: ", micro_batch) : std::string();
    return cluster_.WriteFile(
        absl::StrCat("spec-", steps, "-", every, "-", micro_batch, ".yaml"),
        absl::StrCat("name: dp-test\n"
                     "model: {layers: 2, heads: 2, width: 64, context: 64, vocab: 256}\n"
                     "data:\n"
                     "  mixture:\n"
                     "    - {dataset: general, weight: 0.3}\n"
                     "    - {dataset: tickets, weight: 0.7}\n"
                     "train: {steps: ",
                     steps,
                     ", seq_len: 64, batch_tokens: 1024, lr: 1e-3, "
                     "warmup_steps: 5, seed: 11",
                     micro,
                     "}\n"
                     "resources: {ranks: 2, device: cpu}\n"
                     "checkpoint: {every_steps: ",
                     every,
                     ", keep_last: 2}\n"
                     "eval: {suites: [general, tickets]}\n"
                     "max_restarts: 3\n"));
  }

  std::string Submit(const std::string& spec) {
    CliResult r = cluster_.Cli({"submit", spec}, tenant_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::string(absl::StripTrailingAsciiWhitespace(r.out));
  }

  forge::v1::Job Get(const std::string& id) {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::GetJobRequest req;
    req.set_job_id(id);
    forge::v1::Job job;
    grpc::Status s = jobs_->GetJob(&ctx, req, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }

  bool IsTerminal(const forge::v1::Job& j) {
    return j.state() == forge::v1::JOB_STATE_SUCCEEDED ||
           j.state() == forge::v1::JOB_STATE_FAILED || j.state() == forge::v1::JOB_STATE_CANCELLED;
  }

  forge::v1::Job WaitTerminal(const std::string& id) {
    forge::v1::Job job;
    WaitFor([&] {
      job = Get(id);
      return IsTerminal(job);
    }, kJobTimeout);
    return job;
  }

  std::vector<forge::v1::CheckpointInfo> Checkpoints(const std::string& job_id) {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::ListCheckpointsRequest req;
    req.set_job_id(job_id);
    forge::v1::ListCheckpointsResponse resp;
    grpc::Status s = checkpoints_->ListCheckpoints(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.checkpoints().begin(), resp.checkpoints().end()};
  }

  std::string CheckpointDir(const forge::v1::CheckpointInfo& c) {
    return absl::StrCat(cluster_.dir(), "/storage/", c.path());
  }

  // sha256 of the final checkpoint's model.safetensors.
  std::string FinalWeights(const forge::v1::Job& job) {
    for (const auto& c : Checkpoints(job.id())) {
      if (c.id() == job.final_checkpoint()) {
        absl::StatusOr<std::string> bytes = ReadFile(CheckpointDir(c) + "/model.safetensors");
        EXPECT_TRUE(bytes.ok());
        return bytes.ok() ? Sha256Hex(*bytes) : "";
      }
    }
    ADD_FAILURE() << "final checkpoint " << job.final_checkpoint() << " not in the catalog";
    return "";
  }

  void StartTwoWorkers() {
    cluster_.StartWorker(worker_token_, "cpu:1", "wa");
    cluster_.StartWorker(worker_token_, "cpu:1", "wb");
  }

  Cluster cluster_;
  std::string tenant_, worker_token_;
  std::unique_ptr<forge::v1::JobService::Stub> jobs_;
  std::unique_ptr<forge::v1::CheckpointService::Stub> checkpoints_;
};

TEST_F(TrainingTest, TwoRankJobSucceedsWithVerifiedCheckpoints) {
  StartTwoWorkers();
  // Micro-batches of 2 sequences: each rank accumulates 4 per step.
  const std::string id = Submit(Spec(30, 10, /*micro_batch=*/2));
  forge::v1::Job job = WaitTerminal(id);
  ASSERT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.progress().step(), 30);
  EXPECT_EQ(job.progress().last_checkpoint_step(), 30);
  EXPECT_GT(job.progress().tokens_per_source().at("tickets"),
            job.progress().tokens_per_source().at("general"));
  ASSERT_EQ(job.evals_size(), 2);
  for (const auto& e : job.evals()) {
    EXPECT_GT(e.loss(), 0);
    EXPECT_LT(e.loss(), 5.6) << e.suite();  // below uniform over 256 bytes (ln 256 = 5.55)
  }
  ASSERT_EQ(job.attempts_size(), 1);
  EXPECT_EQ(job.attempts(0).end_reason(), "succeeded");

  // keep_last: 2 -> steps 30 and 20 remain; each verifies against its manifest.
  std::vector<forge::v1::CheckpointInfo> cps = Checkpoints(id);
  ASSERT_EQ(cps.size(), 2u);
  EXPECT_EQ(cps[0].step(), 30);
  EXPECT_EQ(cps[1].step(), 20);
  EXPECT_EQ(cps[0].id(), job.final_checkpoint());
  for (const auto& c : cps) {
    EXPECT_TRUE(engine::VerifyCheckpoint(CheckpointDir(c)).ok()) << c.path();
  }
  EXPECT_FALSE(std::filesystem::exists(
      absl::StrCat(cluster_.dir(), "/storage/tenants/acme/checkpoints/", id, "/step-00000010")));

  // Metrics: one point per step; logs from both ranks, kept by the coordinator.
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, tenant_);
  forge::v1::GetJobMetricsRequest mreq;
  mreq.set_job_id(id);
  forge::v1::GetJobMetricsResponse metrics;
  ASSERT_TRUE(jobs_->GetJobMetrics(&ctx, mreq, &metrics).ok());
  EXPECT_GE(metrics.points_size(), 5);
  EXPECT_LE(metrics.points_size(), 30);
  // -f: the last lines reach the coordinator just after the job is SUCCEEDED; follow until
  // the coordinator says the log is complete.
  CliResult logs = cluster_.Cli({"logs", id, "-f"}, tenant_);
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("a1 r0 | step"));
  EXPECT_THAT(logs.out, HasSubstr("a1 r1 | step"));
  EXPECT_THAT(logs.out, HasSubstr("finished: 30 steps"));
  EXPECT_THAT(logs.out, HasSubstr("30 steps of 4 x 2 x 64 tokens per rank"));

  // watch on a finished job prints the outcome and exits 0 for SUCCEEDED.
  CliResult watch = cluster_.Cli({"watch", id}, tenant_);
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("SUCCEEDED"));

  // Export: safetensors + config.json, verified.
  const std::string out = cluster_.dir() + "/export";
  CliResult ex = cluster_.Cli({"export", job.final_checkpoint(), out}, tenant_);
  EXPECT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_TRUE(FileExists(out + "/model.safetensors"));
  EXPECT_TRUE(FileExists(out + "/config.json"));
}

TEST_F(TrainingTest, UnknownDatasetIsRefused) {
  const std::string spec = cluster_.WriteFile(
      "bad.yaml", "name: bad\nmodel: {preset: tiny}\n"
                  "data: {mixture: [{dataset: nope, weight: 1}]}\n");
  CliResult r = cluster_.Cli({"submit", spec}, tenant_);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("data.mixture[0].dataset"));
  EXPECT_THAT(r.err, HasSubstr("forge data register nope"));
}

TEST_F(TrainingTest, KilledWorkerResumesBitIdentical) {
  StartTwoWorkers();
  // The reference: the same job, uninterrupted.
  forge::v1::Job ref = WaitTerminal(Submit(Spec(300, 25)));
  ASSERT_EQ(ref.state(), forge::v1::JOB_STATE_SUCCEEDED) << ref.message();
  const std::string want = FinalWeights(ref);

  const std::string id = Submit(Spec(300, 25));
  ASSERT_TRUE(WaitFor([&] {
    forge::v1::Job j = Get(id);
    return j.progress().last_checkpoint_step() >= 20 || IsTerminal(j);
  }, kJobTimeout));
  forge::v1::Job before = Get(id);
  ASSERT_EQ(before.state(), forge::v1::JOB_STATE_RUNNING) << "ran to the end before the kill";
  cluster_.worker(1)->Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return Get(id).state() == forge::v1::JOB_STATE_RESTARTING; },
                      absl::Seconds(10)));
  cluster_.StartWorker(worker_token_, "cpu:1", "wc");  // a replacement host

  forge::v1::Job job = WaitTerminal(id);
  ASSERT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.restarts(), 1);
  ASSERT_GE(job.attempts_size(), 2);
  const forge::v1::JobAttempt& first = job.attempts(0);
  const forge::v1::JobAttempt& second = job.attempts(1);
  EXPECT_THAT(first.end_reason(), HasSubstr("lost"));
  EXPECT_GE(second.resumed_from_step(), 20);
  EXPECT_FALSE(second.resumed_from_checkpoint().empty());
  EXPECT_GE(first.last_step(), second.resumed_from_step());
  EXPECT_EQ(first.lost_steps(), first.last_step() - second.resumed_from_step());
  EXPECT_GT(second.recover_seconds(), 0);
  EXPECT_EQ(FinalWeights(job), want) << "resumed run differs from the uninterrupted one";
}

TEST_F(TrainingTest, KilledCoordinatorJobStillCompletes) {
  StartTwoWorkers();
  const std::string id = Submit(Spec(300, 50));
  ASSERT_TRUE(WaitFor([&] {
    forge::v1::Job j = Get(id);
    return j.progress().step() >= 10 || IsTerminal(j);
  }, kJobTimeout));
  cluster_.KillCoordinator(SIGKILL);
  absl::SleepFor(absl::Seconds(2));
  cluster_.StartCoordinator({"--step-timeout-ms=20000", "--collective-timeout-ms=8000"});
  forge::v1::Job job = WaitTerminal(id);
  ASSERT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.progress().step(), 300);
  std::vector<forge::v1::CheckpointInfo> cps = Checkpoints(id);
  ASSERT_FALSE(cps.empty());
  EXPECT_EQ(cps[0].step(), 300);
  EXPECT_TRUE(engine::VerifyCheckpoint(CheckpointDir(cps[0])).ok());
}

TEST_F(TrainingTest, CancelStopsTheTrainers) {
  StartTwoWorkers();
  const std::string id = Submit(Spec(300, 25));
  ASSERT_TRUE(WaitFor([&] {
    forge::v1::Job j = Get(id);
    return j.progress().step() >= 5 || IsTerminal(j);
  }, kJobTimeout));
  ASSERT_EQ(TrainerPids(id).size(), 2u);
  CliResult r = cluster_.Cli({"cancel", id, "--reason", "test"}, tenant_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return TrainerPids(id).empty(); }, absl::Seconds(10)));
  CliResult watch = cluster_.Cli({"watch", id}, tenant_);
  EXPECT_EQ(watch.exit_code, 8) << watch.out << watch.err;  // CANCELLED
}

TEST_F(TrainingTest, StoppedRankIsCaughtByTimeoutsAndTheJobRecovers) {
  StartTwoWorkers();
  const std::string id = Submit(Spec(300, 25));
  ASSERT_TRUE(WaitFor([&] {
    forge::v1::Job j = Get(id);
    return j.progress().step() >= 10 || IsTerminal(j);
  }, kJobTimeout));
  std::vector<pid_t> pids = TrainerPids(id);
  ASSERT_EQ(pids.size(), 2u);
  const absl::Time stopped = absl::Now();
  kill(pids[1], SIGSTOP);
  // The peer's all-reduce times out (8 s) and the attempt fails; nobody waits for minutes.
  ASSERT_TRUE(WaitFor([&] { return Get(id).attempt() >= 2; }, absl::Seconds(40)));
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(30));
  forge::v1::Job job = WaitTerminal(id);
  ASSERT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_GE(job.restarts(), 1);
  // The stopped process was killed by its worker, not left behind.
  EXPECT_TRUE(WaitFor([&] { return kill(pids[1], 0) != 0; }, absl::Seconds(10)));
}

}  // namespace
}  // namespace forge::testing
