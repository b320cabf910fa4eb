// forge watch, forge logs: commands that poll a job until it ends.
#include <algorithm>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/job_view.h"
#include "cli/progress_view.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

using forge::v1::Job;

// Non-terminal output: at most one progress line a second (state changes always print).
constexpr absl::Duration kPlainLineEvery = absl::Seconds(1);

// Calls `call` until it answers anything but UNAVAILABLE, or until the coordinator has been
// unavailable for options.patience. Each outage is noted once on env.err, and its end too.
absl::Status WithPatience(const CommandEnv& env, const FollowOptions& options,
                          const std::function<absl::Status()>& call) {
  absl::Time outage_start = absl::InfiniteFuture();
  for (;;) {
    absl::Status status = call();
    if (!absl::IsUnavailable(status)) {
      if (status.ok() && outage_start != absl::InfiniteFuture()) {
        *env.err << "forge: the coordinator is back\n";
      }
      return status;
    }
    const absl::Time now = env.clock->Now();
    if (outage_start == absl::InfiniteFuture()) {
      outage_start = now;
      *env.err << "forge: the coordinator is unavailable (restarting?); retrying for up to "
               << absl::FormatDuration(options.patience) << "\n";
    } else if (now - outage_start >= options.patience) {
      return absl::UnavailableError(absl::StrCat(status.message(), "\n(gave up after ",
                                                 absl::FormatDuration(options.patience),
                                                 "; wait longer with --patience)"));
    }
    env.sleep(options.interval);
  }
}

absl::StatusOr<Job> GetJob(const CommandEnv& env, CoordinatorClient& client,
                           const std::string& job_id, const FollowOptions& options) {
  forge::v1::GetJobRequest request;
  request.set_job_id(job_id);
  Job job;
  RETURN_IF_ERROR(WithPatience(env, options, [&] {
    auto context = client.NewContext();
    return client.Finish(client.jobs().GetJob(context.get(), request, &job));
  }));
  return job;
}

// The status RunWatch ends with, for a terminal job.
absl::Status Outcome(const Job& job) {
  const std::string what =
      absl::StrCat("job ", job.id(), " ", JobStateName(job.state()),
                   job.message().empty() ? "" : absl::StrCat(": ", job.message()));
  switch (job.state()) {
    case forge::v1::JOB_STATE_SUCCEEDED:
      return absl::OkStatus();
    case forge::v1::JOB_STATE_CANCELLED:
      return JobOutcomeError(kExitJobCancelled, what);
    default:
      return JobOutcomeError(kExitJobFailed, what);
  }
}

// Draws the watch display, one job snapshot at a time. Owned by one thread.
class WatchDisplay {
 public:
  WatchDisplay(const CommandEnv& env, bool json) : env_(env), json_(json) {}

  void Show(const Job& job) {
    if (json_) return;
    if (last_attempt_ > 0 && job.attempt() > last_attempt_) {
      EndLiveLine();
      *env_.out << RestartLine(job) << "\n";
    }
    last_attempt_ = std::max(last_attempt_, job.attempt());
    if (env_.out_is_tty) {
      const std::string line = ProgressLine(job, /*bar=*/true);
      // Pad over the rest of a longer previous line.
      *env_.out << "\r" << line
                << std::string(live_width_ > line.size() ? live_width_ - line.size() : 0, ' ');
      live_width_ = line.size();
    } else {
      const absl::Time now = env_.clock->Now();
      const bool state_changed = job.state() != last_state_;
      const bool step_changed = job.progress().step() != last_step_;
      if (state_changed || (step_changed && now - last_line_ >= kPlainLineEvery)) {
        *env_.out << ProgressLine(job, /*bar=*/false) << "\n";
        last_state_ = job.state();
        last_step_ = job.progress().step();
        last_line_ = now;
      }
    }
    env_.out->flush();
  }

  void Finish(const Job& job) {
    EndLiveLine();
    if (json_) {
      WriteOutput(*env_.out, OutputFormat::kJson, job, [] { return std::string(); }).IgnoreError();
    } else {
      *env_.out << OutcomeText(job);
    }
    env_.out->flush();
  }

 private:
  // Ends the redrawn line so the next output starts on a line of its own.
  void EndLiveLine() {
    if (live_width_ == 0) return;
    *env_.out << "\n";
    live_width_ = 0;
  }

  const CommandEnv& env_;
  const bool json_;
  int last_attempt_ = 0;
  size_t live_width_ = 0;  // characters of the live line on screen; 0 = none
  forge::v1::JobState last_state_ = forge::v1::JOB_STATE_UNSPECIFIED;
  int64_t last_step_ = -1;
  absl::Time last_line_ = absl::InfinitePast();
};

}  // namespace

absl::Status RunWatch(const CommandEnv& env, const std::string& job_id,
                      const FollowOptions& options, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  WatchDisplay display(env, format == OutputFormat::kJson);
  for (;;) {
    ASSIGN_OR_RETURN(const Job job, GetJob(env, *client, job_id, options));
    display.Show(job);
    if (IsTerminal(job.state())) {
      display.Finish(job);
      return Outcome(job);
    }
    env.sleep(options.interval);
  }
}

absl::Status RunLogs(const CommandEnv& env, const std::string& job_id, bool follow,
                     const FollowOptions& options) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::GetJobLogsRequest request;
  request.set_job_id(job_id);
  request.set_offset(0);
  for (;;) {
    forge::v1::GetJobLogsResponse response;
    RETURN_IF_ERROR(WithPatience(env, options, [&] {
      auto context = client->NewContext();
      return client->Finish(client->jobs().GetJobLogs(context.get(), request, &response));
    }));
    *env.out << response.data();
    env.out->flush();
    if (!*env.out) return absl::UnknownError("cannot write the log (stdout closed?)");
    const int64_t previous = request.offset();
    // Never go back: a coordinator that answered an older offset would repeat lines.
    request.set_offset(std::max(previous, response.next_offset()));
    if (!response.data().empty() && request.offset() > previous) continue;  // maybe more now
    if (!follow || response.job_finished()) return absl::OkStatus();
    env.sleep(options.interval);
  }
}

}  // namespace forge::cli
