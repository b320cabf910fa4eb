// forge schedule create, list, delete, history.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/output.h"
#include "common/proto_time.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

// `t` as wall-clock time in the schedule's zone, e.g. "2026-11-25 02:00 CET"; "-" when unset.
std::string InZone(const google::protobuf::Timestamp& t, const std::string& time_zone) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  absl::TimeZone tz = absl::UTCTimeZone();
  if (!time_zone.empty()) absl::LoadTimeZone(time_zone, &tz);
  return absl::FormatTime("%Y-%m-%d %H:%M %Z", FromProtoTime(t), tz);
}

std::string Outcome(forge::v1::ScheduleRunOutcome o) {
  return EnumLabel(forge::v1::ScheduleRunOutcome_descriptor(), o, "SCHEDULE_RUN_");
}

std::string ScheduleTable(const forge::v1::ListSchedulesResponse& r, absl::Time now) {
  Table t({"ID", "NAME", "CRON", "TZ", "NEXT RUN", "LAST RUN", "OUTCOME"});
  for (const forge::v1::Schedule& s : r.schedules()) {
    const bool ran = s.has_last_run();
    t.AddRow({s.id(), s.name(), s.cron(), s.time_zone(), InZone(s.next_run_time(), s.time_zone()),
              ran ? FormatAgo(s.last_run().slot_time(), now) : "never",
              ran ? Outcome(s.last_run().outcome()) : "-"});
  }
  return t.Render();
}

std::string HistoryTable(const forge::v1::ListScheduleRunsResponse& r, absl::Time now) {
  Table t({"SLOT", "OUTCOME", "JOB", "MESSAGE"});
  for (const forge::v1::ScheduleRun& run : r.runs()) {
    t.AddRow({FormatTimestamp(run.slot_time(), now), Outcome(run.outcome()),
              run.job_id().empty() ? "-" : run.job_id(), OneLine(run.message(), 160)});
  }
  return t.Render();
}

}  // namespace

absl::Status RunScheduleCreate(const CommandEnv& env, const ScheduleCreateOptions& options,
                               OutputFormat format) {
  if (options.cron.empty()) {
    return UsageError("--cron is required: a 5-field cron expression such as \"0 2 * * *\"");
  }
  if (options.spec_path.empty()) return UsageError("--spec is required: the YAML job spec");
  forge::v1::CreateScheduleRequest request;
  request.set_cron(options.cron);
  request.set_time_zone(options.time_zone.empty() ? "UTC" : options.time_zone);
  request.set_name(options.name);
  ASSIGN_OR_RETURN(*request.mutable_spec(), LoadJobSpec(options.spec_path));
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::Schedule schedule;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->schedules().CreateSchedule(context.get(), request, &schedule)));
  if (format == OutputFormat::kJson) {
    return WriteOutput(*env.out, format, schedule, [] { return std::string(); });
  }
  *env.out << schedule.id() << "\n";
  env.out->flush();
  *env.err << "schedule " << schedule.name() << ": \"" << schedule.cron() << "\", "
           << schedule.description() << "\n"
           << "next run: " << InZone(schedule.next_run_time(), schedule.time_zone()) << " ("
           << schedule.time_zone() << ")\n";
  return absl::OkStatus();
}

absl::Status RunScheduleList(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListSchedulesResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->schedules().ListSchedules(
      context.get(), forge::v1::ListSchedulesRequest(), &response)));
  if (format == OutputFormat::kTable && response.schedules().empty()) {
    *env.err << "no schedules; create one with: forge schedule create --cron \"0 2 * * *\" "
                "--spec SPEC.yaml\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return ScheduleTable(response, env.clock->Now()); });
}

absl::Status RunScheduleDelete(const CommandEnv& env, const std::string& schedule_id) {
  if (schedule_id.empty()) return UsageError("ID is empty; forge schedule list shows them");
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::DeleteScheduleRequest request;
  request.set_schedule_id(schedule_id);
  forge::v1::DeleteScheduleResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->schedules().DeleteSchedule(context.get(), request, &response)));
  *env.err << "deleted schedule " << schedule_id << " (jobs it submitted are kept)\n";
  return absl::OkStatus();
}

absl::Status RunScheduleHistory(const CommandEnv& env, const std::string& schedule_id, int limit,
                                OutputFormat format) {
  if (schedule_id.empty()) return UsageError("ID is empty; forge schedule list shows them");
  if (limit < 1 || limit > 10000) {
    return UsageError(absl::StrCat("--limit must be in 1..10000 (got ", limit, ")"));
  }
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListScheduleRunsRequest request;
  request.set_schedule_id(schedule_id);
  request.set_limit(limit);
  forge::v1::ListScheduleRunsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->schedules().ListScheduleRuns(context.get(), request, &response)));
  if (format == OutputFormat::kTable && response.runs().empty()) {
    *env.err << "schedule " << schedule_id << " has not run yet\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return HistoryTable(response, env.clock->Now()); });
}

}  // namespace forge::cli
