// How jobs look in the CLI's table output: the `forge jobs` table and the `forge status`
// page, plus the job-state names users type (`--state queued`).
#ifndef FORGE_CLI_JOB_VIEW_H_
#define FORGE_CLI_JOB_VIEW_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "forge/v1/coordinator.pb.h"
#include "forge/v1/job.pb.h"

namespace forge::cli {

// "QUEUED", "RUNNING"...; the number for a state this build does not know.
std::string JobStateName(forge::v1::JobState state);

// A state from its name, any case ("queued", "RUNNING"); a usage error listing the names
// otherwise.
absl::StatusOr<forge::v1::JobState> ParseJobState(absl::string_view text);

// The `forge jobs` table: ID NAME STATE RANKS PRIO AGE MESSAGE, in the response's order.
// Ages are relative to `now`.
std::string JobsTable(const forge::v1::ListJobsResponse& response, absl::Time now);

// The `forge status` page: everything a person needs about one job, one "label: value" a
// line (training progress included once the job reported any), then the attempts, evals and
// placement tables when the job has them.
std::string JobDetails(const forge::v1::Job& job, absl::Time now);

}  // namespace forge::cli

#endif  // FORGE_CLI_JOB_VIEW_H_
