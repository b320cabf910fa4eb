#include "coordinator/job_state.h"

#include "absl/strings/str_cat.h"

namespace forge::coordinator {

using forge::v1::JobState;

bool IsTerminal(JobState state) {
  return state == forge::v1::JOB_STATE_SUCCEEDED || state == forge::v1::JOB_STATE_FAILED ||
         state == forge::v1::JOB_STATE_CANCELLED;
}

absl::Status CheckTransition(JobState from, JobState to) {
  bool ok = false;
  switch (from) {
    case forge::v1::JOB_STATE_QUEUED:
      ok = to == forge::v1::JOB_STATE_RUNNING || to == forge::v1::JOB_STATE_CANCELLED ||
           to == forge::v1::JOB_STATE_FAILED;
      break;
    case forge::v1::JOB_STATE_RUNNING:
      ok = to == forge::v1::JOB_STATE_SUCCEEDED || to == forge::v1::JOB_STATE_FAILED ||
           to == forge::v1::JOB_STATE_CANCELLED || to == forge::v1::JOB_STATE_RESTARTING;
      break;
    case forge::v1::JOB_STATE_RESTARTING:
      ok = to == forge::v1::JOB_STATE_RUNNING || to == forge::v1::JOB_STATE_FAILED ||
           to == forge::v1::JOB_STATE_CANCELLED;
      break;
    default:
      ok = false;
  }
  if (ok) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("job is ", JobStateName(from),
                                                    "; it cannot become ", JobStateName(to)));
}

const char* JobStateName(JobState state) {
  switch (state) {
    case forge::v1::JOB_STATE_QUEUED: return "QUEUED";
    case forge::v1::JOB_STATE_RUNNING: return "RUNNING";
    case forge::v1::JOB_STATE_RESTARTING: return "RESTARTING";
    case forge::v1::JOB_STATE_SUCCEEDED: return "SUCCEEDED";
    case forge::v1::JOB_STATE_FAILED: return "FAILED";
    case forge::v1::JOB_STATE_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

}  // namespace forge::coordinator
