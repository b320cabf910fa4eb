#include "coordinator/job_manager.h"

#include <stdlib.h>

#include <future>

#include "absl/strings/str_cat.h"
#include "common/fake_clock.h"
#include "coordinator/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::CoordinatorMessage;
using forge::v1::Job;
using ::testing::HasSubstr;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;

forge::v1::SubmitJobRequest Request(int ranks = 2, const std::string& request_id = "") {
  forge::v1::SubmitJobRequest req;
  req.set_request_id(request_id);
  req.mutable_spec()->set_name("job");
  req.mutable_spec()->mutable_model()->set_preset("tiny");
  auto* m = req.mutable_spec()->mutable_data()->add_mixture();
  m->set_dataset("d");
  m->set_weight(1);
  req.mutable_spec()->mutable_resources()->set_ranks(ranks);
  req.mutable_spec()->set_max_restarts(1);
  return req;
}

Principal Tenant(const std::string& name) {
  Principal p;
  p.kind = forge::v1::TOKEN_KIND_TENANT;
  p.tenant = name;
  p.token_id = "t-" + name;
  return p;
}

Principal Admin() {
  Principal p;
  p.kind = forge::v1::TOKEN_KIND_ADMIN;
  p.token_id = "t-admin";
  return p;
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/jm-XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    Open();
  }
  void Open() {
    jobs_.reset();
    store_.reset();
    StoreOptions so;
    so.path = dir_ + "/forge.db";
    store_ = *Store::Open(so);
    JobManagerOptions o;
    o.send_to_worker = [this](const std::string& w, const CoordinatorMessage& m) {
      std::lock_guard<std::mutex> lock(sent_mu_);
      sent_.emplace_back(w, m);
      return true;
    };
    o.ack_timeout = absl::Seconds(30);
    // Each state change's rows (as the coordinator's alert outbox): one per change, in its
    // batch, and noted once committed.
    o.transition_rows = [this](const Job& job, forge::v1::JobState from,
                               WriteBatch* batch) -> std::function<void(absl::Status)> {
      const std::string change = absl::StrCat(job.id(), " ", forge::v1::JobState_Name(from), " ",
                                              forge::v1::JobState_Name(job.state()));
      EXPECT_EQ(batch->put_jobs.size(), 1u) << change;
      if (!batch->put_jobs.empty()) {
        EXPECT_EQ(batch->put_jobs[0].state(), job.state()) << change;
      }
      batch->put_alerts.push_back(
          {.id = absl::StrCat("row-", job.id(), "-", job.update_time().seconds(), "-",
                              job.update_time().nanos(), "-", job.restarts(), "-", job.state()),
           .body = change});
      return [this, change](absl::Status s) {
        std::lock_guard<std::mutex> lock(sent_mu_);
        if (s.ok()) changes_.push_back(change);
      };
    };
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, o);
    ASSERT_TRUE(jobs_->Recover().ok());
  }
  absl::StatusOr<forge::v1::SubmitJobResponse> Submit(const Principal& p,
                                                     forge::v1::SubmitJobRequest req) {
    return SubmitAndWait(*jobs_, p, std::move(req));
  }
  absl::StatusOr<Job> Cancel(const Principal& p, const std::string& id) {
    std::promise<absl::StatusOr<Job>> done;
    jobs_->Cancel(p, id, "", [&](auto r) { done.set_value(std::move(r)); });
    return done.get_future().get();
  }
  // Places `id` with rank i on (workers[i], "cpu:<i>") and waits for the commit.
  void Place(const std::string& id, const std::vector<std::string>& workers) {
    JobPlacement p{id, {}};
    for (size_t i = 0; i < workers.size(); ++i) {
      p.ranks.push_back({workers[i], absl::StrCat("cpu:", i)});
    }
    ASSERT_TRUE(jobs_->Place(p));
    Flush();
  }
  void Flush() { ASSERT_TRUE(store_->CommitSync({}).ok()); }  // callbacks before it have run
  std::vector<std::pair<std::string, CoordinatorMessage>> TakeSent() {
    std::lock_guard<std::mutex> lock(sent_mu_);
    return std::exchange(sent_, {});
  }
  Job Get(const std::string& id) { return *jobs_->Get(Admin(), id); }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<JobManager> jobs_;
  std::mutex sent_mu_;
  std::vector<std::pair<std::string, CoordinatorMessage>> sent_;
  std::vector<std::string> changes_;  // committed state changes, as transition_rows saw them
};

