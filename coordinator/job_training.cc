// JobManager: what trainer ranks report (progress, checkpoints, exits, the finish) and the
// step timeout. The placement half of the class is in job_manager.cc.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/guard_spec.h"
#include "common/log.h"
#include "common/proto_time.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_state.h"

namespace forge::coordinator {

using forge::v1::Job;

forge::v1::JobAttempt* JobManager::CurrentAttempt(Entry& e) {
  if (e.job.attempts_size() == 0) return e.job.add_attempts();  // jobs placed by old versions
  return e.job.mutable_attempts(e.job.attempts_size() - 1);
}

void JobManager::EndAttemptLocked(Entry& e, absl::string_view reason) {
  forge::v1::JobAttempt* a = CurrentAttempt(e);
  if (a->has_end_time()) return;
  *a->mutable_end_time() = ToProtoTime(clock_->Now());
  a->set_end_reason(std::string(reason));
  const int64_t saved = std::max(a->resumed_from_step(), e.job.progress().last_checkpoint_step());
  a->set_lost_steps(std::max<int64_t>(0, a->last_step() - saved));
}

absl::Status JobManager::CheckRank(const forge::v1::RankRef& ref, std::string* tenant,
                                   forge::v1::JobSpec* spec) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(ref.job_id());
  if (it == jobs_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", ref.job_id(), " is unknown"));
  }
  const Job& job = it->second.job;
  if (job.state() != forge::v1::JOB_STATE_RUNNING || job.attempt() != ref.attempt() ||
      ref.rank() < 0 || ref.rank() >= job.placement_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", ref.job_id(), " attempt ", ref.attempt(), " rank ", ref.rank(),
        " is not running (job is ", JobStateName(job.state()), " at attempt ", job.attempt(),
        "); stop"));
  }
  if (tenant != nullptr) *tenant = job.tenant();
  if (spec != nullptr) *spec = job.spec();
  return absl::OkStatus();
}

forge::v1::ProgressResponse JobManager::OnProgress(const forge::v1::ProgressReport& report) {
  forge::v1::ProgressResponse resp;
  const forge::v1::RankRef& ref = report.rank();
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(ref.job_id());
  if (it == jobs_.end() || it->second.job.state() != forge::v1::JOB_STATE_RUNNING ||
      it->second.job.attempt() != ref.attempt() || ref.rank() < 0 ||
      ref.rank() >= static_cast<int>(it->second.ranks.size())) {
    resp.set_stop(true);
    resp.set_reason(it == jobs_.end() ? "unknown job"
                                      : absl::StrCat("attempt ", ref.attempt(), " is over (job ",
                                                     JobStateName(it->second.job.state()),
                                                     ", attempt ", it->second.job.attempt(), ")"));
    return resp;
  }
  Entry& e = it->second;
  const absl::Time now = clock_->Now();
  RankRuntime& rt = e.ranks[ref.rank()];
  rt.last_progress = now;
  rt.step = report.step();
  rt.acked = true;  // a reporting trainer proves the worker holds the rank
  if (ref.rank() != 0) return resp;

  forge::v1::JobAttempt* attempt = CurrentAttempt(e);
  const bool first_step = attempt->last_step() == 0 && report.step() > attempt->resumed_from_step();
  // Recovery time: from the end of the previous attempt (durable, so it survives a
  // coordinator restart) to this attempt's first step.
  const int n = e.job.attempts_size();
  if (first_step && n >= 2 && e.job.attempts(n - 2).has_end_time()) {
    attempt->set_recover_seconds(
        absl::ToDoubleSeconds(now - FromProtoTime(e.job.attempts(n - 2).end_time())));
  }
  if (report.step() > attempt->resumed_from_step()) attempt->set_last_step(report.step());

  forge::v1::JobProgress* p = e.job.mutable_progress();
  const std::string old_phase = p->phase();
  p->set_step(report.step());
  p->set_total_steps(report.total_steps());
  p->set_phase(report.phase());
  *p->mutable_update_time() = ToProtoTime(now);
  if (report.phase() == "training" || report.loss() != 0) {
    p->set_loss(report.loss());
    p->set_lr(report.lr());
    p->set_grad_norm(report.grad_norm());
    const double all_ranks = report.tokens_per_second() * std::max(1, report.world_size());
    p->set_tokens_per_second(all_ranks);
    p->set_mfu(report.mfu());  // the job's: the rank divides by every rank's peak
    *p->mutable_tokens_per_source() = report.tokens_per_source();
    const int64_t left = report.total_steps() - report.step();
    const int64_t tokens_per_step =
        e.job.spec().train().batch_tokens() > 0 ? e.job.spec().train().batch_tokens() : 0;
    p->set_eta_seconds(all_ranks > 0 && tokens_per_step > 0
                           ? static_cast<int64_t>(left * tokens_per_step / all_ranks)
                           : 0);
  }
  if (report.evals_size() > 0) *e.job.mutable_evals() = report.evals();
  // The starting weights' evals: the first report of them is kept (a restarted attempt
  // resumes from a checkpoint and does not measure them again).
  const bool new_base_evals = report.base_evals_size() > 0 && e.job.base_evals_size() == 0;
  if (new_base_evals) *e.job.mutable_base_evals() = report.base_evals();
  const bool attached = e.job.trainer_attached();
  e.job.set_trainer_attached(true);
  e.job.set_message(absl::StrCat(report.phase(), ": step ", report.step(), " of ",
                                 report.total_steps()));

  WriteBatch batch;
  if (report.phase() == "training") {
    MetricRecord m;
    m.job_id = e.job.id();
    forge::v1::MetricPoint& pt = m.point;
    pt.set_attempt(ref.attempt());
    pt.set_step(report.step());
    pt.set_loss(report.loss());
    pt.set_lr(report.lr());
    pt.set_grad_norm(report.grad_norm());
    pt.set_tokens_per_second(p->tokens_per_second());
    *pt.mutable_tokens_per_source() = report.tokens_per_source();
    *pt.mutable_time() = ToProtoTime(now);
    batch.put_metrics.push_back(std::move(m));
  }
  if (!attached || old_phase != report.phase() || report.evals_size() > 0 || new_base_evals ||
      now - e.last_progress_commit >= options_.progress_commit_interval) {
    e.last_progress_commit = now;
    *e.job.mutable_update_time() = ToProtoTime(now);
    batch.put_jobs.push_back(e.job);
  }
  if (!batch.empty()) {
    store_->Commit(std::move(batch), [id = e.job.id()](absl::Status s) {
      if (!s.ok()) FORGE_LOG(WARNING) << "event=progress_commit_failed job=" << id << " error=" << s;
    });
  }
  return resp;
}

