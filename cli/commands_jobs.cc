// forge submit, jobs, status, cancel.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/job_view.h"
#include "cli/spec_yaml.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

// Far above any real spec; a larger file is a mistake (a dataset passed as the spec).
constexpr size_t kMaxSpecBytes = 1 << 20;

}  // namespace

absl::StatusOr<forge::v1::JobSpec> LoadJobSpec(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return UsageError(absl::StrCat("cannot read the job spec: ", text.status().message()));
  }
  if (text->size() > kMaxSpecBytes) {
    return UsageError(absl::StrCat(path, ": ", text->size(), " bytes; a job spec is at most ",
                                   kMaxSpecBytes, " bytes"));
  }
  absl::StatusOr<forge::v1::JobSpec> spec = ParseJobSpecYaml(*text, path);
  if (!spec.ok()) return UsageError(spec.status().message());
  return spec;
}

namespace {

using forge::v1::Job;

// A fresh idempotency key: "r-" and 24 hex digits (96 random bits).
absl::StatusOr<std::string> NewRequestId() {
  ASSIGN_OR_RETURN(std::string bytes, SecureRandomBytes(12));
  return absl::StrCat("r-", HexEncode(bytes));
}

}  // namespace

absl::Status RunSubmit(const CommandEnv& env, const std::string& spec_path,
                       const SubmitOptions& options) {
  forge::v1::SubmitJobRequest request;
  ASSIGN_OR_RETURN(*request.mutable_spec(), LoadJobSpec(spec_path));
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  ASSIGN_OR_RETURN(*request.mutable_request_id(), NewRequestId());

  // The same request_id on every try: a submission the coordinator committed before its
  // answer was lost comes back as the first job, never as a second one.
  const absl::Time give_up = absl::Now() + options.retry_for;
  absl::Duration backoff = options.first_backoff;
  for (int attempt = 1;; ++attempt) {
    forge::v1::SubmitJobResponse response;
    auto context = client->NewContext();
    const absl::Status status =
        client->Finish(client->jobs().SubmitJob(context.get(), request, &response));
    if (status.ok()) {
      *env.out << response.job().id() << "\n";
      env.out->flush();
      return absl::OkStatus();
    }
    if (status.code() != absl::StatusCode::kUnavailable || absl::Now() + backoff > give_up) {
      return status;
    }
    if (attempt == 1) {
      *env.err << "forge: the coordinator at " << client->options().coordinator
               << " is unavailable; retrying for up to " << absl::FormatDuration(options.retry_for)
               << "\n";
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

absl::Status RunJobs(const CommandEnv& env, const std::vector<std::string>& states,
                     OutputFormat format) {
  forge::v1::ListJobsRequest request;
  for (const std::string& name : states) {
    ASSIGN_OR_RETURN(forge::v1::JobState state, ParseJobState(name));
    request.add_states(state);
  }
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListJobsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->jobs().ListJobs(context.get(), request, &response)));
  if (format == OutputFormat::kTable && response.jobs().empty()) {
    *env.err << (states.empty() ? "no jobs\n" : "no jobs in the given states\n");
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return JobsTable(response, env.clock->Now()); });
}

absl::Status RunStatus(const CommandEnv& env, const std::string& job_id, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::GetJobRequest request;
  request.set_job_id(job_id);
  Job job;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->jobs().GetJob(context.get(), request, &job)));
  return WriteOutput(*env.out, format, job, [&] { return JobDetails(job, env.clock->Now()); });
}

absl::Status RunCancel(const CommandEnv& env, const std::string& job_id, const std::string& reason,
                       OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  Job job;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->jobs().CancelJob(context.get(), request, &job)));
  return WriteOutput(*env.out, format, job, [&] {
    return absl::StrCat("job ", job.id(), " ", JobStateName(job.state()),
                        job.message().empty() ? "" : absl::StrCat(": ", job.message()), "\n");
  });
}

}  // namespace forge::cli
