// Workers register their devices, jobs are gang-placed across them, a killed worker is marked
// dead within the grace and its job's devices come back, and it is alive again on restart.
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

class WorkersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator();  // heartbeat 200 ms, grace 1 s
    tenant_ = cluster_.CreateTenant("acme");
    cluster_.RegisterDataset(tenant_, "d", 20);
    worker_token_ = cluster_.CreateWorkerToken();
    stub_ = forge::v1::JobService::NewStub(cluster_.channel());
    workers_ = forge::v1::WorkerService::NewStub(cluster_.channel());
  }

  std::map<std::string, forge::v1::Worker> Workers() {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, cluster_.admin_token());
    forge::v1::ListWorkersResponse resp;
    grpc::Status s = workers_->ListWorkers(&ctx, {}, &resp);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    std::map<std::string, forge::v1::Worker> out;
    for (const auto& w : resp.workers()) out[w.id()] = w;
    return out;
  }
  bool WorkerState(const std::string& id, forge::v1::WorkerState state) {
    auto w = Workers();
    return w.count(id) && w[id].state() == state;
  }
  std::string Submit(int ranks) {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::SubmitJobRequest req;
    req.mutable_spec()->set_name(absl::StrCat("ranks-", ranks));
    req.mutable_spec()->mutable_model()->set_preset("tiny");
    auto* m = req.mutable_spec()->mutable_data()->add_mixture();
    m->set_dataset("d");
    m->set_weight(1);
    req.mutable_spec()->mutable_resources()->set_ranks(ranks);
    forge::v1::SubmitJobResponse resp;
    EXPECT_TRUE(stub_->SubmitJob(&ctx, req, &resp).ok());
    return resp.job().id();
  }
  forge::v1::Job Get(const std::string& id) {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::GetJobRequest req;
    req.set_job_id(id);
    forge::v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
    return job;
  }

  Cluster cluster_;
  std::string tenant_, worker_token_;
  std::unique_ptr<forge::v1::JobService::Stub> stub_;
  std::unique_ptr<forge::v1::WorkerService::Stub> workers_;
};