TEST_F(JobManagerTest, SubmitStoresDefaultsAndScopesByTenant) {
  auto r = Submit(Tenant("acme"), Request());
  ASSERT_TRUE(r.ok()) << r.status();
  const Job& job = r->job();
  EXPECT_THAT(job.id(), ::testing::MatchesRegex("j-[0-9a-f]{16}"));
  EXPECT_EQ(job.tenant(), "acme");
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(job.spec().train().has_steps());  // defaults filled
  EXPECT_EQ(jobs_->Get(Tenant("globex"), job.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(jobs_->Get(Tenant("acme"), job.id()).ok());
  EXPECT_TRUE(jobs_->Get(Admin(), job.id()).ok());
  EXPECT_EQ(jobs_->List(Tenant("globex"), {})->size(), 0u);
  EXPECT_EQ(jobs_->List(Tenant("acme"), {})->size(), 1u);
}

TEST_F(JobManagerTest, RefusedSubmissionsChangeNothing) {
  EXPECT_EQ(Submit(Admin(), Request()).status().code(), absl::StatusCode::kPermissionDenied);
  auto bad = Request();
  bad.mutable_spec()->mutable_data()->mutable_mixture(0)->set_weight(-1);
  auto r = Submit(Tenant("acme"), bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("data.mixture[0].weight"));
  EXPECT_EQ(Submit(Tenant("acme"), Request(1, "bad id!")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(jobs_->List(Admin(), {})->size(), 0u);
  Open();  // nothing reached the database either
  EXPECT_EQ(jobs_->List(Admin(), {})->size(), 0u);
}

TEST_F(JobManagerTest, RequestIdIsIdempotentAcrossRestart) {
  auto first = Submit(Tenant("acme"), Request(2, "req-1"));
  ASSERT_TRUE(first.ok());
  auto again = Submit(Tenant("acme"), Request(2, "req-1"));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->deduplicated());
  EXPECT_EQ(again->job().id(), first->job().id());
  // Same key, other tenant: a different job.
  auto other = Submit(Tenant("globex"), Request(2, "req-1"));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->job().id(), first->job().id());
  // Same key, different spec: refused.
  EXPECT_EQ(Submit(Tenant("acme"), Request(3, "req-1")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Open();
  auto after = Submit(Tenant("acme"), Request(2, "req-1"));
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->deduplicated());
  EXPECT_EQ(after->job().id(), first->job().id());
  EXPECT_EQ(jobs_->List(Admin(), {})->size(), 2u);
}

// A job from a base: the coordinator fills train.seq_len and batch_tokens from the resolved
// base's shape. A retry is the same request even when the base's model name resolves to
// another checkpoint (another context) by then.
TEST_F(JobManagerTest, RequestIdMatchesARetryWhoseBaseResolvesElsewhere) {
  auto submit = [&](int context, const std::string& checkpoint, bool resolved = true) {
    forge::v1::SubmitJobRequest req = Request(1, "req-base");
    req.mutable_spec()->clear_model();
    req.mutable_spec()->mutable_base()->set_model("acme-base");
    req.mutable_spec()->mutable_base()->set_stage(forge::v1::STAGE_MID_TRAINING);
    ResolvedBase base;
    base.checkpoint = checkpoint;
    base.stage = forge::v1::STAGE_MID_TRAINING;
    base.shape.set_layers(2);
    base.shape.set_heads(2);
    base.shape.set_width(64);
    base.shape.set_context(context);
    base.shape.set_vocab(256);
    std::promise<absl::StatusOr<forge::v1::SubmitJobResponse>> done;
    jobs_->Submit(
        Tenant("acme"), std::move(req), [&](auto r) { done.set_value(std::move(r)); },
        resolved ? &base : nullptr);
    return done.get_future().get();
  };
  auto first = submit(64, "c-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->job().spec().train().seq_len(), 64);
  EXPECT_EQ(first->job().spec().train().batch_tokens(), 64 * 8);
  auto again = submit(128, "c-2");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->deduplicated());
  EXPECT_EQ(again->job().id(), first->job().id());
  EXPECT_EQ(again->job().base_checkpoint(), "c-1");
  // Or to none: the retry is answered before anything is checked again.
  auto unresolved = submit(128, "", /*resolved=*/false);
  ASSERT_TRUE(unresolved.ok()) << unresolved.status();
  EXPECT_TRUE(unresolved->deduplicated());
  EXPECT_EQ(jobs_->List(Admin(), {})->size(), 1u);
}

// Submissions of one request_id that arrive before the first one's commit lands are answered
// with it as retries would be: the same spec gets the job, deduplicated; another spec is
// refused. (Whether the first commit lands before a later call is the store's timing; the
// answers are the same either way.)
TEST_F(JobManagerTest, RequestIdSubmittedTwiceAtOnceIsAnsweredAsARetry) {
  using Answer = absl::StatusOr<forge::v1::SubmitJobResponse>;
  std::promise<Answer> a, b, c;
  jobs_->Submit(Tenant("acme"), Request(2, "req-x"), [&](Answer r) { a.set_value(std::move(r)); });
  jobs_->Submit(Tenant("acme"), Request(2, "req-x"), [&](Answer r) { b.set_value(std::move(r)); });
  jobs_->Submit(Tenant("acme"), Request(3, "req-x"), [&](Answer r) { c.set_value(std::move(r)); });
  Answer first = a.get_future().get(), same = b.get_future().get(), other = c.get_future().get();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->deduplicated());
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->deduplicated());
  EXPECT_EQ(same->job().id(), first->job().id());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_EQ(jobs_->List(Admin(), {})->size(), 1u);
}

// The stage a retry leaves out is filled from the retry, not copied from the job it matches.
TEST_F(JobManagerTest, RequestIdRefusesARetryWhoseStageDiffers) {
  forge::v1::SubmitJobRequest mid = Request(1, "req-stage");
  mid.mutable_spec()->set_stage(forge::v1::STAGE_MID_TRAINING);
  ASSERT_TRUE(Submit(Tenant("acme"), mid).ok());
  forge::v1::SubmitJobRequest unset = Request(1, "req-stage");  // a fresh model: pre-training
  EXPECT_EQ(Submit(Tenant("acme"), unset).status().code(), absl::StatusCode::kFailedPrecondition);
  auto same = Submit(Tenant("acme"), mid);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->deduplicated());
}

