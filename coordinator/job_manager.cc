#include "coordinator/job_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/model_presets.h"
#include "common/names.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "coordinator/job_state.h"
#include "coordinator/spec_validation.h"

namespace forge::coordinator {

using forge::v1::CoordinatorMessage;
using forge::v1::Job;
using forge::v1::JobState;

namespace {

constexpr char kPlaced[] = "placed; starting trainer ranks";

std::string RequestKey(absl::string_view tenant, absl::string_view request_id) {
  return absl::StrCat(tenant, "/", request_id);
}

absl::StatusOr<std::string> NewJobId() {
  ASSIGN_OR_RETURN(std::string bytes, SecureRandomBytes(8));
  return absl::StrCat("j-", HexEncode(bytes));
}

// Whether `request`, as submitted, is what `prior` was accepted from. The request is filled as
// Submit filled `prior`'s, from the request itself and `prior`'s base shape, never from what
// the base resolves to now: a retry matches even when the base's model name resolves to
// another checkpoint by then, or to none.
bool SameSubmission(const forge::v1::JobSpec& request, const Job& prior) {
  forge::v1::JobSpec again = request;
  if (!ValidateAndFillDefaults(&again, again.has_base() ? &prior.shape() : nullptr).ok()) {
    return false;
  }
  if (again.stage() == forge::v1::STAGE_UNSPECIFIED) {
    if (!again.has_base()) {
      again.set_stage(forge::v1::STAGE_PRE_TRAINING);
    } else if (!again.base().model().empty()) {
      again.set_stage(again.base().stage());  // a catalog entry's stage is the request's own
    } else {
      // The checkpoint's own stage: the prior's, when the checkpoint ids match (otherwise the
      // specs differ anyway).
      again.set_stage(prior.spec().stage());
    }
  }
  return again.SerializeAsString() == prior.spec().SerializeAsString();
}

}  // namespace

JobManager::JobManager(Store* store, Clock* clock, JobManagerOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

absl::Status JobManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<Job> jobs, store_->LoadJobs());
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (Job& job : jobs) {
    Entry e;
    e.seq = next_seq_++;
    e.queued_since = now;
    e.ranks.resize(job.placement_size());
    // Ranks of a RUNNING job keep training through a coordinator restart; they get a full
    // step timeout to report again.
    for (RankRuntime& r : e.ranks) r.last_progress = now;
    if (!job.request_id().empty()) by_request_[RequestKey(job.tenant(), job.request_id())] = job.id();
    e.job = std::move(job);
    e.finish_committed = e.job.state() == forge::v1::JOB_STATE_SUCCEEDED;
    std::string id = e.job.id();
    jobs_[id] = std::move(e);
  }
  FORGE_LOG(INFO) << "event=jobs_recovered count=" << jobs_.size();
  return absl::OkStatus();
}

std::optional<absl::StatusOr<forge::v1::SubmitJobResponse>> JobManager::Deduplicate(
    const Principal& caller, const forge::v1::SubmitJobRequest& request) const {
  if (!caller.is_tenant() || request.request_id().empty()) return std::nullopt;
  absl::MutexLock lock(&mu_);
  auto it = by_request_.find(RequestKey(caller.tenant, request.request_id()));
  if (it == by_request_.end()) return std::nullopt;
  return AnswerRetry(request, jobs_.at(it->second).job);
}

absl::StatusOr<forge::v1::SubmitJobResponse> JobManager::AnswerRetry(
    const forge::v1::SubmitJobRequest& request, const Job& prior) {
  if (!SameSubmission(request.spec(), prior)) {
    return absl::FailedPreconditionError(
        absl::StrCat("request_id ", request.request_id(), " was already used for job ", prior.id(),
                     " with a different spec; use a new request_id"));
  }
  forge::v1::SubmitJobResponse resp;
  *resp.mutable_job() = prior;
  resp.set_deduplicated(true);
  return resp;
}