void JobManager::OnCheckpointCommitted(const forge::v1::CheckpointInfo& info) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(info.job_id());
  if (it == jobs_.end()) return;
  Entry& e = it->second;
  forge::v1::JobProgress* p = e.job.mutable_progress();
  if (info.step() <= p->last_checkpoint_step()) return;
  p->set_last_checkpoint_step(info.step());
  FORGE_LOG(INFO) << "event=checkpoint_committed job=" << info.job_id() << " step=" << info.step()
                  << " id=" << info.id();
  CommitJobLocked(e.job, [](absl::Status) {});
}

void JobManager::Finish(const forge::v1::FinishJobRequest& request,
                        std::function<void(absl::Status)> done) {
  Outbox stops;
  {
    absl::MutexLock lock(&mu_);
    const forge::v1::RankRef& ref = request.rank();
    auto it = jobs_.find(ref.job_id());
    if (it != jobs_.end() && it->second.job.state() == forge::v1::JOB_STATE_SUCCEEDED &&
        it->second.job.final_checkpoint() == request.final_checkpoint()) {
      // A retried finish whose first answer was lost: acknowledged once it is durable.
      if (it->second.finish_committed) return done(absl::OkStatus());
      return done(absl::UnavailableError("the job's success is being stored; retry"));
    }
    if (it == jobs_.end() || it->second.job.state() != forge::v1::JOB_STATE_RUNNING ||
        it->second.job.attempt() != ref.attempt() || ref.rank() != 0) {
      return done(absl::FailedPreconditionError(absl::StrCat(
          "job ", ref.job_id(), " attempt ", ref.attempt(), " rank ", ref.rank(),
          " cannot finish the job: it is not rank 0 of the running attempt")));
    }
    Entry& e = it->second;
    e.job.set_final_checkpoint(request.final_checkpoint());
    if (request.evals_size() > 0) *e.job.mutable_evals() = request.evals();
    std::vector<ChannelRecord> promotion;
    if (e.job.spec().has_guard()) {
      *e.job.mutable_guard() = GuardVerdictFor(e.job);
      const std::string& channel = e.job.spec().promote().channel();
      if (e.job.guard().passed() && !channel.empty() && options_.catalog != nullptr) {
        forge::v1::ChannelEntry entry;
        entry.set_channel(channel);
        entry.set_checkpoint(request.final_checkpoint());
        entry.set_job_id(e.job.id());
        entry.set_suite(e.job.guard().suite());
        entry.set_base_loss(e.job.guard().base_loss());
        entry.set_loss(e.job.guard().loss());
        absl::StatusOr<ChannelRecord> record =
            options_.catalog->PreparePromotion(e.job.tenant(), std::move(entry));
        if (record.ok()) {
          promotion.push_back(*record);
          e.job.mutable_guard()->set_promoted_to(channel);
          e.job.mutable_guard()->set_message(
              absl::StrCat(e.job.guard().message(), "; promoted to ", channel));
        } else {
          e.job.mutable_guard()->set_message(absl::StrCat(
              e.job.guard().message(), "; promotion to ", channel, " failed: ",
              record.status().message()));
        }
      }
    }
    forge::v1::JobProgress* p = e.job.mutable_progress();
    p->set_phase("done");
    p->set_eta_seconds(0);
    EndAttemptLocked(e, "succeeded");
    CurrentAttempt(e)->set_lost_steps(0);
    stops = StopMessagesLocked(e, "the job succeeded");
    e.job.clear_placement();
    e.ranks.clear();
    FORGE_LOG(INFO) << "event=job_finished job=" << e.job.id() << " attempt=" << e.job.attempt()
                    << " checkpoint=" << request.final_checkpoint();
    std::string message = absl::StrCat("succeeded at step ", p->step(), "; final checkpoint ",
                                       request.final_checkpoint());
    if (e.job.has_guard()) absl::StrAppend(&message, "; guard: ", e.job.guard().message());
    // Applied to the catalog once the batch that carries it (with the job) is durable. A
    // separate copy: the batch's is moved in the same call that builds this callback.
    std::vector<ChannelRecord> applied = promotion;
    TransitionLocked(e, forge::v1::JOB_STATE_SUCCEEDED, std::move(message),
                     [this, id = e.job.id(), stops = std::move(stops),
                      promotion = std::move(applied),
                      done = std::move(done)](absl::Status s) {
                       if (s.ok()) {
                         for (const ChannelRecord& r : promotion) {
                           options_.catalog->ApplyPromotion(r);
                         }
                         absl::MutexLock lock(&mu_);
                         if (auto j = jobs_.find(id); j != jobs_.end()) {
                           j->second.finish_committed = true;
                         }
                       }
                       // The ranks stop either way: their part is done.
                       SendAll(stops);
                       if (!s.ok()) {
                         return done(absl::UnavailableError(absl::StrCat(
                             "the job's success could not be stored (", s.message(), "); retry")));
                       }
                       done(absl::OkStatus());
                     },
                     std::move(promotion));
  }
}

