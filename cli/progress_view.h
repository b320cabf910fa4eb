// How a job's training progress looks in the CLI: the `forge watch` line, the attempts and
// evals tables of `forge status`, and the outcome `forge watch` ends with.
#ifndef FORGE_CLI_PROGRESS_VIEW_H_
#define FORGE_CLI_PROGRESS_VIEW_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "forge/v1/job.pb.h"

namespace forge::cli {

inline constexpr int kProgressBarWidth = 20;

// "[######..............] " for `step` of `total` (all dots when total is unknown), the bar
// kProgressBarWidth characters wide.
std::string ProgressBar(int64_t step, int64_t total);

// "0:41", "12:05", "1:02:03"; "-" when seconds <= 0 (unknown).
std::string FormatEta(int64_t seconds);

// One line about where the job is, without a newline:
//   "step 120/400 | loss 2.513 | 18.2k tok/s | ETA 0:41 | RUNNING"
// Parts without a value yet (no step reported, no rate, no ETA) are left out, and a phase
// other than "training" follows the state: "RUNNING (checkpointing)". With `bar`, the line
// starts with ProgressBar().
std::string ProgressLine(const forge::v1::Job& job, bool bar);

// The line `forge watch` prints when the job moved on to a new attempt, e.g.
//   "restart: attempt 2 after attempt 1 ended: worker w-a lost (resumed from step 200, 37
//   steps lost)"
// REQUIRES: job.attempt() > 1.
std::string RestartLine(const forge::v1::Job& job);

// ATTEMPT START END RESUMED-FROM LAST-STEP LOST-STEPS RECOVER-S REASON, oldest first.
std::string AttemptsTable(const forge::v1::Job& job, absl::Time now);

// SUITE LOSS BITS/BYTE STEP, in the job's order.
std::string EvalsTable(const forge::v1::Job& job);

// How a finished job ended, several lines: "job J SUCCEEDED at step 400/400", the message,
// the final checkpoint and the evals table.
std::string OutcomeText(const forge::v1::Job& job);

// Whether `state` is final (SUCCEEDED, FAILED, CANCELLED).
bool IsTerminal(forge::v1::JobState state);

}  // namespace forge::cli

#endif  // FORGE_CLI_PROGRESS_VIEW_H_