void JobManager::Submit(const Principal& caller, forge::v1::SubmitJobRequest request,
                        std::function<void(absl::StatusOr<forge::v1::SubmitJobResponse>)> done,
                        const ResolvedBase* base, std::string contamination,
                        std::function<void(const forge::v1::Job&, WriteBatch*)> add_rows) {
  if (!caller.is_tenant()) {
    return done(absl::PermissionDeniedError(
        caller.is_admin() ? "admin tokens do not own jobs: submit with a tenant token "
                            "(forge admin tenant create NAME prints one)"
                          : "worker tokens cannot submit jobs"));
  }
  if (!request.request_id().empty()) {
    if (absl::Status s = ValidateIdentifier("request_id", request.request_id(), 64); !s.ok()) {
      return done(s);
    }
  }
  // A retry is answered from the job it made before anything about it is checked again.
  if (std::optional<absl::StatusOr<forge::v1::SubmitJobResponse>> d = Deduplicate(caller, request);
      d.has_value()) {
    return done(*std::move(d));
  }
  forge::v1::JobSpec spec = request.spec();
  if (spec.has_base() && (base == nullptr || base->checkpoint.empty())) {
    return done(absl::FailedPreconditionError("job spec: base was not resolved to a checkpoint"));
  }
  // With a base, its shape fills and bounds train.seq_len, batch_tokens and micro_batch.
  if (absl::Status s = ValidateAndFillDefaults(&spec, spec.has_base() ? &base->shape : nullptr);
      !s.ok()) {
    return done(s);
  }
  forge::v1::ModelSpec shape;
  if (spec.has_base()) {
    shape = base->shape;
  } else {
    absl::StatusOr<ModelShape> s = ResolveModelShape(spec.model());
    if (!s.ok()) return done(s.status());
    shape.set_layers(s->layers);
    shape.set_heads(s->heads);
    shape.set_width(s->width);
    shape.set_context(s->context);
    shape.set_vocab(s->vocab);
  }
  if (spec.stage() == forge::v1::STAGE_UNSPECIFIED) {
    spec.set_stage(spec.has_base() && base->stage != forge::v1::STAGE_UNSPECIFIED
                       ? base->stage
                       : forge::v1::STAGE_PRE_TRAINING);
  }
  absl::StatusOr<std::string> id = NewJobId();
  if (!id.ok()) return done(id.status());

  const absl::Time now = clock_->Now();
  Job job;
  job.set_id(*id);
  job.set_tenant(caller.tenant);
  *job.mutable_spec() = std::move(spec);
  *job.mutable_shape() = std::move(shape);
  if (base != nullptr) job.set_base_checkpoint(base->checkpoint);
  job.set_contamination(std::move(contamination));
  job.set_state(forge::v1::JOB_STATE_QUEUED);
  job.set_message("queued");
  job.set_request_id(request.request_id());
  *job.mutable_create_time() = ToProtoTime(now);
  *job.mutable_update_time() = ToProtoTime(now);

  const std::string key = RequestKey(caller.tenant, request.request_id());
  absl::MutexLock lock(&mu_);
  if (!request.request_id().empty()) {
    if (auto it = by_request_.find(key); it != by_request_.end()) {
      return done(AnswerRetry(request, jobs_.at(it->second).job));
    }
    if (auto it = inflight_requests_.find(key); it != inflight_requests_.end()) {
      // Answered when the first commit lands, as a retry would be then (the same spec gets
      // that job, another is refused).
      it->second.push_back(
          [request, done = std::move(done)](absl::StatusOr<forge::v1::SubmitJobResponse> first) {
            done(first.ok() ? AnswerRetry(request, first->job()) : std::move(first));
          });
      return;
    }
    inflight_requests_[key];
  }
  WriteBatch batch;
  batch.put_jobs.push_back(job);
  const bool extra_rows = add_rows != nullptr;
  if (extra_rows) add_rows(job, &batch);
  store_->Commit(std::move(batch), [this, job = std::move(job), key, extra_rows,
                                    done = std::move(done)](absl::Status s) mutable {
    std::vector<std::function<void(absl::StatusOr<forge::v1::SubmitJobResponse>)>> waiters;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = inflight_requests_.find(key); it != inflight_requests_.end()) {
        waiters = std::move(it->second);
        inflight_requests_.erase(it);
      }
      if (s.ok()) {
        Entry e;
        e.job = job;
        e.seq = next_seq_++;
        e.queued_since = clock_->Now();
        if (!job.request_id().empty()) by_request_[key] = job.id();
        jobs_[job.id()] = std::move(e);
      }
    }
    if (s.ok() && options_.on_transition) {
      options_.on_transition(job, forge::v1::JOB_STATE_UNSPECIFIED, absl::ZeroDuration());
    }
    if (!s.ok()) {
      FORGE_LOG(ERROR) << "event=submit_commit_failed job=" << job.id() << " error=" << s;
      if (extra_rows && absl::IsAlreadyExists(s)) {
        // The caller's rows conflict (e.g. a schedule slot already decided): it decides.
        done(s);
        for (auto& w : waiters) w(s);
        return;
      }
      absl::Status unavailable = absl::UnavailableError(
          absl::StrCat("the job could not be stored (", s.message(), "); it was not accepted, "
                       "retry"));
      done(unavailable);
      for (auto& w : waiters) w(unavailable);
      return;
    }
    FORGE_LOG(INFO) << "event=job_submitted job=" << job.id() << " tenant=" << job.tenant()
                    << " ranks=" << job.spec().resources().ranks();
    if (options_.wake_scheduler) options_.wake_scheduler();
    forge::v1::SubmitJobResponse resp;
    *resp.mutable_job() = job;
    done(resp);
    for (auto& w : waiters) w(resp);  // each decides whether it is the same submission
  });
}