TEST_F(JobManagerTest, PlaceSendsAssignmentsAndHoldsDevices) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  ASSERT_EQ(jobs_->PendingQueue().size(), 1u);
  Place(id, {"wa", "wb"});
  EXPECT_FALSE(jobs_->Place({id, {{"wa", "cpu:0"}, {"wb", "cpu:1"}}}));  // no longer pending
  Job job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_THAT(job.message(), HasSubstr("placed; starting trainer ranks"));
  EXPECT_TRUE(jobs_->PendingQueue().empty());
  auto busy = jobs_->BusyDevices();
  EXPECT_TRUE(busy.contains({"wa", "cpu:0"}));
  EXPECT_TRUE(busy.contains({"wb", "cpu:1"}));
  auto sent = TakeSent();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].first, "wa");
  EXPECT_EQ(sent[0].second.assign().rank(), 0);
  EXPECT_EQ(sent[0].second.assign().world_size(), 2);
  EXPECT_EQ(sent[0].second.assign().attempt(), 1);
  EXPECT_EQ(sent[1].first, "wb");
  // The placement is durable.
  Open();
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get(id).placement_size(), 2);
}

TEST_F(JobManagerTest, LostWorkerRestartsThenFails) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();  // max_restarts 1
  Place(id, {"wa", "wb"});
  TakeSent();
  jobs_->OnWorkerLost("wb", "no heartbeat");
  Flush();
  Job job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_EQ(job.restarts(), 1);
  EXPECT_EQ(job.placement_size(), 0);
  EXPECT_THAT(job.message(), HasSubstr("worker wb lost"));
  EXPECT_TRUE(jobs_->BusyDevices().empty());
  EXPECT_EQ(jobs_->PendingQueue().size(), 1u);
  // Every worker of the failed attempt is told to stop it.
  auto sent = TakeSent();
  ASSERT_EQ(sent.size(), 2u);
  for (const auto& [w, m] : sent) {
    EXPECT_EQ(m.stop().job_id(), id);
    EXPECT_EQ(m.stop().attempt(), 1);
  }
  Place(id, {"wa", "wc"});
  EXPECT_EQ(Get(id).attempt(), 2);
  jobs_->OnWorkerLost("wc", "no heartbeat");
  Flush();
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_FAILED);
  EXPECT_THAT(Get(id).message(), HasSubstr("no restarts left"));
  EXPECT_TRUE(jobs_->PendingQueue().empty());
  jobs_->OnWorkerLost("wa", "again");  // a terminal job is left alone
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_FAILED);
  Flush();
  // Each change's rows were committed in its own batch (so durable with it): one row per
  // change, none for the submission.
  {
    std::lock_guard<std::mutex> lock(sent_mu_);
    EXPECT_THAT(changes_, ElementsAre(id + " JOB_STATE_QUEUED JOB_STATE_RUNNING",
                                      id + " JOB_STATE_RUNNING JOB_STATE_RESTARTING",
                                      id + " JOB_STATE_RESTARTING JOB_STATE_RUNNING",
                                      id + " JOB_STATE_RUNNING JOB_STATE_FAILED"));
  }
  absl::StatusOr<std::vector<AlertRecord>> rows = store_->LoadAlerts();
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<std::string> bodies;
  for (const AlertRecord& r : *rows) bodies.push_back(r.body);
  EXPECT_THAT(bodies, UnorderedElementsAreArray(changes_));
}

