#include "cli/progress_view.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/job_view.h"
#include "cli/output.h"

namespace forge::cli {
namespace {

using forge::v1::Job;
using forge::v1::JobAttempt;

constexpr size_t kMaxReasonColumn = 60;

// "2.513": losses are compared across runs, so a fixed three decimals.
std::string FormatLoss(double loss) { return absl::StrFormat("%.3f", loss); }

const JobAttempt* FindAttempt(const Job& job, int attempt) {
  for (const JobAttempt& a : job.attempts()) {
    if (a.attempt() == attempt) return &a;
  }
  return nullptr;
}

}  // namespace

bool IsTerminal(forge::v1::JobState state) {
  return state == forge::v1::JOB_STATE_SUCCEEDED || state == forge::v1::JOB_STATE_FAILED ||
         state == forge::v1::JOB_STATE_CANCELLED;
}

std::string ProgressBar(int64_t step, int64_t total) {
  int filled = 0;
  if (total > 0) {
    filled = static_cast<int>(std::clamp<int64_t>(step, 0, total) * kProgressBarWidth / total);
  }
  return absl::StrCat("[", std::string(filled, '#'), std::string(kProgressBarWidth - filled, '.'),
                      "] ");
}

std::string FormatEta(int64_t seconds) {
  if (seconds <= 0) return "-";
  const int64_t h = seconds / 3600, m = seconds / 60 % 60, s = seconds % 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, s);
  return absl::StrFormat("%d:%02d", m, s);
}

std::string ProgressLine(const Job& job, bool bar) {
  const forge::v1::JobProgress& p = job.progress();
  const int64_t total = p.total_steps() > 0 ? p.total_steps() : job.spec().train().steps();
  std::vector<std::string> parts;
  parts.push_back(total > 0 ? absl::StrCat("step ", p.step(), "/", total)
                            : absl::StrCat("step ", p.step()));
  if (p.step() > 0) parts.push_back(absl::StrCat("loss ", FormatLoss(p.loss())));
  if (p.tokens_per_second() > 0) {
    parts.push_back(absl::StrCat(FormatCount(p.tokens_per_second()), " tok/s"));
  }
  if (p.mfu() > 0) parts.push_back(absl::StrFormat("MFU %.0f%%", 100 * p.mfu()));
  if (p.eta_seconds() > 0 && !IsTerminal(job.state())) {
    parts.push_back(absl::StrCat("ETA ", FormatEta(p.eta_seconds())));
  }
  std::string state = JobStateName(job.state());
  if (job.state() == forge::v1::JOB_STATE_RUNNING && !p.phase().empty() &&
      p.phase() != "training") {
    absl::StrAppend(&state, " (", p.phase(), ")");
  }
  parts.push_back(std::move(state));
  return absl::StrCat(bar ? ProgressBar(p.step(), total) : "", absl::StrJoin(parts, " | "));
}

std::string RestartLine(const Job& job) {
  std::string line = absl::StrCat("restart: attempt ", job.attempt());
  if (const JobAttempt* prev = FindAttempt(job, job.attempt() - 1); prev != nullptr) {
    absl::StrAppend(
        &line, " after attempt ", prev->attempt(), " ended: ",
        prev->end_reason().empty() ? "no reason given" : OneLine(prev->end_reason(), 200));
  }
  if (const JobAttempt* cur = FindAttempt(job, job.attempt()); cur != nullptr) {
    const JobAttempt* prev = FindAttempt(job, job.attempt() - 1);
    absl::StrAppend(
        &line, " (",
        cur->resumed_from_step() > 0 ? absl::StrCat("resumed from step ", cur->resumed_from_step())
                                     : std::string("starting from scratch"),
        prev != nullptr ? absl::StrCat(", ", prev->lost_steps(), " steps lost") : "", ")");
  } else if (!job.message().empty()) {
    absl::StrAppend(&line, " (", OneLine(job.message(), 200), ")");
  }
  return line;
}

std::string AttemptsTable(const Job& job, absl::Time now) {
  Table table({"ATTEMPT", "START", "END", "RESUMED-FROM", "LAST-STEP", "LOST-STEPS", "RECOVER-S",
               "REASON"});
  for (const JobAttempt& a : job.attempts()) {
    const bool running = a.end_time().seconds() == 0 && a.end_time().nanos() == 0;
    table.AddRow(
        {absl::StrCat(a.attempt()), FormatAgo(a.start_time(), now),
         running ? "running" : FormatAgo(a.end_time(), now),
         a.resumed_from_step() > 0 ? absl::StrCat("step ", a.resumed_from_step()) : "scratch",
         absl::StrCat(a.last_step()), absl::StrCat(a.lost_steps()),
         a.recover_seconds() > 0 ? absl::StrFormat("%.1f", a.recover_seconds()) : "-",
         a.end_reason().empty() ? "-" : OneLine(a.end_reason(), kMaxReasonColumn)});
  }
  return table.Render();
}

std::string EvalsTable(const Job& job) {
  if (job.base_evals_size() == 0) {
    Table table({"SUITE", "LOSS", "BITS/BYTE", "STEP"});
    for (const forge::v1::EvalResult& e : job.evals()) {
      table.AddRow({e.suite(), FormatLoss(e.loss()), absl::StrFormat("%.4f", e.bits_per_byte()),
                    absl::StrCat(e.step())});
    }
    return table.Render();
  }
  // With the starting weights' results: before and after, per suite.
  Table table({"SUITE", "BASE LOSS", "LOSS", "CHANGE", "BITS/BYTE", "STEP"});
  for (const forge::v1::EvalResult& b : job.base_evals()) {
    const forge::v1::EvalResult* now = nullptr;
    for (const auto& e : job.evals()) {
      if (e.suite() == b.suite()) now = &e;
    }
    table.AddRow({b.suite(), FormatLoss(b.loss()), now ? FormatLoss(now->loss()) : "-",
                  now && b.loss() > 0
                      ? absl::StrFormat("%+.2f%%", 100 * (now->loss() - b.loss()) / b.loss())
                      : "-",
                  now ? absl::StrFormat("%.4f", now->bits_per_byte()) : "-",
                  now ? absl::StrCat(now->step()) : "-"});
  }
  return table.Render();
}

std::string OutcomeText(const Job& job) {
  const forge::v1::JobProgress& p = job.progress();
  const int64_t total = p.total_steps() > 0 ? p.total_steps() : job.spec().train().steps();
  std::string out = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()), " at step ",
                                 p.step(), total > 0 ? absl::StrCat("/", total) : "");
  if (job.restarts() > 0) absl::StrAppend(&out, " after ", job.restarts(), " restart(s)");
  absl::StrAppend(&out, "\n");
  if (!job.message().empty()) absl::StrAppend(&out, "message: ", job.message(), "\n");
  if (p.step() > 0) absl::StrAppend(&out, "final loss: ", FormatLoss(p.loss()), "\n");
  if (!job.final_checkpoint().empty()) {
    absl::StrAppend(&out, "final checkpoint: ", job.final_checkpoint(), "\n");
  } else if (p.last_checkpoint_step() > 0) {
    absl::StrAppend(&out, "last checkpoint: step ", p.last_checkpoint_step(), "\n");
  }
  if (job.evals_size() > 0 || job.base_evals_size() > 0) {
    absl::StrAppend(&out, "evals:\n", EvalsTable(job));
  }
  if (job.has_guard()) absl::StrAppend(&out, "guard: ", job.guard().message(), "\n");
  return out;
}

}  // namespace forge::cli