TEST_F(WorkersTest, GangPlacementDeadWorkerAndRecovery) {
  cluster_.StartWorker(worker_token_, "cpu:2", "wa", {"--trainer=" + cluster_.IdleTrainer()});
  const int wb = cluster_.StartWorker(worker_token_, "cpu:2", "wb", {"--trainer=" + cluster_.IdleTrainer()});
  ASSERT_TRUE(WaitFor([&] {
    return WorkerState("wa", forge::v1::WORKER_STATE_ALIVE) &&
           WorkerState("wb", forge::v1::WORKER_STATE_ALIVE);
  }, absl::Seconds(20)));
  EXPECT_EQ(Workers()["wa"].devices_size(), 2);

  // 3 ranks span both workers, all at once, on distinct devices.
  const std::string big = Submit(3);
  ASSERT_TRUE(WaitFor([&] { return Get(big).state() == forge::v1::JOB_STATE_RUNNING; },
                      absl::Seconds(10)));
  forge::v1::Job job = Get(big);
  ASSERT_EQ(job.placement_size(), 3);
  std::set<std::pair<std::string, std::string>> devices;
  for (const auto& p : job.placement()) devices.emplace(p.worker_id(), p.device());
  EXPECT_EQ(devices.size(), 3u);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_FALSE(job.trainer_attached());  // the stand-in trainers never report
  EXPECT_THAT(job.message(), HasSubstr("placed"));
  // The workers acknowledged their ranks and report them.
  ASSERT_TRUE(WaitFor([&] {
    auto w = Workers();
    return w["wa"].ranks_size() + w["wb"].ranks_size() == 3;
  }, absl::Seconds(10)));

  // 2 more ranks cannot fit now (1 free) but could on an empty fleet: waiting, with a reason.
  const std::string small = Submit(2);
  // 10 ranks can never fit on 4 devices: unschedulable, saying why.
  const std::string huge = Submit(10);
  ASSERT_TRUE(WaitFor([&] { return Get(huge).unschedulable(); }, absl::Seconds(10)));
  EXPECT_THAT(Get(huge).message(), HasSubstr("10"));
  EXPECT_EQ(Get(small).state(), forge::v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(Get(small).unschedulable());

  // kill -9 one worker: dead within the grace (1 s; the slack allows for a loaded 2-core CI
  // machine and is still far below any other timeout), job restarts, its devices come back
  // and the waiting 2-rank job takes the surviving worker.
  const absl::Time killed = absl::Now();
  cluster_.worker(wb)->Kill(9);
  ASSERT_TRUE(WaitFor([&] { return WorkerState("wb", forge::v1::WORKER_STATE_DEAD); },
                      absl::Seconds(5)));
  const absl::Duration detect = absl::Now() - killed;
  EXPECT_LT(detect, absl::Seconds(1) + absl::Milliseconds(2500)) << detect;
  ASSERT_TRUE(WaitFor([&] { return Get(small).state() == forge::v1::JOB_STATE_RUNNING; },
                      absl::Seconds(10)));
  const forge::v1::Job small_job = Get(small);
  for (const auto& p : small_job.placement()) EXPECT_EQ(p.worker_id(), "wa");
  forge::v1::Job restarted = Get(big);
  EXPECT_EQ(restarted.state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_EQ(restarted.restarts(), 1);
  EXPECT_EQ(restarted.placement_size(), 0);
  EXPECT_THAT(restarted.message(), HasSubstr("wb"));

  // The worker comes back: alive again; the big job still needs 3 devices, only 2 are free.
  cluster_.StartWorker(worker_token_, "cpu:2", "wb", {"--trainer=" + cluster_.IdleTrainer()});
  ASSERT_TRUE(WaitFor([&] { return WorkerState("wb", forge::v1::WORKER_STATE_ALIVE); },
                      absl::Seconds(10)));
  // Cancel the small job: its devices come back and the big job runs again (attempt 2).
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, tenant_);
  forge::v1::CancelJobRequest cancel;
  cancel.set_job_id(small);
  forge::v1::Job cancelled;
  ASSERT_TRUE(stub_->CancelJob(&ctx, cancel, &cancelled).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(big).state() == forge::v1::JOB_STATE_RUNNING; },
                      absl::Seconds(10)));
  EXPECT_EQ(Get(big).attempt(), 2);
  // The cancelled job's ranks are gone from the worker's report.
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& [id, w] : Workers()) {
      for (const auto& r : w.ranks()) if (r.job_id() == small) return false;
    }
    return true;
  }, absl::Seconds(10)));

  // The CLI's fleet view says the same.
  CliResult r = cluster_.Cli({"workers"}, cluster_.admin_token());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("wa"));
  EXPECT_THAT(r.out, HasSubstr("ALIVE"));
}

TEST_F(WorkersTest, CoordinatorRestartKeepsRunningJobPlaced) {
  cluster_.StartWorker(worker_token_, "cpu:2", "wa", {"--trainer=" + cluster_.IdleTrainer()});
  ASSERT_TRUE(WaitFor([&] { return WorkerState("wa", forge::v1::WORKER_STATE_ALIVE); },
                      absl::Seconds(20)));
  const std::string id = Submit(2);
  ASSERT_TRUE(WaitFor([&] { return Get(id).state() == forge::v1::JOB_STATE_RUNNING; },
                      absl::Seconds(10)));
  cluster_.KillCoordinator(9);
  cluster_.StartCoordinator();
  stub_ = forge::v1::JobService::NewStub(cluster_.channel());
  workers_ = forge::v1::WorkerService::NewStub(cluster_.channel());
  // The worker reconnects holding its ranks; the job stays on attempt 1.
  ASSERT_TRUE(WaitFor([&] {
    auto w = Workers();
    return w["wa"].state() == forge::v1::WORKER_STATE_ALIVE && w["wa"].ranks_size() == 2;
  }, absl::Seconds(20)));
  absl::SleepFor(absl::Seconds(2));  // past the grace: nothing was declared dead
  forge::v1::Job job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.restarts(), 0);
}

}  // namespace
}  // namespace forge::testing