absl::StatusOr<Job> JobManager::Get(const Principal& caller, absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  if (it == jobs_.end() || !caller.CanSee(it->second.job.tenant())) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  }
  return it->second.job;
}

absl::StatusOr<std::vector<Job>> JobManager::List(const Principal& caller,
                                                  const forge::v1::ListJobsRequest& request) const {
  if (!caller.is_admin() && !caller.is_tenant()) {
    return absl::PermissionDeniedError("worker tokens cannot list jobs");
  }
  int limit = request.limit() == 0 ? 1000 : request.limit();
  if (limit < 1 || limit > 10000) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be in 1..10000 (got ", request.limit(), ")"));
  }
  absl::flat_hash_set<int> states(request.states().begin(), request.states().end());
  std::vector<std::pair<int64_t, const Job*>> picked;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : jobs_) {
    if (!caller.CanSee(e.job.tenant())) continue;
    if (!states.empty() && !states.contains(e.job.state())) continue;
    picked.emplace_back(e.seq, &e.job);
  }
  std::sort(picked.begin(), picked.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  if (picked.size() > static_cast<size_t>(limit)) picked.resize(limit);
  std::vector<Job> out;
  out.reserve(picked.size());
  for (const auto& [seq, job] : picked) out.push_back(*job);
  return out;
}

void JobManager::Cancel(const Principal& caller, absl::string_view job_id,
                        absl::string_view reason,
                        std::function<void(absl::StatusOr<Job>)> done) {
  if (reason.size() > 512) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("reason is ", reason.size(), " characters long; the limit is 512")));
  }
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  if (it == jobs_.end() || !caller.CanSee(it->second.job.tenant())) {
    return done(absl::NotFoundError(absl::StrCat("job ", job_id, " not found")));
  }
  Entry& e = it->second;
  if (absl::Status s = CheckTransition(e.job.state(), forge::v1::JOB_STATE_CANCELLED); !s.ok()) {
    return done(absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is already ", JobStateName(e.job.state()), "; nothing to cancel")));
  }
  std::string message = reason.empty() ? absl::StrCat("cancelled by ", caller.token_id)
                                       : absl::StrCat("cancelled: ", reason);
  auto stops = StopMessagesLocked(e, message);
  if (e.job.attempt() > 0) EndAttemptLocked(e, message);
  e.job.clear_placement();
  e.ranks.clear();
  // The reply is the job as cancelled: copied inside the callback, after the transition (a
  // capture here would copy the job before TransitionLocked changes it).
  TransitionLocked(e, forge::v1::JOB_STATE_CANCELLED, message,
                   [this, id = e.job.id(), stops = std::move(stops),
                    done = std::move(done)](absl::Status s) {
                     // The ranks stop either way: memory already freed their devices.
                     SendAll(stops);
                     if (!s.ok()) return done(absl::UnavailableError(absl::StrCat(
                         "the cancellation could not be stored (", s.message(), "); retry")));
                     Job job;
                     {
                       absl::MutexLock lock(&mu_);
                       job = jobs_.at(id).job;
                     }
                     done(job);
                   });
}