forge::v1::GuardVerdict JobManager::GuardVerdictFor(const forge::v1::Job& job) {
  const forge::v1::GuardSpec& g = job.spec().guard();
  forge::v1::GuardVerdict v;
  v.set_max_regression(g.max_regression());
  auto find = [](const auto& results, const std::string& suite) {
    const forge::v1::EvalResult* found = nullptr;
    for (const auto& r : results) {
      if (r.suite() == suite) found = &r;
    }
    return found;
  };
  const std::vector<std::string> suites = GuardedSuites(g);
  const bool several = suites.size() > 1;
  bool passed = true;
  const forge::v1::SuiteRegression* worst = nullptr;  // the verdict's headline suite
  std::vector<std::string> parts;
  for (const std::string& suite : suites) {
    forge::v1::SuiteRegression* r = v.add_suites();
    r->set_suite(suite);
    const forge::v1::EvalResult* base = find(job.base_evals(), suite);
    const forge::v1::EvalResult* final = find(job.evals(), suite);
    if (base == nullptr || final == nullptr || base->loss() <= 0) {
      passed = false;
      parts.push_back(absl::StrCat("no ", base == nullptr ? "base" : "final",
                                   " held-out result for suite ", suite,
                                   ", so the regression cannot be measured"));
      if (worst == nullptr || worst->measured()) worst = r;
      continue;
    }
    r->set_measured(true);
    r->set_base_loss(base->loss());
    r->set_loss(final->loss());
    r->set_regression((final->loss() - base->loss()) / base->loss());
    r->set_passed(r->regression() <= g.max_regression());
    passed = passed && r->passed();
    if (worst == nullptr || (worst->measured() && r->regression() > worst->regression())) {
      worst = r;
    }
    const std::string budget = several
                                   ? (r->passed() ? "within" : "over")
                                   : absl::StrFormat("budget %+.2f%%", 100 * g.max_regression());
    parts.push_back(absl::StrFormat("%s held-out loss %.4f vs base %.4f (%+.2f%%, %s)", suite,
                                    final->loss(), base->loss(), 100 * r->regression(), budget));
  }
  v.set_passed(passed);
  if (worst != nullptr) {
    v.set_suite(worst->suite());
    v.set_base_loss(worst->base_loss());
    v.set_loss(worst->loss());
    v.set_regression(worst->regression());
  }
  std::string message =
      absl::StrCat(passed ? "passed" : "blocked", ": ", absl::StrJoin(parts, "; "));
  if (several) {
    absl::StrAppend(&message, absl::StrFormat("; budget %+.2f%% each", 100 * g.max_regression()));
  }
  v.set_message(std::move(message));
  return v;
}

