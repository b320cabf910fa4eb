// The job state machine (DESIGN.md): QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED,
// with RESTARTING while a job recovers from a failure.
#ifndef FORGE_COORDINATOR_JOB_STATE_H_
#define FORGE_COORDINATOR_JOB_STATE_H_

#include "absl/status/status.h"
#include "forge/v1/job.pb.h"

namespace forge::coordinator {

bool IsTerminal(forge::v1::JobState state);

// OK when `from -> to` is a transition of the state machine; FAILED_PRECONDITION naming both
// states otherwise. Allowed:
//   QUEUED     -> RUNNING | CANCELLED | FAILED
//   RUNNING    -> SUCCEEDED | FAILED | CANCELLED | RESTARTING
//   RESTARTING -> RUNNING | FAILED | CANCELLED
absl::Status CheckTransition(forge::v1::JobState from, forge::v1::JobState to);

// "QUEUED", "RUNNING", ... (the enum name without its prefix).
const char* JobStateName(forge::v1::JobState state);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_JOB_STATE_H_