bool JobManager::IsPending(const Entry& e) const {
  return e.job.state() == forge::v1::JOB_STATE_QUEUED ||
         (e.job.state() == forge::v1::JOB_STATE_RESTARTING && e.job.placement_size() == 0 &&
          clock_->Now() - e.queued_since >= options_.restart_delay);
}

std::vector<PendingJob> JobManager::PendingQueue() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<PendingJob> out;
  for (const auto& [id, e] : jobs_) {
    if (!IsPending(e)) continue;
    PendingJob p;
    p.job_id = id;
    p.priority = e.job.spec().priority();
    p.submit_seq = e.seq;
    p.ranks = e.job.spec().resources().ranks();
    p.device_kind = e.job.spec().resources().device();
    p.waited = now - e.queued_since;
    out.push_back(std::move(p));
  }
  return out;
}

absl::flat_hash_set<std::pair<std::string, std::string>> JobManager::BusyDevices() const {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_set<std::pair<std::string, std::string>> busy;
  for (const auto& [id, e] : jobs_) {
    if (IsTerminal(e.job.state())) continue;
    for (const auto& r : e.job.placement()) busy.emplace(r.worker_id(), r.device());
  }
  return busy;
}

bool JobManager::Place(const JobPlacement& placement) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(placement.job_id);
  if (it == jobs_.end() || !IsPending(it->second)) return false;
  Entry& e = it->second;
  e.job.clear_placement();
  for (size_t r = 0; r < placement.ranks.size(); ++r) {
    auto* p = e.job.add_placement();
    p->set_rank(static_cast<int>(r));
    p->set_worker_id(placement.ranks[r].worker_id);
    p->set_device(placement.ranks[r].device_id);
  }
  const absl::Time placed_at = clock_->Now();
  e.ranks.assign(placement.ranks.size(), RankRuntime{});
  for (RankRuntime& r : e.ranks) r.last_progress = placed_at;
  e.job.set_attempt(e.job.attempt() + 1);
  {
    forge::v1::JobAttempt* a = e.job.add_attempts();
    a->set_attempt(e.job.attempt());
    *a->mutable_start_time() = ToProtoTime(placed_at);
    *a->mutable_placement() = e.job.placement();
    if (options_.latest_checkpoint) {
      auto [id, step] = options_.latest_checkpoint(e.job.id());
      a->set_resumed_from_checkpoint(id);
      a->set_resumed_from_step(step);
    }
    // A long-lived job keeps its newest attempts only (bounded row size).
    constexpr int kMaxAttemptRecords = 100;
    if (e.job.attempts_size() > kMaxAttemptRecords) {
      e.job.mutable_attempts()->DeleteSubrange(0, e.job.attempts_size() - kMaxAttemptRecords);
    }
  }
  // The new attempt has trained nothing yet: no throughput, MFU or ETA until it reports.
  forge::v1::JobProgress* progress = e.job.mutable_progress();
  progress->set_phase("starting");
  progress->clear_tokens_per_second();
  progress->clear_mfu();
  progress->clear_eta_seconds();
  e.job.set_unschedulable(false);
  e.job.set_trainer_attached(false);
  if (!e.job.has_start_time()) *e.job.mutable_start_time() = ToProtoTime(clock_->Now());
  const std::string job_id = e.job.id();
  const int attempt = e.job.attempt();
  FORGE_LOG(INFO) << "event=job_placed job=" << job_id << " attempt=" << attempt
                  << " ranks=" << placement.ranks.size();
  TransitionLocked(e, forge::v1::JOB_STATE_RUNNING, kPlaced,
                   [this, job_id, attempt](absl::Status s) {
                     if (!s.ok()) {
                       // Never sent: fail the attempt so the job is placed again rather than
                       // holding its devices with no ranks running.
                       Outbox outbox;
                       {
                         absl::MutexLock lock(&mu_);
                         auto it = jobs_.find(job_id);
                         if (it != jobs_.end() && it->second.job.attempt() == attempt &&
                             it->second.job.state() == forge::v1::JOB_STATE_RUNNING) {
                           FailAttemptLocked(it->second,
                                             absl::StrCat("the placement could not be stored (",
                                                          s.message(), ")"),
                                             &outbox);
                         }
                       }
                       SendAll(outbox);
                       return;
                     }
                     Outbox msgs;
                     {
                       absl::MutexLock lock(&mu_);
                       auto it = jobs_.find(job_id);
                       if (it == jobs_.end() || it->second.job.attempt() != attempt ||
                           it->second.job.state() != forge::v1::JOB_STATE_RUNNING) {
                         return;  // cancelled or restarted while committing
                       }
                       Entry& e = it->second;
                       const absl::Time now = clock_->Now();
                       for (int r = 0; r < e.job.placement_size(); ++r) {
                         msgs.emplace_back(e.job.placement(r).worker_id(), AssignmentFor(e, r));
                         e.ranks[r].sent = true;
                         e.ranks[r].sent_time = now;
                       }
                     }
                     SendAll(msgs);
                   });
  return true;
}

