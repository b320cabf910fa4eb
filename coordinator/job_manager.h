// Jobs: submission, queries, cancellation, placement and recovery from failures.
//
// Jobs live in memory and are written through to the Store. Every acknowledgement (submit,
// cancel) is sent only after its commit. State changes are enqueued to the Store while mu_ is
// held, so the Store sees a job's versions in the order memory did; messages to workers are
// sent from commit callbacks, so a worker never acts on a state that could be lost.
//
// Devices are owned by placements: a device is busy exactly when a non-terminal job's
// current placement names it. Only Place() adds placements, and the control loop is its only
// caller, so a device is never given twice.
//
// Thread safety: thread-safe (one mutex, mu_). Never waits on the Store while holding mu_.
#ifndef FORGE_COORDINATOR_JOB_MANAGER_H_
#define FORGE_COORDINATOR_JOB_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/auth.h"
#include "coordinator/scheduler.h"
#include "coordinator/model_catalog.h"
#include "coordinator/store.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::coordinator {

struct JobManagerOptions {
  // Sends a message on a worker's stream (false if the worker is not connected).
  std::function<bool(const std::string& worker_id, const forge::v1::CoordinatorMessage&)>
      send_to_worker;
  // Called when the queue or the set of free devices may have changed.
  std::function<void()> wake_scheduler;
  // An assignment not acknowledged by its worker within this time counts as a lost rank.
  absl::Duration ack_timeout = absl::Seconds(30);
  // The TrainerService bearer token of one rank of a job attempt, put into its assignment.
  std::function<std::string(const std::string& job_id, int attempt, int rank)> rank_token;
  // The newest committed checkpoint of a job: its id and step, or ("", 0) when none.
  std::function<std::pair<std::string, int64_t>(const std::string& job_id)> latest_checkpoint;
  // A placed rank that reports no progress for this long fails its attempt (a hung or
  // stopped trainer). Covers start-up too (data fetch, rendezvous, checkpoint load).
  absl::Duration step_timeout = absl::Seconds(120);
  // Handed to trainers: a collective waiting longer than this fails the rank.
  absl::Duration collective_timeout = absl::Seconds(60);
  // A failed attempt is placed again only after this long: when a worker dies, its peers'
  // collectives fail at once, before the heartbeat grace declares it dead; waiting one grace
  // keeps the next attempt off the dying worker.
  absl::Duration restart_delay = absl::ZeroDuration();
  // Rank 0's progress reaches the job row at most this often (every report is kept in
  // the metrics table).
  absl::Duration progress_commit_interval = absl::Seconds(5);
  // Where a job whose guard passes is promoted (spec.promote.channel). Null: no promotion.
  ModelCatalog* catalog = nullptr;
  // Told of every committed state change (metrics, alerts): the job as committed, the state
  // it left (UNSPECIFIED for a new job) and, when it leaves the queue for RUNNING, how long
  // it waited. A RESTARTING job that fails again (one more restart used) is told as
  // RESTARTING -> RESTARTING. Runs on the store's writer thread: it must be quick and must not call
  // the JobManager. May be null.
  std::function<void(const forge::v1::Job& job, forge::v1::JobState from,
                     absl::Duration queued_for)>
      on_transition;
  // Rows committed in the same batch as a state change (an alert's outbox row), so that the
  // change and what it must cause are durable together or not at all. Called for the changes
  // on_transition hears of, except new jobs, as their batch is built: under the JobManager's
  // lock, so it must be quick and must not call the JobManager. Returns what to run once the
  // batch is committed (with its status), or nullptr. May be null.
  std::function<std::function<void(absl::Status)>(const forge::v1::Job& job,
                                                  forge::v1::JobState from, WriteBatch* batch)>
      transition_rows;
};

// What a job's `base` resolved to at submission (the service resolves it against the model
// catalog and the checkpoints).
struct ResolvedBase {
  std::string checkpoint;  // committed checkpoint id
  forge::v1::Stage stage = forge::v1::STAGE_UNSPECIFIED;  // the base's stage
  forge::v1::ModelSpec shape;  // the base checkpoint's shape (numbers, no preset)
};

class JobManager {
 public:
  JobManager(Store* store, Clock* clock, JobManagerOptions options);

  // Loads every committed job. RUNNING jobs keep their placements (their workers are
  // expected to reconnect); QUEUED and RESTARTING jobs are queued again.
  absl::Status Recover();