TEST_F(JobManagerTest, CancelFreesDevicesAndStopsRanks) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wa"});
  TakeSent();
  EXPECT_EQ(Cancel(Tenant("globex"), id).status().code(), absl::StatusCode::kNotFound);
  auto cancelled = Cancel(Tenant("acme"), id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), forge::v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(jobs_->BusyDevices().empty());
  auto sent = TakeSent();
  ASSERT_EQ(sent.size(), 1u);  // one stop per worker
  EXPECT_EQ(sent[0].second.stop().job_id(), id);
  EXPECT_EQ(Cancel(Tenant("acme"), id).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, RefusedAckAndAckTimeoutFailTheAttempt) {
  const std::string a = Submit(Tenant("acme"), Request(1))->job().id();
  const std::string b = Submit(Tenant("acme"), Request(1))->job().id();
  Place(a, {"wa"});
  Place(b, {"wb"});
  forge::v1::AssignmentAck refused;
  refused.set_job_id(a);
  refused.set_attempt(1);
  refused.set_rank(0);
  refused.set_accepted(false);
  refused.set_message("device busy");
  jobs_->OnAssignmentAck("wa", refused);
  Flush();
  EXPECT_EQ(Get(a).state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_THAT(Get(a).message(), HasSubstr("device busy"));
  // b is never acknowledged: after the timeout its attempt fails too.
  clock_.Advance(absl::Seconds(29));
  jobs_->CheckAckTimeouts();
  EXPECT_EQ(Get(b).state(), forge::v1::JOB_STATE_RUNNING);
  clock_.Advance(absl::Seconds(2));
  jobs_->CheckAckTimeouts();
  Flush();
  EXPECT_EQ(Get(b).state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_THAT(Get(b).message(), HasSubstr("not acknowledged"));
}

TEST_F(JobManagerTest, ReconcileStopsStaleResendsUnackedAndFailsLost) {
  const std::string acked = Submit(Tenant("acme"), Request(1))->job().id();
  const std::string unacked = Submit(Tenant("acme"), Request(1))->job().id();
  Place(acked, {"wa"});
  Place(unacked, {"wa"});
  forge::v1::AssignmentAck ack;
  ack.set_job_id(acked);
  ack.set_attempt(1);
  ack.set_rank(0);
  ack.set_accepted(true);
  jobs_->OnAssignmentAck("wa", ack);
  TakeSent();
  // The worker comes back holding only a rank of a job attempt that no longer exists.
  forge::v1::RankInfo stale;
  stale.set_job_id("j-ffffffffffffffff");
  stale.set_attempt(3);
  stale.set_rank(0);
  jobs_->ReconcileWorker("wa", {stale});
  Flush();
  auto sent = TakeSent();
  bool stopped_stale = false, resent_unacked = false;
  for (const auto& [w, m] : sent) {
    if (m.has_stop() && m.stop().job_id() == stale.job_id()) stopped_stale = true;
    if (m.has_assign() && m.assign().job_id() == unacked) resent_unacked = true;
  }
  EXPECT_TRUE(stopped_stale);
  EXPECT_TRUE(resent_unacked);
  EXPECT_EQ(Get(unacked).state(), forge::v1::JOB_STATE_RUNNING);
  // It had accepted `acked` and no longer holds it: that rank is lost.
  EXPECT_EQ(Get(acked).state(), forge::v1::JOB_STATE_RESTARTING);
}

}  // namespace
}  // namespace forge::coordinator