void JobManager::SetWaiting(const std::vector<WaitingJob>& waiting) {
  absl::MutexLock lock(&mu_);
  for (const WaitingJob& w : waiting) {
    auto it = jobs_.find(w.job_id);
    if (it == jobs_.end() || !IsPending(it->second)) continue;
    Job& job = it->second.job;
    // Passes repeat the same reasons; only changed ones are written.
    if (job.state() == forge::v1::JOB_STATE_RESTARTING) {
      // Keep the failure that caused the restart visible next to the wait reason.
      const std::string& m = job.message();
      size_t cut = m.find(" | waiting: ");
      if (cut == std::string::npos || absl::string_view(m).substr(cut + 12) != w.reason) {
        job.set_message(absl::StrCat(m.substr(0, cut), " | waiting: ", w.reason));
      }
    } else if (job.message() != w.reason) {
      job.set_message(w.reason);
    }
    job.set_unschedulable(w.unschedulable);
  }
}

void JobManager::OnWorkerLost(const std::string& worker_id, absl::string_view why) {
  Outbox outbox;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, e] : jobs_) {
      if (IsTerminal(e.job.state())) continue;
      bool on_worker = std::any_of(e.job.placement().begin(), e.job.placement().end(),
                                   [&](const auto& p) { return p.worker_id() == worker_id; });
      if (!on_worker) {
        // The attempt may already have failed through its peers (their all-reduce broke when
        // this worker died): name the root cause in that attempt's record.
        if (e.job.state() == forge::v1::JOB_STATE_RESTARTING && e.job.attempts_size() > 0) {
          forge::v1::JobAttempt* last = e.job.mutable_attempts(e.job.attempts_size() - 1);
          const bool was_there =
              std::any_of(last->placement().begin(), last->placement().end(),
                          [&](const auto& p) { return p.worker_id() == worker_id; });
          if (was_there && last->has_end_time() &&
              clock_->Now() - FromProtoTime(last->end_time()) < absl::Seconds(30) &&
              last->end_reason().find("lost") == std::string::npos) {
            last->set_end_reason(absl::StrCat("worker ", worker_id, " lost (", why, "); first seen as: ",
                                              last->end_reason()));
            CommitJobLocked(e.job, [](absl::Status) {});
          }
        }
        continue;
      }
      FailAttemptLocked(e, absl::StrCat("worker ", worker_id, " lost (", why, ")"), &outbox);
    }
  }
  SendAll(outbox);
}

