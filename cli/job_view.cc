#include "cli/job_view.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/exit_codes.h"
#include "cli/output.h"
#include "cli/progress_view.h"
#include "common/guard_spec.h"
#include "common/spec_names.h"

namespace forge::cli {
namespace {

using forge::v1::Job;
using forge::v1::JobSpec;
using forge::v1::JobState;

constexpr size_t kMaxMessageColumn = 80;

constexpr JobState kStates[] = {
    forge::v1::JOB_STATE_QUEUED,    forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_RESTARTING,
    forge::v1::JOB_STATE_SUCCEEDED, forge::v1::JOB_STATE_FAILED,  forge::v1::JOB_STATE_CANCELLED,
};

std::string RanksCell(const JobSpec& spec) {
  return absl::StrCat(spec.resources().ranks(), " ", DeviceKindName(spec.resources().device()));
}

// The job's message, or a short account of a state that has none.
std::string MessageCell(const Job& job) {
  if (!job.message().empty()) return OneLine(job.message(), kMaxMessageColumn);
  if (job.state() == forge::v1::JOB_STATE_RUNNING && !job.trainer_attached()) {
    return "trainers starting";
  }
  if (job.unschedulable()) return "unschedulable on the current fleet";
  return "";
}

std::string BaseLine(const JobSpec& spec) {
  if (spec.has_base()) {
    const auto& base = spec.base();
    if (!base.checkpoint().empty()) return absl::StrCat("checkpoint ", base.checkpoint());
    return absl::StrCat("model ", base.model(), " at ", StageName(base.stage()));
  }
  const auto& m = spec.model();
  std::vector<std::string> parts;
  if (!m.preset().empty()) parts.push_back(absl::StrCat("preset ", m.preset()));
  if (m.has_layers()) parts.push_back(absl::StrCat(m.layers(), " layers"));
  if (m.has_heads()) parts.push_back(absl::StrCat(m.heads(), " heads"));
  if (m.has_width()) parts.push_back(absl::StrCat("width ", m.width()));
  if (m.has_context()) parts.push_back(absl::StrCat("context ", m.context()));
  if (m.has_vocab()) parts.push_back(absl::StrCat("vocab ", m.vocab()));
  return absl::StrCat("new model (", parts.empty() ? "no shape given" : absl::StrJoin(parts, ", "),
                      ")");
}

std::string DataLine(const JobSpec& spec) {
  std::vector<std::string> parts;
  for (const auto& e : spec.data().mixture()) {
    parts.push_back(absl::StrCat(e.dataset(), " ", e.weight()));
  }
  std::string line = parts.empty() ? "-" : absl::StrJoin(parts, ", ");
  if (spec.data().schedule_size() > 0) {
    absl::StrAppend(&line, "; schedule of ", spec.data().schedule_size(), " points");
  }
  return line;
}

// "general-english 1.2M, acme-tickets 3.4M", by name.
std::string TokensPerSource(const forge::v1::JobProgress& p) {
  std::vector<std::pair<std::string, int64_t>> sources(p.tokens_per_source().begin(),
                                                       p.tokens_per_source().end());
  std::sort(sources.begin(), sources.end());
  std::vector<std::string> parts;
  for (const auto& [name, tokens] : sources) {
    parts.push_back(absl::StrCat(name, " ", FormatCount(static_cast<double>(tokens))));
  }
  return absl::StrJoin(parts, ", ");
}

std::string TrainLine(const JobSpec& spec) {
  const auto& t = spec.train();
  std::vector<std::string> parts;
  if (t.has_steps()) parts.push_back(absl::StrCat(t.steps(), " steps"));
  if (t.has_seq_len()) parts.push_back(absl::StrCat("seq_len ", t.seq_len()));
  if (t.has_batch_tokens()) parts.push_back(absl::StrCat("batch_tokens ", t.batch_tokens()));
  if (t.has_micro_batch()) parts.push_back(absl::StrCat("micro_batch ", t.micro_batch()));
  if (t.has_lr()) parts.push_back(absl::StrCat("lr ", t.lr()));
  if (t.lr_decay() != forge::v1::LR_DECAY_UNSPECIFIED) parts.push_back(LrDecayName(t.lr_decay()));
  if (t.has_seed()) parts.push_back(absl::StrCat("seed ", t.seed()));
  return parts.empty() ? "-" : absl::StrJoin(parts, ", ");
}

}  // namespace

std::string JobStateName(JobState state) {
  return EnumLabel(forge::v1::JobState_descriptor(), state, "JOB_STATE_");
}

absl::StatusOr<JobState> ParseJobState(absl::string_view text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  std::vector<std::string> names;
  for (JobState s : kStates) {
    if (JobStateName(s) == upper) return s;
    names.push_back(absl::AsciiStrToLower(JobStateName(s)));
  }
  return UsageError(absl::StrCat("unknown job state \"", OneLine(text, 32), "\"; use ",
                                 absl::StrJoin(names, ", ")));
}

std::string JobsTable(const forge::v1::ListJobsResponse& response, absl::Time now) {
  Table table({"ID", "NAME", "STATE", "RANKS", "PRIO", "AGE", "MESSAGE"});
  for (const Job& job : response.jobs()) {
    table.AddRow({job.id(), job.spec().name(), JobStateName(job.state()), RanksCell(job.spec()),
                  absl::StrCat(job.spec().priority()), FormatAge(job.create_time(), now),
                  MessageCell(job)});
  }
  return table.Render();
}

std::string JobDetails(const Job& job, absl::Time now) {
  const JobSpec& spec = job.spec();
  std::vector<std::pair<std::string, std::string>> lines;
  auto add = [&lines](std::string label, std::string value) {
    lines.emplace_back(std::move(label), std::move(value));
  };
  add("job", job.id());
  add("name", spec.name());
  add("tenant", job.tenant());
  add("state", JobStateName(job.state()));
  if (!job.message().empty()) add("message", job.message());
  if (job.state() == forge::v1::JOB_STATE_QUEUED) {
    add("waiting", job.unschedulable()
                       ? "unschedulable: the job cannot fit on the fleet as it is now; it "
                         "waits for more or bigger workers"
                       : "for free devices (queue order: priority, then submission time)");
  }
  if (job.state() == forge::v1::JOB_STATE_RUNNING) {
    add("trainer", job.trainer_attached()
                       ? "attached"
                       : "not attached — the training engine is not available yet; the job "
                         "holds its devices but does not train");
  }
  add("attempt", absl::StrCat(job.attempt()));
  add("restarts", spec.has_max_restarts()
                      ? absl::StrCat(job.restarts(), " of ", spec.max_restarts(), " allowed")
                      : absl::StrCat(job.restarts()));
  add("priority", absl::StrCat(spec.priority()));
  add("resources", absl::StrCat(spec.resources().ranks(), " ranks on ",
                                DeviceKindName(spec.resources().device())));
  add("base", BaseLine(spec));
  add("data", DataLine(spec));
  add("train", TrainLine(spec));
  if (!job.request_id().empty()) add("request id", job.request_id());
  add("created", FormatTimestamp(job.create_time(), now));
  add("started", FormatTimestamp(job.start_time(), now));
  add("ended", FormatTimestamp(job.end_time(), now));
  add("updated", FormatTimestamp(job.update_time(), now));
  if (job.has_progress()) {
    const forge::v1::JobProgress& p = job.progress();
    add("progress", ProgressLine(job, /*bar=*/true));
    if (!p.phase().empty()) add("phase", p.phase());
    if (p.lr() > 0) add("lr", absl::StrFormat("%.3g", p.lr()));
    if (!p.tokens_per_source().empty()) add("tokens", TokensPerSource(p));
    add("last checkpoint", p.last_checkpoint_step() > 0
                               ? absl::StrCat("step ", p.last_checkpoint_step())
                               : std::string("none yet"));
    add("reported", FormatTimestamp(p.update_time(), now));
  }
  if (!job.final_checkpoint().empty()) add("final checkpoint", job.final_checkpoint());

  size_t width = 0;
  for (const auto& [label, value] : lines) width = std::max(width, label.size());
  std::string out;
  for (const auto& [label, value] : lines) {
    absl::StrAppend(&out, label, ":", std::string(width - label.size() + 2, ' '), value, "\n");
  }
  auto section = [&out](absl::string_view title, const std::string& rendered) {
    absl::StrAppend(&out, "\n", title, ":\n");
    for (absl::string_view line : absl::StrSplit(rendered, '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  };
  if (job.attempts_size() > 0) section("attempts", AttemptsTable(job, now));
  if (job.evals_size() > 0 || job.base_evals_size() > 0) section("evals", EvalsTable(job));
  if (!job.contamination().empty()) section("held-out check", job.contamination());
  if (job.has_guard()) {
    absl::StrAppend(&out, "\nguard: ", job.guard().message(), "\n");
  } else if (job.spec().has_guard()) {
    absl::StrAppend(&out, "\nguard: ", GuardedSuitesText(job.spec().guard()), " within ",
                    absl::StrFormat("%+.2f%%", 100 * job.spec().guard().max_regression()),
                    " of the base; verdict when the job ends\n");
  }
  if (job.placement_size() > 0) {
    Table table({"RANK", "WORKER", "DEVICE"});
    for (const auto& p : job.placement()) {
      table.AddRow({absl::StrCat(p.rank()), p.worker_id(), p.device()});
    }
    absl::StrAppend(&out, "\nplacement (attempt ", job.attempt(), "):\n");
    const std::string rendered = table.Render();
    for (absl::string_view line : absl::StrSplit(rendered, '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }
  return out;
}

}  // namespace forge::cli
