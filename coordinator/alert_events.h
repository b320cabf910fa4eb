// What the coordinator tells webhooks about: the alert for a committed job state change, a
// lost worker, and a schedule slot that trained nothing. Pure functions of the records.
#ifndef FORGE_COORDINATOR_ALERT_EVENTS_H_
#define FORGE_COORDINATOR_ALERT_EVENTS_H_

#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/alerts.h"
#include "coordinator/store.h"
#include "forge/v1/coordinator.pb.h"
#include "forge/v1/job.pb.h"

namespace forge::coordinator {

// job_failed (a job reached FAILED), job_restarted (it entered RESTARTING), guard_blocked (it
// succeeded but its guard refused the promotion); nothing for other changes.
std::optional<AlertEvent> AlertForTransition(const forge::v1::Job& job, forge::v1::JobState from);
// worker_lost: the worker stopped heartbeating; names the jobs whose ranks it held.
AlertEvent WorkerLostAlert(const forge::v1::Worker& worker, absl::Duration silent);
// schedule_skipped: the slot submitted no job (no new data, or the submission was refused).
AlertEvent ScheduleSkippedAlert(const forge::v1::Schedule& schedule,
                                const forge::v1::ScheduleRun& run);

// The outbox row of an event (its id and time must be set) and back.
AlertRecord ToRecord(const AlertEvent& event);
// DATA_LOSS naming the row when its body is not an event this code wrote.
absl::StatusOr<AlertEvent> FromRecord(const AlertRecord& record);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_ALERT_EVENTS_H_
