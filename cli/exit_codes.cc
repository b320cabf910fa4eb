#include "cli/exit_codes.h"

#include "absl/strings/cord.h"

namespace forge::cli {
namespace {

constexpr absl::string_view kUsagePayload = "type.forge.dev/forge.cli.UsageError";
constexpr absl::string_view kJobOutcomePayload = "type.forge.dev/forge.cli.JobOutcome";

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::Status JobOutcomeError(ExitCode exit_code, absl::string_view message) {
  absl::Status status =
      exit_code == kExitJobCancelled ? absl::CancelledError(message) : absl::AbortedError(message);
  status.SetPayload(kJobOutcomePayload, absl::Cord(exit_code == kExitJobCancelled ? "8" : "7"));
  return status;
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) return kExitUsage;
  if (const auto outcome = status.GetPayload(kJobOutcomePayload); outcome.has_value()) {
    return *outcome == "8" ? kExitJobCancelled : kExitJobFailed;
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
      return kExitRefused;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitAuth;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnreachable;
    default:
      return kExitFailure;
  }
}

absl::string_view ExitCodesHelp() {
  return "Exit codes:\n"
         "  0  success\n"
         "  1  any other error\n"
         "  2  usage error or invalid local input (bad flags, unreadable or invalid spec)\n"
         "  3  refused by the coordinator: invalid request, failed precondition, already "
         "exists\n"
         "  4  not found (or owned by another tenant)\n"
         "  5  not authenticated or not permitted: check the token\n"
         "  6  coordinator unreachable, or no answer within --timeout\n"
         "  7  `forge watch`: the job ended FAILED\n"
         "  8  `forge watch`: the job ended CANCELLED\n";
}

}  // namespace forge::cli