// --- Trainer ranks: progress, checkpoints, exits, the finish, step timeouts ----------------

namespace forge::coordinator {
namespace {

TEST_F(JobManagerTest, ProgressFinishAndMetrics) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wb"});
  Job job = Get(id);
  for (int rank : {0, 1}) {
    forge::v1::ProgressReport r = ProgressReportFor(job, rank, 5);
    r.set_mfu(0.41);  // a GPU rank's
    EXPECT_FALSE(jobs_->OnProgress(r).stop());
  }
  Flush();
  job = Get(id);
  EXPECT_TRUE(job.trainer_attached());
  EXPECT_EQ(job.progress().step(), 5);
  EXPECT_DOUBLE_EQ(job.progress().tokens_per_second(), 2000);  // both ranks
  EXPECT_DOUBLE_EQ(job.progress().mfu(), 0.41);                // each device's, not summed
  EXPECT_EQ(job.progress().tokens_per_source().at("d"), 5 * 512);
  auto points = store_->LoadMetrics(id, 0);
  ASSERT_TRUE(points.ok());
  ASSERT_EQ(points->size(), 1u);  // rank 0 only
  EXPECT_EQ((*points)[0].step(), 5);

  forge::v1::CheckpointInfo cp;
  cp.set_id("c-1");
  cp.set_job_id(id);
  cp.set_step(5);
  jobs_->OnCheckpointCommitted(cp);
  EXPECT_EQ(Get(id).progress().last_checkpoint_step(), 5);

  // Only rank 0 of the running attempt may finish the job.
  forge::v1::FinishJobRequest finish;
  *finish.mutable_rank() = ProgressReportFor(job, 1, 5).rank();
  finish.set_final_checkpoint("c-1");
  std::promise<absl::Status> refused;
  jobs_->Finish(finish, [&](absl::Status s) { refused.set_value(s); });
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.get_future().get()));
  finish.mutable_rank()->set_rank(0);
  std::promise<absl::Status> done;
  jobs_->Finish(finish, [&](absl::Status s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.final_checkpoint(), "c-1");
  ASSERT_EQ(job.attempts_size(), 1);
  EXPECT_EQ(job.attempts(0).end_reason(), "succeeded");
  EXPECT_TRUE(jobs_->BusyDevices().empty());
  // A report from the finished attempt is told to stop.
  EXPECT_TRUE(jobs_->OnProgress(ProgressReportFor(job, 0, 5)).stop());
}