  // Validates `request.spec` (filling defaults), commits the job and then calls `done`.
  // Tenant tokens only. A request_id seen before for the tenant returns the earlier job
  // (deduplicated), or FAILED_PRECONDITION if the spec differs. A spec with `base` needs
  // `base` resolved by the caller (FAILED_PRECONDITION otherwise).
  // `contamination`: the check's report, kept in Job.contamination.
  // `add_rows` (optional) adds rows to the batch that commits the job, so they commit with
  // it or not at all (a schedule's run row). If that batch fails with ALREADY_EXISTS, `done`
  // gets that status unchanged (any other commit failure is UNAVAILABLE).
  void Submit(const Principal& caller, forge::v1::SubmitJobRequest request,
              std::function<void(absl::StatusOr<forge::v1::SubmitJobResponse>)> done,
              const ResolvedBase* base = nullptr, std::string contamination = "",
              std::function<void(const forge::v1::Job&, WriteBatch*)> add_rows = nullptr);
  // A submission whose request_id the caller's tenant has used already: the job it made
  // (deduplicated), or FAILED_PRECONDITION when the spec differs; nullopt when the id is new or
  // empty. Submit calls it first; the service calls it before the checks a retry need not
  // repeat (the base's resolution, the held-out scan).
  std::optional<absl::StatusOr<forge::v1::SubmitJobResponse>> Deduplicate(
      const Principal& caller, const forge::v1::SubmitJobRequest& request) const;

  // NOT_FOUND for unknown jobs and for jobs the caller may not see.
  absl::StatusOr<forge::v1::Job> Get(const Principal& caller, absl::string_view job_id) const;
  absl::StatusOr<std::vector<forge::v1::Job>> List(const Principal& caller,
                                                   const forge::v1::ListJobsRequest& request) const;
  // Cancels a non-terminal job: devices freed, ranks stopped. `done` after the commit.
  void Cancel(const Principal& caller, absl::string_view job_id, absl::string_view reason,
              std::function<void(absl::StatusOr<forge::v1::Job>)> done);

  // --- Control-loop interface -------------------------------------------------------------

  // Jobs waiting for devices (QUEUED and RESTARTING), for the scheduler.
  std::vector<PendingJob> PendingQueue() const;
  // (worker id, device id) pairs held by placements.
  absl::flat_hash_set<std::pair<std::string, std::string>> BusyDevices() const;
  // Places a pending job (RUNNING, attempt + 1) and, once committed, sends its assignments.
  // Returns false (and changes nothing) if the job is no longer pending.
  bool Place(const JobPlacement& placement);
  // Records why jobs still wait (memory only: recomputed every pass).
  void SetWaiting(const std::vector<WaitingJob>& waiting);

  // A worker was declared dead: every job with a rank on it restarts (or fails past
  // max_restarts); the job's other ranks are stopped.
  void OnWorkerLost(const std::string& worker_id, absl::string_view why);
  // A worker (re)registered holding `held` ranks: stale ones are stopped, placed ranks it
  // no longer holds after acknowledging them are lost (the job restarts), and placed ranks
  // it never acknowledged are sent again.
  void ReconcileWorker(const std::string& worker_id,
                       const std::vector<forge::v1::RankInfo>& held);
  void OnAssignmentAck(const std::string& worker_id, const forge::v1::AssignmentAck& ack);
  // Ranks not acknowledged within ack_timeout are lost.
  void CheckAckTimeouts();

  // --- Trainer ranks (TrainerService; implemented in job_training.cc) --------------------

  // OK when `ref` is the current attempt of a RUNNING job and a rank of its placement;
  // FAILED_PRECONDITION otherwise (the rank must stop). Fills the job's tenant and spec.
  absl::Status CheckRank(const forge::v1::RankRef& ref, std::string* tenant,
                         forge::v1::JobSpec* spec) const;
  // Liveness of every rank, the job's progress from rank 0 (metrics row per report). The
  // answer says stop when the attempt is over.
  forge::v1::ProgressResponse OnProgress(const forge::v1::ProgressReport& report);
  // A checkpoint of the job was committed to the catalog.
  void OnCheckpointCommitted(const forge::v1::CheckpointInfo& info);
  // Rank 0 finished the run: the job SUCCEEDED. `done` after the commit.
  void Finish(const forge::v1::FinishJobRequest& request, std::function<void(absl::Status)> done);
  // A worker reports a trainer process ended. A non-zero exit of the current attempt fails
  // the attempt (restart); kInvalidExitCode and kDivergedExitCode fail the job.
  void OnRankExited(const std::string& worker_id, const forge::v1::RankExited& exited);
  // Running ranks silent for step_timeout fail their attempt.
  void CheckStepTimeouts();
  // Whether a non-terminal job resumes from or starts from the checkpoint.
  bool CheckpointInUse(absl::string_view checkpoint_id) const;
  // The lineage a checkpoint of the job records in the catalog: stage, parent (the job's
  // base checkpoint) and shape. NOT_FOUND for an unknown job.
  absl::StatusOr<forge::v1::CheckpointInfo> CheckpointLineage(absl::string_view job_id) const;
  // Whether the job is terminal (unknown jobs count as terminal).
  bool IsFinished(absl::string_view job_id) const;
  // Whether `worker_id` holds or held a rank of the job (any attempt): who may add to its log.
  bool WorkerServedJob(absl::string_view job_id, absl::string_view worker_id) const;

