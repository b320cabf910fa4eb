// CoordinatorMetrics over real managers on a temp store: what /metrics says after submissions,
// placements, restarts and a lost worker, read back through the strict exposition parser.
#include "coordinator/coordinator_metrics.h"

#include <stdlib.h>

#include <filesystem>
#include <future>

#include "common/fake_clock.h"
#include "common/prometheus_text.h"
#include "coordinator/fake_worker_connection.h"
#include "coordinator/job_manager.h"
#include "coordinator/test_util.h"
#include "coordinator/worker_manager.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using prometheus::FindValue;

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("metrics_test");
    store_ = OpenTestStore(dir_);
    metrics_ = std::make_unique<CoordinatorMetrics>(&clock_);
    WorkerManagerOptions wo;
    workers_ = std::make_unique<WorkerManager>(store_.get(), &clock_, wo);
    JobManagerOptions jo;
    jo.send_to_worker = [](const std::string&, const forge::v1::CoordinatorMessage&) {
      return true;
    };
    jo.on_transition = [this](const forge::v1::Job& j, forge::v1::JobState from, absl::Duration q) {
      metrics_->OnJobTransition(j, from, q);
    };
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, jo);
    ASSERT_TRUE(jobs_->Recover().ok());
    metrics_->SetSources(jobs_.get(), workers_.get());
  }
  void TearDown() override {
    jobs_.reset();
    workers_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string Submit(const std::string& tenant, int max_restarts) {
    forge::v1::SubmitJobRequest req;
    req.mutable_spec()->set_name("job");
    req.mutable_spec()->mutable_model()->set_preset("tiny");
    auto* m = req.mutable_spec()->mutable_data()->add_mixture();
    m->set_dataset("d");
    m->set_weight(1);
    req.mutable_spec()->set_max_restarts(max_restarts);
    auto r = SubmitAndWait(*jobs_, TenantPrincipal(tenant), std::move(req));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job().id() : "";
  }
  void Flush() { ASSERT_TRUE(store_->CommitSync({}).ok()); }
  forge::v1::Job Get(const std::string& id) {
    absl::StatusOr<forge::v1::Job> j = jobs_->Get(TenantPrincipal("acme"), id);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : forge::v1::Job();
  }

  std::vector<prometheus::Family> Scrape() {
    const std::string text = metrics_->Render();
    auto parsed = prometheus::ParseExposition(text);
    EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
    EXPECT_THAT(metrics_->registry().problems(), ::testing::IsEmpty());
    return parsed.ok() ? *parsed : std::vector<prometheus::Family>{};
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<WorkerManager> workers_;
  std::unique_ptr<JobManager> jobs_;
};

TEST_F(CoordinatorMetricsTest, FreshCoordinatorExportsZerosForKnownSeries) {
  auto f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_jobs_submitted_total", {}), 0);
  EXPECT_EQ(FindValue(f, "forge_jobs_finished_total", {{"state", "failed"}}), 0);
  EXPECT_EQ(FindValue(f, "forge_job_restarts_total", {}), 0);
  EXPECT_EQ(FindValue(f, "forge_jobs", {{"state", "queued"}}), 0);
  EXPECT_EQ(FindValue(f, "forge_workers", {{"state", "dead"}}), 0);
  EXPECT_EQ(FindValue(f, "forge_queue_length", {}), 0);
  EXPECT_EQ(FindValue(f, "forge_queue_wait_seconds_count", {{"reason", "submitted"}}), 0);
  EXPECT_EQ(FindValue(f, "forge_queue_wait_seconds_count", {{"reason", "restart"}}), 0);
  const prometheus::Family* build = prometheus::FindFamily(f, "forge_build_info");
  ASSERT_NE(build, nullptr);
  ASSERT_EQ(build->samples.size(), 1u);
  EXPECT_EQ(build->samples[0].value, 1);
  EXPECT_FALSE(build->samples[0].labels.at("version").empty());
}

TEST_F(CoordinatorMetricsTest, JobsQueueRestartsAndFailuresAreCounted) {
  const std::string a = Submit("acme", 1);
  Submit("acme", 0);
  clock_.Advance(absl::Seconds(7));
  auto f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_jobs_submitted_total", {}), 2);
  EXPECT_EQ(FindValue(f, "forge_jobs", {{"state", "queued"}}), 2);
  EXPECT_EQ(FindValue(f, "forge_queue_length", {}), 2);
  EXPECT_EQ(FindValue(f, "forge_queue_oldest_wait_seconds", {}), 7);
  EXPECT_EQ(FindValue(f, "forge_job_step", {{"job_id", a}, {"tenant", "acme"}}), std::nullopt)
      << "queued jobs are counted in forge_jobs, not given series of their own";

  ASSERT_TRUE(jobs_->Place(JobPlacement{a, {{"w1", "cpu:0"}}}));
  Flush();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_queue_wait_seconds_count", {{"reason", "submitted"}}), 1);
  EXPECT_EQ(FindValue(f, "forge_queue_wait_seconds_sum", {{"reason", "submitted"}}), 7);
  EXPECT_EQ(FindValue(f, "forge_jobs", {{"state", "running"}}), 1);
  EXPECT_EQ(FindValue(f, "forge_job_attempt", {{"job_id", a}, {"tenant", "acme"}}), 1);
  // The snapshot the scrape takes is trimmed to these fields: each still shows.
  EXPECT_EQ(FindValue(f, "forge_job_info",
                      {{"job_id", a}, {"name", "job"}, {"state", "running"}, {"tenant", "acme"}}),
            1);
  EXPECT_EQ(FindValue(f, "forge_job_total_steps", {{"job_id", a}, {"tenant", "acme"}}),
            Get(a).spec().train().steps());
  // Rank 0 reports step 5: the trimmed snapshot keeps the progress.
  EXPECT_FALSE(jobs_->OnProgress(ProgressReportFor(Get(a), 0, 5, /*world_size=*/1)).stop());
  Flush();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_job_step", {{"job_id", a}, {"tenant", "acme"}}), 5);
  EXPECT_EQ(FindValue(f, "forge_job_loss", {{"job_id", a}, {"tenant", "acme"}}), 2.5);
  EXPECT_EQ(FindValue(f, "forge_job_source_tokens",
                      {{"job_id", a}, {"source", "d"}, {"tenant", "acme"}}),
            5 * 512);
  // A CPU rank reports no MFU: no series, rather than a zero.
  EXPECT_EQ(FindValue(f, "forge_job_mfu", {{"job_id", a}, {"tenant", "acme"}}), std::nullopt);
  forge::v1::ProgressReport gpu = ProgressReportFor(Get(a), 0, 6, /*world_size=*/1);
  gpu.set_mfu(0.375);
  EXPECT_FALSE(jobs_->OnProgress(gpu).stop());
  Flush();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_job_mfu", {{"job_id", a}, {"tenant", "acme"}}), 0.375);

  // w1 dies twice: one restart allowed, then the job fails.
  jobs_->OnWorkerLost("w1", "test");
  Flush();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_job_restarts_total", {}), 1);
  EXPECT_EQ(FindValue(f, "forge_jobs", {{"state", "restarting"}}), 1);
  ASSERT_TRUE(jobs_->Place(JobPlacement{a, {{"w1", "cpu:0"}}}));
  Flush();
  jobs_->OnWorkerLost("w1", "test");
  Flush();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_job_restarts_total", {}), 1);
  EXPECT_EQ(FindValue(f, "forge_jobs_finished_total", {{"state", "failed"}}), 1);
  EXPECT_EQ(FindValue(f, "forge_jobs", {{"state", "failed"}}), 1);
  EXPECT_EQ(FindValue(f, "forge_job_step", {{"job_id", a}, {"tenant", "acme"}}), std::nullopt)
      << "finished jobs leave the per-job series";
  EXPECT_EQ(FindValue(f, "forge_queue_wait_seconds_count", {{"reason", "restart"}}), 1);
}

TEST_F(CoordinatorMetricsTest, WorkersAndHeartbeatAge) {
  forge::v1::RegisterWorker r;
  r.set_worker_id("w1");
  for (const char* d : {"cpu:0", "cpu:1"}) {
    auto* dev = r.add_devices();
    dev->set_id(d);
    dev->set_kind(forge::v1::DEVICE_KIND_CPU);
  }
  ASSERT_TRUE(workers_->Register(r, std::make_shared<FakeWorkerConnection>()).ok());
  clock_.Advance(absl::Milliseconds(2500));
  auto f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_workers", {{"state", "alive"}}), 1);
  EXPECT_EQ(FindValue(f, "forge_worker_heartbeat_age_seconds", {{"worker", "w1"}}), 2.5);
  EXPECT_EQ(FindValue(f, "forge_worker_devices", {{"kind", "cpu"}, {"worker", "w1"}}), 2);
  clock_.Advance(absl::Seconds(2));
  workers_->ExpireSilent();
  f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_workers", {{"state", "dead"}}), 1);
}

TEST_F(CoordinatorMetricsTest, RpcLabelsAreBounded) {
  metrics_->SetKnownMethods({"/forge.v1.JobService/SubmitJob", "forge.v1.WorkerService/Connect"});
  metrics_->OnRpc("/forge.v1.JobService/SubmitJob", grpc::StatusCode::OK, true,
                  absl::Milliseconds(3));
  metrics_->OnRpc("/forge.v1.JobService/SubmitJob", grpc::StatusCode::INVALID_ARGUMENT, true,
                  absl::Milliseconds(1));
  metrics_->OnRpc("/forge.v1.WorkerService/Connect", grpc::StatusCode::CANCELLED, false,
                  absl::Minutes(5));
  for (int i = 0; i < 50; ++i) {  // invented names, under our package too
    metrics_->OnRpc(absl::StrCat(i % 2 ? "/scanner.Probe/M" : "/forge.v1.JobService/M", i),
                    grpc::StatusCode::UNIMPLEMENTED, true, absl::Milliseconds(1));
  }
  auto f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_rpc_requests_total",
                      {{"code", "OK"}, {"method", "forge.v1.JobService/SubmitJob"}}),
            1);
  EXPECT_EQ(FindValue(f, "forge_rpc_requests_total",
                      {{"code", "INVALID_ARGUMENT"}, {"method", "forge.v1.JobService/SubmitJob"}}),
            1);
  EXPECT_EQ(
      FindValue(f, "forge_rpc_requests_total", {{"code", "UNIMPLEMENTED"}, {"method", "other"}}),
      50);
  EXPECT_EQ(FindValue(f, "forge_rpc_duration_seconds_count",
                      {{"method", "forge.v1.JobService/SubmitJob"}}),
            2);
  EXPECT_EQ(FindValue(f, "forge_rpc_duration_seconds_count",
                      {{"method", "forge.v1.WorkerService/Connect"}}),
            std::nullopt)
      << "streams are counted, not timed";
}

TEST_F(CoordinatorMetricsTest, CheckpointsAndHttp) {
  forge::v1::CheckpointInfo c;
  c.set_bytes(3 << 20);
  metrics_->OnCheckpoint(c, absl::Milliseconds(250));
  metrics_->OnCheckpoint(c, absl::Milliseconds(750));
  metrics_->OnHttpRequest("overview", 200);
  auto f = Scrape();
  EXPECT_EQ(FindValue(f, "forge_checkpoints_committed_total", {}), 2);
  EXPECT_EQ(FindValue(f, "forge_checkpoint_bytes_total", {}), 6 << 20);
  EXPECT_EQ(FindValue(f, "forge_checkpoint_upload_duration_seconds_sum", {}), 1.0);
  EXPECT_EQ(FindValue(f, "forge_checkpoint_size_bytes_count", {}), 2);
  EXPECT_EQ(FindValue(f, "forge_http_requests_total", {{"code", "200"}, {"handler", "overview"}}),
            1);
}

}  // namespace
}  // namespace forge::coordinator
