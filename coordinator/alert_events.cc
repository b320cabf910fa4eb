#include "coordinator/alert_events.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/guard_spec.h"
#include "common/proto_time.h"
#include "coordinator/job_state.h"

namespace forge::coordinator {
namespace {

std::string Rfc3339(const google::protobuf::Timestamp& ts) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", FromProtoTime(ts), absl::UTCTimeZone());
}

nlohmann::json JobJson(const forge::v1::Job& job) {
  nlohmann::json j = {
      {"id", job.id()},
      {"tenant", job.tenant()},
      {"name", job.spec().name()},
      {"state", absl::AsciiStrToLower(JobStateName(job.state()))},
      {"attempt", job.attempt()},
      {"restarts", job.restarts()},
      {"max_restarts", job.spec().max_restarts()},
      {"step", job.progress().step()},
      {"total_steps", job.spec().train().steps()},
      {"message", job.message()},
      {"update_time", Rfc3339(job.update_time())},
  };
  if (!job.attempts().empty()) {
    const auto& a = job.attempts(job.attempts_size() - 1);
    j["last_attempt"] = {{"attempt", a.attempt()},
                         {"end_reason", a.end_reason()},
                         {"lost_steps", a.lost_steps()},
                         {"last_step", a.last_step()}};
  }
  return j;
}

std::string Who(const forge::v1::Job& job) {
  return absl::StrCat("job ", job.id(), " (", job.tenant(), "/", job.spec().name(), ")");
}

}  // namespace

std::optional<AlertEvent> AlertForTransition(const forge::v1::Job& job, forge::v1::JobState from) {
  // A job failing again while it recovers uses one more restart: that is news too.
  if (from == job.state() && job.state() != forge::v1::JOB_STATE_RESTARTING) return std::nullopt;
  AlertEvent e;
  switch (job.state()) {
    case forge::v1::JOB_STATE_FAILED:
      e.type = "job_failed";
      e.severity = "critical";
      e.summary =
          absl::StrCat(Who(job), " failed at step ", job.progress().step(), ": ", job.message());
      break;
    case forge::v1::JOB_STATE_RESTARTING:
      e.type = "job_restarted";
      e.severity = "warning";
      e.summary = absl::StrCat(Who(job), " is restarting (restart ", job.restarts(), " of ",
                               job.spec().max_restarts(), "): ", job.message());
      break;
    case forge::v1::JOB_STATE_SUCCEEDED:
      if (!job.spec().has_guard() || job.guard().passed()) return std::nullopt;
      e.type = "guard_blocked";
      e.severity = "warning";
      e.summary = absl::StrCat(Who(job), " finished but its guard blocked the promotion",
                               job.spec().promote().channel().empty()
                                   ? ""
                                   : absl::StrCat(" to ", job.spec().promote().channel()),
                               ": ", job.guard().message());
      e.details["guard"] = {{"suite", job.guard().suite()},
                            {"suites", GuardedSuites(job.spec().guard())},
                            {"base_loss", job.guard().base_loss()},
                            {"loss", job.guard().loss()},
                            {"regression", job.guard().regression()},
                            {"max_regression", job.guard().max_regression()},
                            {"channel", job.spec().promote().channel()},
                            {"final_checkpoint", job.final_checkpoint()}};
      break;
    default:
      return std::nullopt;
  }
  e.details["job"] = JobJson(job);
  return e;
}

AlertEvent WorkerLostAlert(const forge::v1::Worker& worker, absl::Duration silent) {
  std::set<std::string> jobs;
  for (const auto& r : worker.ranks()) jobs.insert(r.job_id());
  AlertEvent e;
  e.type = "worker_lost";
  e.severity = jobs.empty() ? "warning" : "critical";
  e.summary = absl::StrCat(
      "worker ", worker.id(), " (", worker.hostname(), ") lost: no heartbeat for ",
      absl::StrFormat("%.1f", absl::ToDoubleSeconds(silent)), " s",
      jobs.empty() ? "; it ran no ranks"
                   : absl::StrCat("; the ranks it ran were stopped, their jobs restart or fail: ",
                                  absl::StrJoin(jobs, ", ")));
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : worker.devices()) devices.push_back(d.id());
  e.details["worker"] = {
      {"id", worker.id()},
      {"hostname", worker.hostname()},
      {"last_heartbeat", Rfc3339(worker.last_heartbeat())},
      {"silent_seconds", absl::ToDoubleSeconds(silent)},
      {"devices", devices},
      {"jobs", nlohmann::json(std::vector<std::string>(jobs.begin(), jobs.end()))}};
  return e;
}

AlertEvent ScheduleSkippedAlert(const forge::v1::Schedule& schedule,
                                const forge::v1::ScheduleRun& run) {
  const bool refused = run.outcome() == forge::v1::SCHEDULE_RUN_FAILED;
  AlertEvent e;
  e.type = "schedule_skipped";
  e.severity = refused ? "warning" : "info";
  e.summary =
      absl::StrCat("schedule ", schedule.id(), " (", schedule.tenant(), "/", schedule.name(),
                   ") skipped its ", Rfc3339(run.slot_time()), " slot: ", run.message());
  e.details["schedule"] = {{"id", schedule.id()},
                           {"tenant", schedule.tenant()},
                           {"name", schedule.name()},
                           {"slot_time", Rfc3339(run.slot_time())},
                           {"reason", refused ? "submission_refused" : "no_new_data"},
                           {"message", run.message()}};
  return e;
}

AlertRecord ToRecord(const AlertEvent& event) {
  nlohmann::json j = {{"type", event.type},
                      {"severity", event.severity},
                      {"summary", event.summary},
                      {"details", event.details},
                      {"time_ns", absl::ToUnixNanos(event.time)}};
  return AlertRecord{event.id, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
}

absl::StatusOr<AlertEvent> FromRecord(const AlertRecord& record) {
  nlohmann::json j = nlohmann::json::parse(record.body, nullptr, false);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string() || !j.contains("time_ns") ||
      !j["time_ns"].is_number_integer()) {
    return absl::DataLossError(
        absl::StrCat("alert outbox row ", record.id, " is not an alert this coordinator wrote"));
  }
  AlertEvent e;
  e.id = record.id;
  e.type = j["type"].get<std::string>();
  e.severity = j.value("severity", "");
  e.summary = j.value("summary", "");
  e.details = j.contains("details") ? j["details"] : nlohmann::json::object();
  e.time = absl::FromUnixNanos(j["time_ns"].get<int64_t>());
  return e;
}

}  // namespace forge::coordinator