TEST_F(JobManagerTest, RankFailureRestartsAndRecordsLostSteps) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wb"});
  Job job = Get(id);
  forge::v1::ProgressReport gpu = ProgressReportFor(job, 0, 12);
  gpu.set_mfu(0.4);
  jobs_->OnProgress(gpu);
  EXPECT_GT(Get(id).progress().tokens_per_second(), 0);
  forge::v1::CheckpointInfo cp;
  cp.set_id("c-10");
  cp.set_job_id(id);
  cp.set_step(10);
  jobs_->OnCheckpointCommitted(cp);
  // A clean exit of a rank is not a failure; a crash is.
  forge::v1::RankExited exited;
  exited.set_job_id(id);
  exited.set_attempt(1);
  exited.set_rank(1);
  exited.set_exit_code(0);
  jobs_->OnRankExited("wb", exited);
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_RUNNING);
  exited.set_exit_code(137);
  jobs_->OnRankExited("wa", exited);  // not the worker that holds rank 1: ignored
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_RUNNING);
  jobs_->OnRankExited("wb", exited);
  Flush();
  job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_THAT(job.message(), HasSubstr("killed by signal 9"));
  ASSERT_EQ(job.attempts_size(), 1);
  EXPECT_EQ(job.attempts(0).last_step(), 12);
  EXPECT_EQ(job.attempts(0).lost_steps(), 2);

  // The next attempt's recovery time runs from the failure to its first step.
  clock_.Advance(absl::Seconds(7));
  Place(id, {"wa", "wc"});
  job = Get(id);
  ASSERT_EQ(job.attempt(), 2);
  // Nothing trains until the new attempt reports: no throughput, MFU or ETA carried over.
  EXPECT_EQ(job.progress().tokens_per_second(), 0);
  EXPECT_EQ(job.progress().mfu(), 0);
  EXPECT_EQ(job.progress().eta_seconds(), 0);
  clock_.Advance(absl::Seconds(2));
  jobs_->OnProgress(ProgressReportFor(job, 0, 11));
  job = Get(id);
  ASSERT_EQ(job.attempts_size(), 2);
  EXPECT_DOUBLE_EQ(job.attempts(1).recover_seconds(), 9);
}

TEST_F(JobManagerTest, DivergedReplicasFailTheJobWithoutRestart) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wb"});
  forge::v1::RankExited exited;
  exited.set_job_id(id);
  exited.set_attempt(1);
  exited.set_rank(0);
  exited.set_exit_code(JobManager::kDivergedExitCode);
  exited.set_reason("rank 1 weights diverged from rank 0 at step 20");
  jobs_->OnRankExited("wa", exited);
  Flush();
  Job job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.message(), HasSubstr("diverged"));
  EXPECT_EQ(job.restarts(), 0);
}

TEST_F(JobManagerTest, SilentRankFailsItsAttemptAfterTheStepTimeout) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wb"});
  Job job = Get(id);
  jobs_->OnProgress(ProgressReportFor(job, 0, 1));
  jobs_->OnProgress(ProgressReportFor(job, 1, 1));
  clock_.Advance(absl::Seconds(100));
  jobs_->OnProgress(ProgressReportFor(job, 0, 2));  // rank 1 is silent
  jobs_->CheckStepTimeouts();
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_RUNNING);  // 100 s < 120 s default
  clock_.Advance(absl::Seconds(30));
  jobs_->CheckStepTimeouts();
  Flush();
  job = Get(id);
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RESTARTING);
  EXPECT_THAT(job.message(), HasSubstr("rank 1 on worker wb made no progress"));
}