void JobManager::ReconcileWorker(const std::string& worker_id,
                                 const std::vector<forge::v1::RankInfo>& held) {
  Outbox msgs;
  {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_set<std::pair<std::string, int>> held_set;  // (job, rank) at current attempt
  for (const auto& r : held) {
    auto it = jobs_.find(r.job_id());
    bool current = it != jobs_.end() && !IsTerminal(it->second.job.state()) &&
                   it->second.job.attempt() == r.attempt() &&
                   r.rank() < it->second.job.placement_size() &&
                   it->second.job.placement(r.rank()).worker_id() == worker_id;
    if (current) {
      held_set.emplace(r.job_id(), r.rank());
      it->second.ranks[r.rank()].acked = true;
      it->second.ranks[r.rank()].sent = true;
    } else {
      CoordinatorMessage stop;
      stop.mutable_stop()->set_job_id(r.job_id());
      stop.mutable_stop()->set_attempt(r.attempt());
      stop.mutable_stop()->set_reason("the coordinator no longer places this rank here");
      msgs.emplace_back(worker_id, std::move(stop));
    }
  }
  const absl::Time now = clock_->Now();
  for (auto& [id, e] : jobs_) {
    if (e.job.state() != forge::v1::JOB_STATE_RUNNING) continue;
    bool lost = false;
    for (int r = 0; r < e.job.placement_size(); ++r) {
      if (e.job.placement(r).worker_id() != worker_id || held_set.contains({id, r})) continue;
      if (e.ranks[r].acked) {
        lost = true;
        break;
      }
      if (e.ranks[r].sent || e.job.attempt() > 0) {
        // Never acknowledged (or unknown after a coordinator restart): send it again.
        msgs.emplace_back(worker_id, AssignmentFor(e, r));
        e.ranks[r].sent = true;
        e.ranks[r].sent_time = now;
      }
    }
    if (lost) {
      FailAttemptLocked(e,
                        absl::StrCat("worker ", worker_id,
                                     " reconnected without ranks it had accepted"),
                        &msgs);
    }
  }
  }
  SendAll(msgs);
}

void JobManager::OnAssignmentAck(const std::string& worker_id,
                                 const forge::v1::AssignmentAck& ack) {
  Outbox outbox;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(ack.job_id());
    if (it == jobs_.end()) return;
    Entry& e = it->second;
    if (e.job.attempt() != ack.attempt() || e.job.state() != forge::v1::JOB_STATE_RUNNING ||
        ack.rank() < 0 || ack.rank() >= e.job.placement_size() ||
        e.job.placement(ack.rank()).worker_id() != worker_id) {
      return;  // stale
    }
    if (ack.accepted()) {
      e.ranks[ack.rank()].acked = true;
      e.ranks[ack.rank()].last_progress = clock_->Now();
      return;
    }
    FailAttemptLocked(e,
                      absl::StrCat("worker ", worker_id, " refused rank ", ack.rank(), ": ",
                                   ack.message()),
                      &outbox);
  }
  SendAll(outbox);
}

void JobManager::CheckAckTimeouts() {
  Outbox outbox;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto& [id, e] : jobs_) {
      if (e.job.state() != forge::v1::JOB_STATE_RUNNING) continue;
      for (int r = 0; r < e.job.placement_size(); ++r) {
        const RankRuntime& rt = e.ranks[r];
        if (rt.sent && !rt.acked && now - rt.sent_time > options_.ack_timeout) {
          FailAttemptLocked(e,
                            absl::StrCat("rank ", r, " on worker ",
                                         e.job.placement(r).worker_id(),
                                         " was not acknowledged within ",
                                         absl::FormatDuration(options_.ack_timeout)),
                            &outbox);
          break;
        }
      }
    }
  }
  SendAll(outbox);
}