  // The regression guard on a job's final evals against its base evals (spec.guard).
  static forge::v1::GuardVerdict GuardVerdictFor(const forge::v1::Job& job);

  // Trainer exit codes that fail the job without a restart (a restart would fail the same
  // way): the job cannot run as specified; replicas diverged.
  static constexpr int kInvalidExitCode = 2;
  static constexpr int kDivergedExitCode = 3;

  // Owner tenant of a job, or "" if unknown.
  std::string TenantOf(absl::string_view job_id) const;

  struct Counts {
    int64_t total = 0;
    int64_t pending = 0;
    int64_t running = 0;
  };
  Counts counts() const;

  // How many of the jobs `caller` may see are in each state.
  std::map<forge::v1::JobState, int64_t> CountByState(const Principal& caller) const;

  // For /metrics: how many jobs are in each state, and the started, unfinished jobs (running
  // or restarting) trimmed to what /metrics reports: id, tenant, state, attempt, progress,
  // spec.name and spec.train.steps. Queued jobs are only counted, and nothing else of a job
  // (its spec's data, attempts, contamination report) is copied under the lock.
  struct StateSnapshot {
    std::map<forge::v1::JobState, int64_t> by_state;
    std::vector<forge::v1::Job> started;
  };
  StateSnapshot Snapshot() const;

 private:
  // The answer to `request` when its request_id made `prior`: `prior`, deduplicated, when the
  // spec is the same submission; FAILED_PRECONDITION otherwise.
  static absl::StatusOr<forge::v1::SubmitJobResponse> AnswerRetry(
      const forge::v1::SubmitJobRequest& request, const forge::v1::Job& prior);

  struct RankRuntime {
    bool sent = false;
    bool acked = false;
    absl::Time sent_time;
    absl::Time last_progress;  // report, or ack/placement/recovery before the first one
    int64_t step = 0;          // last reported
    bool exited_ok = false;    // its trainer finished its part (exit 0): no more reports
  };
  struct Entry {
    forge::v1::Job job;
    int64_t seq = 0;                // submission order
    absl::Time queued_since;        // when it last became pending
    std::vector<RankRuntime> ranks;  // per rank of the current placement (memory only)
    absl::Time last_progress_commit;  // rank 0's progress last written to the job row
    bool finish_committed = false;    // SUCCEEDED is durable (a retried finish may be acked)
  };

  bool IsPending(const Entry& e) const;
  // Applies `state` with `message`, stamps times, and enqueues the commit; `after` runs after
  // it. REQUIRES: mu_ held; the transition allowed.
  // `channels`: promotion rows committed in the same batch as the job.
  void TransitionLocked(Entry& e, forge::v1::JobState state, std::string message,
                        std::function<void(absl::Status)> after,
                        std::vector<ChannelRecord> channels = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  using Outbox = std::vector<std::pair<std::string, forge::v1::CoordinatorMessage>>;
  // Rank failure: RESTARTING (queued again) or FAILED; stops for every rank go to `outbox`,
  // which the caller sends after releasing mu_.
  void FailAttemptLocked(Entry& e, std::string why, Outbox* outbox)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Messages to stop every rank of the job's current placement (sent after the commit).
  Outbox StopMessagesLocked(
      const Entry& e, absl::string_view reason) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  forge::v1::CoordinatorMessage AssignmentFor(const Entry& e, int rank) const;
  // The record of the current attempt (added by Place). REQUIRES: attempt >= 1.
  static forge::v1::JobAttempt* CurrentAttempt(Entry& e);
  // Closes the current attempt's record with `reason`.
  void EndAttemptLocked(Entry& e, absl::string_view reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends without mu_ held, then wakes the scheduler if anything was freed.
  void SendAll(const Outbox& msgs);
  // Commits the job row (with `channels`); `after` runs once it is durable. With `from`, the
  // commit is a state change from that state: options_.transition_rows adds its rows.
  void CommitJobLocked(const forge::v1::Job& job, std::function<void(absl::Status)> after,
                       std::vector<ChannelRecord> channels = {},
                       std::optional<forge::v1::JobState> from = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  Clock* const clock_;
  const JobManagerOptions options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  // "tenant/request_id" -> job id, for committed jobs.
  absl::flat_hash_map<std::string, std::string> by_request_ ABSL_GUARDED_BY(mu_);
  // "tenant/request_id" -> callers waiting for an in-flight submission with that key.
  absl::flat_hash_map<std::string,
                      std::vector<std::function<void(absl::StatusOr<forge::v1::SubmitJobResponse>)>>>
      inflight_requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_JOB_MANAGER_H_