TEST_F(JobManagerTest, RankThatFinishedItsPartIsNotTimedOut) {
  const std::string id = Submit(Tenant("acme"), Request(2))->job().id();
  Place(id, {"wa", "wb"});
  Job job = Get(id);
  jobs_->OnProgress(ProgressReportFor(job, 0, 100));
  jobs_->OnProgress(ProgressReportFor(job, 1, 100));
  forge::v1::RankExited exited;
  exited.set_job_id(id);
  exited.set_attempt(1);
  exited.set_rank(1);
  exited.set_exit_code(0);  // rank 1 is done; rank 0 uploads and evaluates for a long time
  jobs_->OnRankExited("wb", exited);
  clock_.Advance(absl::Seconds(200));
  jobs_->OnProgress(ProgressReportFor(job, 0, 100));  // rank 0's keepalive
  jobs_->CheckStepTimeouts();
  EXPECT_EQ(Get(id).state(), forge::v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace forge::coordinator

namespace forge::coordinator {
namespace {

forge::v1::EvalResult Eval(const std::string& suite, double loss) {
  forge::v1::EvalResult e;
  e.set_suite(suite);
  e.set_loss(loss);
  return e;
}

TEST(GuardVerdictTest, ComparesTheGuardedSuiteWithTheBaseWithinTheBudget) {
  forge::v1::Job job;
  job.mutable_spec()->mutable_guard()->set_suite("general");
  job.mutable_spec()->mutable_guard()->set_max_regression(0.02);
  *job.add_base_evals() = Eval("general", 2.0);
  *job.add_base_evals() = Eval("domain", 3.0);
  *job.add_evals() = Eval("domain", 1.0);  // the domain improving does not matter
  *job.add_evals() = Eval("general", 2.03);  // +1.5 %
  forge::v1::GuardVerdict v = JobManager::GuardVerdictFor(job);
  EXPECT_TRUE(v.passed()) << v.message();
  EXPECT_NEAR(v.regression(), 0.015, 1e-12);
  EXPECT_EQ(v.base_loss(), 2.0);
  EXPECT_THAT(v.message(), ::testing::HasSubstr("passed: general"));

  job.mutable_evals(1)->set_loss(2.05);  // +2.5 %: over the budget
  v = JobManager::GuardVerdictFor(job);
  EXPECT_FALSE(v.passed());
  EXPECT_THAT(v.message(), ::testing::HasSubstr("blocked"));
  EXPECT_THAT(v.message(), ::testing::HasSubstr("+2.50%"));

  job.clear_base_evals();  // never measured: blocked, never promoted by default
  v = JobManager::GuardVerdictFor(job);
  EXPECT_FALSE(v.passed());
  EXPECT_THAT(v.message(), ::testing::HasSubstr("no base held-out result"));
}

// Several guarded suites: each within the budget, or the job is blocked; the headline fields
// are the worst suite's.
TEST(GuardVerdictTest, EveryGuardedSuiteMustBeWithinTheBudget) {
  forge::v1::Job job;
  forge::v1::GuardSpec* g = job.mutable_spec()->mutable_guard();
  g->add_suites("general");
  g->add_suites("code");
  g->set_max_regression(0.02);
  *job.add_base_evals() = Eval("general", 2.0);
  *job.add_base_evals() = Eval("code", 1.0);
  *job.add_evals() = Eval("general", 2.02);  // +1 %
  *job.add_evals() = Eval("code", 0.99);     // -1 %
  forge::v1::GuardVerdict v = JobManager::GuardVerdictFor(job);
  EXPECT_TRUE(v.passed()) << v.message();
  ASSERT_EQ(v.suites_size(), 2);
  EXPECT_EQ(v.suites(0).suite(), "general");
  EXPECT_TRUE(v.suites(0).measured());
  EXPECT_TRUE(v.suites(1).passed());
  EXPECT_NEAR(v.suites(1).regression(), -0.01, 1e-12);
  EXPECT_EQ(v.suite(), "general");  // the larger regression
  EXPECT_NEAR(v.regression(), 0.01, 1e-12);
  EXPECT_EQ(v.message(),
            "passed: general held-out loss 2.0200 vs base 2.0000 (+1.00%, within); code "
            "held-out loss 0.9900 vs base 1.0000 (-1.00%, within); budget +2.00% each");

  job.mutable_evals(1)->set_loss(1.03);  // code +3 %: blocked, though general is within
  v = JobManager::GuardVerdictFor(job);
  EXPECT_FALSE(v.passed());
  EXPECT_TRUE(v.suites(0).passed());
  EXPECT_FALSE(v.suites(1).passed());
  EXPECT_EQ(v.suite(), "code");
  EXPECT_EQ(v.loss(), 1.03);
  EXPECT_THAT(v.message(), ::testing::StartsWith("blocked: "));
  EXPECT_THAT(v.message(), ::testing::HasSubstr("code held-out loss 1.0300 vs base 1.0000 "
                                                "(+3.00%, over)"));

  job.mutable_evals()->RemoveLast();  // code never measured at the end: blocked
  job.mutable_evals(0)->set_loss(2.0);
  v = JobManager::GuardVerdictFor(job);
  EXPECT_FALSE(v.passed());
  EXPECT_FALSE(v.suites(1).measured());
  EXPECT_EQ(v.suite(), "code");  // an unmeasured suite is the headline
  EXPECT_THAT(v.message(), ::testing::HasSubstr("no final held-out result for suite code"));
}

}  // namespace
}  // namespace forge::coordinator