void JobManager::OnRankExited(const std::string& worker_id, const forge::v1::RankExited& exited) {
  Outbox outbox;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(exited.job_id());
    if (it == jobs_.end()) return;
    Entry& e = it->second;
    if (e.job.state() != forge::v1::JOB_STATE_RUNNING || e.job.attempt() != exited.attempt() ||
        exited.rank() < 0 || exited.rank() >= e.job.placement_size() ||
        e.job.placement(exited.rank()).worker_id() != worker_id) {
      return;  // an earlier attempt's rank, or one already accounted for
    }
    if (exited.exit_code() == 0) {  // done with its part; rank 0 finishes the job
      e.ranks[exited.rank()].exited_ok = true;
      return;
    }
    std::string why = absl::StrCat("rank ", exited.rank(), " on worker ", worker_id,
                                   exited.exit_code() > 128 ? " was killed by signal "
                                                            : " exited with code ",
                                   exited.exit_code() > 128 ? exited.exit_code() - 128
                                                            : exited.exit_code());
    if (!exited.reason().empty()) absl::StrAppend(&why, ": ", exited.reason());
    if (exited.exit_code() == kDivergedExitCode || exited.exit_code() == kInvalidExitCode) {
      // Replicas that disagree will disagree again after a restart: fail loudly.
      Outbox stops = StopMessagesLocked(e, why);
      outbox.insert(outbox.end(), stops.begin(), stops.end());
      EndAttemptLocked(e, why);
      e.job.clear_placement();
      e.ranks.clear();
      FORGE_LOG(ERROR) << "event=job_diverged job=" << e.job.id() << " why=\"" << why << "\"";
      TransitionLocked(e, forge::v1::JOB_STATE_FAILED, why, [](absl::Status) {});
    } else {
      FailAttemptLocked(e, why, &outbox);
    }
  }
  SendAll(outbox);
}

void JobManager::CheckStepTimeouts() {
  Outbox outbox;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto& [id, e] : jobs_) {
      if (e.job.state() != forge::v1::JOB_STATE_RUNNING) continue;
      for (int r = 0; r < static_cast<int>(e.ranks.size()); ++r) {
        const RankRuntime& rt = e.ranks[r];
        if (!rt.acked || rt.exited_ok || now - rt.last_progress <= options_.step_timeout) {
          continue;
        }
        FailAttemptLocked(
            e,
            absl::StrCat("rank ", r, " on worker ", e.job.placement(r).worker_id(),
                         " made no progress for ", absl::FormatDuration(now - rt.last_progress),
                         " (step timeout ", absl::FormatDuration(options_.step_timeout),
                         "; last step ", rt.step, ")"),
            &outbox);
        break;
      }
    }
  }
  SendAll(outbox);
}

bool JobManager::CheckpointInUse(absl::string_view checkpoint_id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : jobs_) {
    if (IsTerminal(e.job.state())) continue;
    if (e.job.spec().base().checkpoint() == checkpoint_id) return true;
    if (e.job.base_checkpoint() == checkpoint_id) return true;
    if (e.job.attempts_size() > 0 &&
        e.job.attempts(e.job.attempts_size() - 1).resumed_from_checkpoint() == checkpoint_id) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<forge::v1::CheckpointInfo> JobManager::CheckpointLineage(
    absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  forge::v1::CheckpointInfo lineage;
  lineage.set_stage(it->second.job.spec().stage());
  lineage.set_parent(it->second.job.base_checkpoint());
  *lineage.mutable_shape() = it->second.job.shape();
  return lineage;
}

bool JobManager::WorkerServedJob(absl::string_view job_id, absl::string_view worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  if (it == jobs_.end()) return false;
  for (const auto& p : it->second.job.placement()) {
    if (p.worker_id() == worker_id) return true;
  }
  for (const auto& a : it->second.job.attempts()) {
    for (const auto& p : a.placement()) {
      if (p.worker_id() == worker_id) return true;
    }
  }
  return false;
}

bool JobManager::IsFinished(absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  return it == jobs_.end() || IsTerminal(it->second.job.state());
}

}  // namespace forge::coordinator