std::string JobManager::TenantOf(absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(std::string(job_id));
  return it == jobs_.end() ? "" : it->second.job.tenant();
}

JobManager::Counts JobManager::counts() const {
  absl::MutexLock lock(&mu_);
  Counts c;
  for (const auto& [id, e] : jobs_) {
    ++c.total;
    if (IsPending(e)) ++c.pending;
    if (e.job.state() == forge::v1::JOB_STATE_RUNNING) ++c.running;
  }
  return c;
}

std::map<JobState, int64_t> JobManager::CountByState(const Principal& caller) const {
  absl::MutexLock lock(&mu_);
  std::map<JobState, int64_t> out;
  for (const auto& [id, e] : jobs_) {
    if (caller.CanSee(e.job.tenant())) ++out[e.job.state()];
  }
  return out;
}

JobManager::StateSnapshot JobManager::Snapshot() const {
  absl::MutexLock lock(&mu_);
  StateSnapshot s;
  for (const auto& [id, e] : jobs_) {
    ++s.by_state[e.job.state()];
    const Job& j = e.job;
    if (IsTerminal(j.state()) || j.state() == forge::v1::JOB_STATE_QUEUED) continue;
    Job& t = s.started.emplace_back();
    t.set_id(j.id());
    t.set_tenant(j.tenant());
    t.set_state(j.state());
    t.set_attempt(j.attempt());
    *t.mutable_progress() = j.progress();
    t.mutable_spec()->set_name(j.spec().name());
    t.mutable_spec()->mutable_train()->set_steps(j.spec().train().steps());
  }
  return s;
}

void JobManager::TransitionLocked(Entry& e, JobState state, std::string message,
                                  std::function<void(absl::Status)> after,
                                  std::vector<ChannelRecord> channels) {
  const absl::Time now = clock_->Now();
  FORGE_LOG(INFO) << "event=job_state job=" << e.job.id() << " from="
                  << JobStateName(e.job.state()) << " to=" << JobStateName(state)
                  << " attempt=" << e.job.attempt();
  const JobState from = e.job.state();
  e.job.set_state(state);
  e.job.set_message(std::move(message));
  *e.job.mutable_update_time() = ToProtoTime(now);
  if (IsTerminal(state)) *e.job.mutable_end_time() = ToProtoTime(now);
  if (state == forge::v1::JOB_STATE_QUEUED || state == forge::v1::JOB_STATE_RESTARTING) {
    e.queued_since = now;
  }
  if (options_.on_transition) {
    const absl::Duration queued_for =
        state == forge::v1::JOB_STATE_RUNNING &&
                (from == forge::v1::JOB_STATE_QUEUED || from == forge::v1::JOB_STATE_RESTARTING)
            ? now - e.queued_since
            : absl::ZeroDuration();
    after = [after = std::move(after), job = e.job, from, queued_for,
             notify = options_.on_transition](absl::Status s) {
      if (s.ok()) notify(job, from, queued_for);
      after(s);
    };
  }
  CommitJobLocked(e.job, std::move(after), std::move(channels), from);
}

