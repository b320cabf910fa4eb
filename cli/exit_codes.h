// The forge CLI's exit codes and the one place a Status becomes one.
#ifndef FORGE_CLI_EXIT_CODES_H_
#define FORGE_CLI_EXIT_CODES_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace forge::cli {

// Scripts rely on these numbers; `forge --help` lists them (ExitCodesHelp()).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,       // anything not listed below
  kExitUsage = 2,         // bad flags, unreadable or invalid local input (a YAML spec)
  kExitRefused = 3,       // the coordinator refused: invalid, precondition, already exists
  kExitNotFound = 4,      // no such job / token / tenant (or another tenant's)
  kExitAuth = 5,          // unauthenticated or permission denied
  kExitUnreachable = 6,   // coordinator unreachable or no answer before the deadline
  kExitJobFailed = 7,     // `forge watch`: the job ended FAILED
  kExitJobCancelled = 8,  // `forge watch`: the job ended CANCELLED
};

// An INVALID_ARGUMENT status marked as the caller's local mistake (exit 2), as opposed to an
// INVALID_ARGUMENT the coordinator answered (exit 3).
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// The outcome of a job that a command followed to its end without succeeding: `exit_code` is
// kExitJobFailed or kExitJobCancelled, and ExitCodeFor() returns it. The status code is
// ABORTED (FAILED) or CANCELLED; `message` says how the job ended.
absl::Status JobOutcomeError(ExitCode exit_code, absl::string_view message);

// The exit code for the outcome of a command.
int ExitCodeFor(const absl::Status& status);

// The "Exit codes:" section of `forge --help`, one code a line.
absl::string_view ExitCodesHelp();

}  // namespace forge::cli

#endif  // FORGE_CLI_EXIT_CODES_H_
