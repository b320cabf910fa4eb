// Schedules: a job spec retrained on a cron schedule (forge schedule create|list|delete|
// history).
//
// Every tick, each schedule's current slot (cron.Previous(now)) is decided once, if it came
// after the schedule was created and has no run yet:
//   * the manifest_sha256 of every mixture dataset is read; when all equal those of the last
//     SUBMITTED run, the slot is SKIPPED_NO_NEW_DATA;
//   * otherwise the spec is submitted (warm-started from spec.promote.channel's promoted
//     checkpoint when there is one) through the same checks as JobService.SubmitJob; a
//     refusal is a FAILED run with the reason.
// Exactly once per slot: in this process a slot is decided by one caller at a time (the
// in-flight set under mu_); across restarts (or two processes on one database) the run row's
// primary key (schedule_id, slot) settles it, because the row commits in the same batch as the
// job (JobManager::Submit's add_rows) and a second row fails its whole batch with
// ALREADY_EXISTS, job included.
// After downtime only the latest due slot runs: older missed slots are neither run nor
// recorded.
//
// Thread safety: thread-safe (one mutex, mu_; never held across a Store wait or a submit).
#ifndef FORGE_COORDINATOR_SCHEDULE_MANAGER_H_
#define FORGE_COORDINATOR_SCHEDULE_MANAGER_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/cron.h"
#include "coordinator/auth.h"
#include "coordinator/job_manager.h"
#include "coordinator/model_catalog.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "coordinator/submission.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::coordinator {

struct ScheduleManagerOptions {
  // How often the ticker thread (Start) looks for due slots.
  absl::Duration tick_interval = absl::Seconds(1);
  // Told of each run row this manager records that does not submit a job (skipped for no new
  // data, or the submission refused) as its batch is built: it may add rows to commit with it
  // (an alert's outbox row), must be quick, and must not call the ScheduleManager. Returns
  // what to run once that batch is committed (with its status: ALREADY_EXISTS when another
  // decider recorded the slot first), or nullptr. May be null.
  std::function<std::function<void(absl::Status)>(const forge::v1::Schedule& schedule,
                                                  const forge::v1::ScheduleRun& run,
                                                  WriteBatch* batch)>
      on_skipped;
};

class ScheduleManager {
 public:
  // Every pointer must outlive the manager; `catalog` may be null (no warm start).
  ScheduleManager(Store* store, Clock* clock, JobManager* jobs, const StorageGateway* storage,
                  const ModelCatalog* catalog, ScheduleManagerOptions options = {});
  ~ScheduleManager();  // Stop()s

  // Loads every committed schedule and its latest runs.
  absl::Status Recover();

  // Validates the cron expression ("--cron: ..."), the time zone ("--time-zone: ...") and the
  // spec as a submission would be, then commits the schedule. Tenant tokens only.
  absl::StatusOr<forge::v1::Schedule> Create(const Principal& caller,
                                             const forge::v1::CreateScheduleRequest& request);
  // The caller's schedules (an admin: every tenant's), with next_run_time and last_run, by
  // name then id. (The RPC layer lets tenants only in; the dashboard lets admins see all.)
  std::vector<forge::v1::Schedule> List(const Principal& caller) const;
  // NOT_FOUND for unknown schedules and other tenants'.
  absl::Status Delete(const Principal& caller, const std::string& schedule_id);
  // The schedule's newest `limit` runs (all of them for 0), newest slot first (NOT_FOUND for
  // other tenants'; admins see all).
  absl::StatusOr<std::vector<forge::v1::ScheduleRun>> Runs(const Principal& caller,
                                                           const std::string& schedule_id,
                                                           int limit = 0) const;

  // Decides every schedule's due slot (see the file comment) and returns once those
  // decisions are committed (or refused). Safe to call from several threads at once.
  void Tick();

  // Starts / stops (and joins) the ticker thread. Stop is idempotent.
  void Start();
  void Stop();

 private:
  struct Entry {
    forge::v1::Schedule schedule;  // last_run / next_run_time are filled on the way out
    std::shared_ptr<const CronSchedule> cron;
    std::optional<forge::v1::ScheduleRun> last_run;
    std::optional<forge::v1::ScheduleRun> last_submitted;  // the last SUBMITTED run
    absl::Time last_slot = absl::InfinitePast();           // latest slot with a run
  };

  // Decides one slot of a schedule (snapshot taken under mu_); returns the committed run,
  // or nullopt when nothing was recorded here (another decider won, or the store failed).
  std::optional<forge::v1::ScheduleRun> Decide(
      const forge::v1::Schedule& schedule, absl::Time slot,
      const std::optional<forge::v1::ScheduleRun>& last_submitted);
  // Records the run committed for `schedule_id` in memory. REQUIRES: mu_ held.
  void NoteRunLocked(Entry& e, const forge::v1::ScheduleRun& run)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  forge::v1::Schedule ViewLocked(const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TickerLoop();

  // Constant after construction.
  Store* const store_;
  Clock* const clock_;
  JobManager* const jobs_;
  const StorageGateway* const storage_;
  const ModelCatalog* const catalog_;
  const SubmissionChecks checks_;
  const ScheduleManagerOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> schedules_ ABSL_GUARDED_BY(mu_);
  // (schedule id, slot) being decided now.
  absl::flat_hash_set<std::pair<std::string, int64_t>> in_flight_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;  // touched only by Start/Stop (the server's thread)
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SCHEDULE_MANAGER_H_