void JobManager::FailAttemptLocked(Entry& e, std::string why, Outbox* outbox) {
  Outbox stops = StopMessagesLocked(e, why);
  outbox->insert(outbox->end(), stops.begin(), stops.end());
  if (e.job.placement_size() > 0 && e.job.attempt() > 0) {
    EndAttemptLocked(e, why);
  }
  e.job.clear_placement();
  e.ranks.clear();
  e.job.set_trainer_attached(false);
  const int max_restarts = e.job.spec().max_restarts();
  JobState next;
  std::string message;
  if (e.job.restarts() >= max_restarts) {
    next = forge::v1::JOB_STATE_FAILED;
    message = absl::StrCat(why, "; no restarts left (max_restarts=", max_restarts, ")");
  } else {
    e.job.set_restarts(e.job.restarts() + 1);
    next = forge::v1::JOB_STATE_RESTARTING;
    message = absl::StrCat(why, "; restart ", e.job.restarts(), " of ", max_restarts);
  }
  if (e.job.state() == forge::v1::JOB_STATE_RESTARTING && next == forge::v1::JOB_STATE_RESTARTING) {
    // Already recovering (e.g. a second worker lost): count it, keep the state.
    e.job.set_message(message);
    std::function<void(absl::Status)> after = [](absl::Status) {};
    if (options_.on_transition) {  // one more restart: metrics and alerts hear of it too
      after = [job = e.job, notify = options_.on_transition](absl::Status s) {
        if (s.ok()) notify(job, forge::v1::JOB_STATE_RESTARTING, absl::ZeroDuration());
      };
    }
    CommitJobLocked(e.job, std::move(after), {}, forge::v1::JOB_STATE_RESTARTING);
  } else {
    TransitionLocked(e, next, message, [](absl::Status) {});
  }
  // Stops go out (via the outbox) without waiting for the commit: the ranks of a failed
  // attempt must stop either way, and workers refuse a stale attempt.
  FORGE_LOG(WARNING) << "event=job_attempt_failed job=" << e.job.id() << " why=\"" << why << "\"";
}

JobManager::Outbox JobManager::StopMessagesLocked(
    const Entry& e, absl::string_view reason) const {
  absl::flat_hash_set<std::string> workers;
  for (const auto& p : e.job.placement()) workers.insert(p.worker_id());
  Outbox out;
  for (const auto& w : workers) {
    CoordinatorMessage m;
    m.mutable_stop()->set_job_id(e.job.id());
    m.mutable_stop()->set_attempt(e.job.attempt());
    m.mutable_stop()->set_reason(std::string(reason));
    out.emplace_back(w, std::move(m));
  }
  return out;
}

CoordinatorMessage JobManager::AssignmentFor(const Entry& e, int rank) const {
  CoordinatorMessage m;
  auto* a = m.mutable_assign();
  a->set_job_id(e.job.id());
  a->set_attempt(e.job.attempt());
  a->set_rank(rank);
  a->set_world_size(e.job.placement_size());
  a->set_device(e.job.placement(rank).device());
  *a->mutable_spec() = e.job.spec();
  a->set_tenant(e.job.tenant());
  if (options_.rank_token) {
    a->set_rank_token(options_.rank_token(e.job.id(), e.job.attempt(), rank));
  }
  if (e.job.attempts_size() > 0) {
    a->set_resume_checkpoint(e.job.attempts(e.job.attempts_size() - 1).resumed_from_checkpoint());
    a->set_base_checkpoint(e.job.base_checkpoint());
    *a->mutable_shape() = e.job.shape();
  }
  a->set_collective_timeout_ms(absl::ToInt64Milliseconds(options_.collective_timeout));
  return m;
}

void JobManager::SendAll(const Outbox& msgs) {
  if (msgs.empty()) return;
  if (options_.send_to_worker) {
    for (const auto& [worker, msg] : msgs) {
      if (!options_.send_to_worker(worker, msg)) {
        FORGE_LOG(DEBUG) << "event=send_skipped worker=" << worker << " (not connected)";
      }
    }
  }
  if (options_.wake_scheduler) options_.wake_scheduler();
}

void JobManager::CommitJobLocked(const Job& job, std::function<void(absl::Status)> after,
                                 std::vector<ChannelRecord> channels,
                                 std::optional<JobState> from) {
  WriteBatch batch;
  batch.put_jobs.push_back(job);
  batch.put_channels = std::move(channels);
  if (from.has_value() && options_.transition_rows) {
    if (std::function<void(absl::Status)> then = options_.transition_rows(job, *from, &batch)) {
      after = [then = std::move(then), after = std::move(after)](absl::Status s) {
        then(s);
        after(s);
      };
    }
  }
  store_->Commit(std::move(batch), [id = job.id(), after = std::move(after)](absl::Status s) {
    if (!s.ok()) FORGE_LOG(ERROR) << "event=job_commit_failed job=" << id << " error=" << s;
    after(s);
  });
}

}  // namespace forge::coordinator
