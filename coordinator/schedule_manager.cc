#include "coordinator/schedule_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/names.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "coordinator/spec_validation.h"

namespace forge::coordinator {
namespace {

using forge::v1::ScheduleRun;

std::string FormatSlot(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// "--cron: minute field ..." from the library's "cron: minute field ...".
absl::Status FlagError(absl::string_view flag, const absl::Status& s) {
  absl::string_view msg = s.message();
  absl::ConsumePrefix(&msg, "cron: ");
  return absl::Status(s.code(), absl::StrCat(flag, ": ", msg));
}

std::string OutcomeName(forge::v1::ScheduleRunOutcome o) {
  switch (o) {
    case forge::v1::SCHEDULE_RUN_SUBMITTED: return "submitted";
    case forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA: return "skipped_no_new_data";
    case forge::v1::SCHEDULE_RUN_FAILED: return "failed";
    default: return "unspecified";
  }
}

}  // namespace

ScheduleManager::ScheduleManager(Store* store, Clock* clock, JobManager* jobs,
                                 const StorageGateway* storage, const ModelCatalog* catalog,
                                 ScheduleManagerOptions options)
    : store_(store), clock_(clock), jobs_(jobs), storage_(storage), catalog_(catalog),
      checks_(storage, catalog), options_(options) {}

ScheduleManager::~ScheduleManager() { Stop(); }

absl::Status ScheduleManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<forge::v1::Schedule> schedules, store_->LoadSchedules());
  std::map<std::string, Entry> loaded;
  for (forge::v1::Schedule& sc : schedules) {
    Entry e;
    absl::StatusOr<CronSchedule> cron = CronSchedule::Parse(sc.cron(), sc.time_zone());
    if (!cron.ok()) {
      // E.g. the time zone left /usr/share/zoneinfo: keep the schedule visible, never run it.
      FORGE_LOG(ERROR) << "event=schedule_unparsable schedule=" << sc.id()
                       << " error=" << cron.status();
    } else {
      e.cron = std::make_shared<const CronSchedule>(*std::move(cron));
    }
    ASSIGN_OR_RETURN(std::vector<ScheduleRun> runs, store_->LoadScheduleRuns(sc.id()));
    for (const ScheduleRun& r : runs) {
      e.last_run = r;
      e.last_slot = FromProtoTime(r.slot_time());
      if (r.outcome() == forge::v1::SCHEDULE_RUN_SUBMITTED) e.last_submitted = r;
    }
    e.schedule = std::move(sc);
    std::string id = e.schedule.id();
    loaded.emplace(std::move(id), std::move(e));
  }
  absl::MutexLock lock(&mu_);
  schedules_ = std::move(loaded);
  FORGE_LOG(INFO) << "event=schedules_recovered count=" << schedules_.size();
  return absl::OkStatus();
}

absl::StatusOr<forge::v1::Schedule> ScheduleManager::Create(const Principal& caller,
                                                 const forge::v1::CreateScheduleRequest& req) {
  if (!caller.is_tenant()) {
    return absl::PermissionDeniedError("schedules belong to a tenant: use a tenant token");
  }
  const std::string name = req.name().empty() ? req.spec().name() : req.name();
  RETURN_IF_ERROR(ValidateIdentifier("--name", name, 128));
  // The expression alone first, so its errors name --cron and a bad zone names --time-zone.
  absl::StatusOr<CronSchedule> expr = CronSchedule::Parse(req.cron(), "UTC");
  if (!expr.ok()) return FlagError("--cron", expr.status());
  const std::string tz = req.time_zone().empty() ? "UTC" : req.time_zone();
  absl::StatusOr<CronSchedule> cron = CronSchedule::Parse(req.cron(), tz);
  if (!cron.ok()) return FlagError("--time-zone", cron.status());

  // The spec is checked now as a submission would be, so a bad spec is refused here rather
  // than at the first slot. (The data may still change before then; each slot checks again.)
  forge::v1::JobSpec filled = req.spec();
  RETURN_IF_ERROR(ValidateAndFillDefaults(&filled));
  RETURN_IF_ERROR(checks_.Check(caller.tenant, filled).status());

  ASSIGN_OR_RETURN(std::string bytes, SecureRandomBytes(8));
  const absl::Time now = clock_->Now();
  forge::v1::Schedule sc;
  sc.set_id(absl::StrCat("s-", HexEncode(bytes)));
  sc.set_tenant(caller.tenant);
  sc.set_name(name);
  sc.set_cron(cron->expression());
  sc.set_time_zone(tz);
  *sc.mutable_spec() = req.spec();  // as given: defaults are filled at each submission
  *sc.mutable_create_time() = ToProtoTime(now);
  sc.set_description(cron->Describe());

  WriteBatch batch;
  batch.put_schedules.push_back(sc);
  if (absl::Status s = store_->CommitSync(std::move(batch)); !s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the schedule could not be stored (", s.message(), "); retry"));
  }
  FORGE_LOG(INFO) << "event=schedule_created schedule=" << sc.id() << " tenant=" << sc.tenant()
                  << " cron=\"" << sc.cron() << "\" tz=" << tz;
  absl::MutexLock lock(&mu_);
  Entry e;
  e.schedule = sc;
  e.cron = std::make_shared<const CronSchedule>(*std::move(cron));
  forge::v1::Schedule view = ViewLocked(e);
  schedules_.emplace(sc.id(), std::move(e));
  return view;
}

forge::v1::Schedule ScheduleManager::ViewLocked(const Entry& e) const {
  forge::v1::Schedule sc = e.schedule;
  if (e.cron != nullptr) *sc.mutable_next_run_time() = ToProtoTime(e.cron->Next(clock_->Now()));
  if (e.last_run.has_value()) *sc.mutable_last_run() = *e.last_run;
  return sc;
}

std::vector<forge::v1::Schedule> ScheduleManager::List(const Principal& caller) const {
  std::vector<forge::v1::Schedule> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : schedules_) {
    if (caller.CanSee(e.schedule.tenant())) out.push_back(ViewLocked(e));
  }
  std::sort(out.begin(), out.end(), [](const forge::v1::Schedule& a, const forge::v1::Schedule& b) {
    return std::tie(a.name(), a.id()) < std::tie(b.name(), b.id());
  });
  return out;
}

absl::Status ScheduleManager::Delete(const Principal& caller, const std::string& schedule_id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = schedules_.find(schedule_id);
    if (it == schedules_.end() || !caller.CanSee(it->second.schedule.tenant())) {
      return absl::NotFoundError(absl::StrCat("schedule ", schedule_id,
                                              " not found (forge schedule list shows yours)"));
    }
  }
  WriteBatch batch;
  batch.delete_schedules.push_back(schedule_id);
  if (absl::Status s = store_->CommitSync(std::move(batch)); !s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the deletion could not be stored (", s.message(), "); retry"));
  }
  absl::MutexLock lock(&mu_);
  schedules_.erase(schedule_id);
  FORGE_LOG(INFO) << "event=schedule_deleted schedule=" << schedule_id;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ScheduleRun>> ScheduleManager::Runs(
    const Principal& caller, const std::string& schedule_id, int limit) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = schedules_.find(schedule_id);
    if (it == schedules_.end() || !caller.CanSee(it->second.schedule.tenant())) {
      return absl::NotFoundError(absl::StrCat("schedule ", schedule_id,
                                              " not found (forge schedule list shows yours)"));
    }
  }
  ASSIGN_OR_RETURN(std::vector<ScheduleRun> runs, store_->LoadScheduleRuns(schedule_id, limit));
  std::reverse(runs.begin(), runs.end());
  return runs;
}

void ScheduleManager::NoteRunLocked(Entry& e, const ScheduleRun& run) {
  const absl::Time slot = FromProtoTime(run.slot_time());
  if (slot < e.last_slot) return;
  e.last_slot = slot;
  e.last_run = run;
  if (run.outcome() == forge::v1::SCHEDULE_RUN_SUBMITTED) e.last_submitted = run;
}

void ScheduleManager::Tick() {
  struct Due {
    forge::v1::Schedule schedule;
    absl::Time slot;
    std::optional<ScheduleRun> last_submitted;
  };
  std::vector<Due> due;
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : schedules_) {
      if (e.cron == nullptr) continue;
      const absl::Time slot = e.cron->Previous(now);
      if (slot <= FromProtoTime(e.schedule.create_time()) || slot <= e.last_slot) continue;
      if (!in_flight_.insert({id, absl::ToUnixNanos(slot)}).second) continue;  // deciding
      due.push_back({e.schedule, slot, e.last_submitted});
    }
  }
  for (Due& d : due) {
    std::optional<ScheduleRun> run = Decide(d.schedule, d.slot, d.last_submitted);
    absl::MutexLock lock(&mu_);
    in_flight_.erase({d.schedule.id(), absl::ToUnixNanos(d.slot)});
    auto it = schedules_.find(d.schedule.id());
    if (run.has_value() && it != schedules_.end()) NoteRunLocked(it->second, *run);
  }
}

std::optional<ScheduleRun> ScheduleManager::Decide(
    const forge::v1::Schedule& schedule, absl::Time slot,
    const std::optional<ScheduleRun>& last_submitted) {
  const std::string& tenant = schedule.tenant();
  ScheduleRun run;
  run.set_schedule_id(schedule.id());
  *run.mutable_slot_time() = ToProtoTime(slot);
  *run.mutable_decide_time() = ToProtoTime(clock_->Now());

  // Commits `run` alone (a skip or a refusal). The winner's row when another decider got
  // there first; nullopt when the store fails (the slot is tried again next tick).
  auto record = [&](forge::v1::ScheduleRunOutcome outcome,
                    std::string message) -> std::optional<ScheduleRun> {
    run.set_outcome(outcome);
    run.set_message(std::move(message));
    WriteBatch batch;
    batch.insert_schedule_runs.push_back(run);
    std::function<void(absl::Status)> then =
        options_.on_skipped ? options_.on_skipped(schedule, run, &batch) : nullptr;
    absl::Status s = store_->CommitSync(std::move(batch));
    if (then) then(s);
    if (absl::IsAlreadyExists(s)) return std::nullopt;
    if (!s.ok()) {
      FORGE_LOG(ERROR) << "event=schedule_run_commit_failed schedule=" << schedule.id()
                       << " slot=" << FormatSlot(slot) << " error=" << s;
      return std::nullopt;
    }
    FORGE_LOG(INFO) << "event=schedule_run schedule=" << schedule.id()
                    << " slot=" << FormatSlot(slot) << " outcome=" << OutcomeName(outcome)
                    << " message=\"" << run.message() << "\"";
    return run;
  };
  // Another decider (another process on this database) recorded the slot: its row.
  auto winner = [&]() -> std::optional<ScheduleRun> {
    absl::StatusOr<std::vector<ScheduleRun>> runs = store_->LoadScheduleRuns(schedule.id());
    if (runs.ok()) {
      for (const ScheduleRun& r : *runs) {
        if (FromProtoTime(r.slot_time()) == slot) return r;
      }
    }
    return std::nullopt;
  };

  // (1) What data the slot would train on.
  auto& versions = *run.mutable_dataset_versions();
  for (const auto& m : schedule.spec().data().mixture()) {
    absl::StatusOr<forge::v1::DatasetInfo> d = storage_->GetDataset(tenant, m.dataset());
    if (!d.ok()) {
      auto r = record(forge::v1::SCHEDULE_RUN_FAILED,
                      absl::StrCat("data.mixture dataset ", m.dataset(), ": ",
                                   d.status().message()));
      return r.has_value() ? r : winner();
    }
    versions[m.dataset()] = d->manifest_sha256();
  }
  if (last_submitted.has_value() && !versions.empty()) {
    std::map<std::string, std::string> now(versions.begin(), versions.end());
    std::map<std::string, std::string> then(last_submitted->dataset_versions().begin(),
                                            last_submitted->dataset_versions().end());
    if (now == then) {
      std::vector<std::string> names;
      for (const auto& [name, sha] : now) {
        names.push_back(absl::StrCat(name, "@", sha.substr(0, 12)));
      }
      auto r = record(forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA,
                      absl::StrCat("no new data since the run of ",
                                   FormatSlot(FromProtoTime(last_submitted->slot_time())),
                                   " (datasets unchanged: ", absl::StrJoin(names, ", "), ")"));
      return r.has_value() ? r : winner();
    }
  }

  // (2) The job: warm-started from the channel's promoted checkpoint when there is one.
  forge::v1::SubmitJobRequest request;
  forge::v1::JobSpec& spec = *request.mutable_spec();
  spec = schedule.spec();
  if (catalog_ != nullptr && !spec.promote().channel().empty()) {
    absl::StatusOr<forge::v1::ChannelEntry> ch =
        catalog_->Channel(tenant, spec.promote().channel());
    if (ch.ok() && !ch->checkpoint().empty()) {
      spec.mutable_base()->Clear();
      spec.mutable_base()->set_checkpoint(ch->checkpoint());
      spec.clear_model();  // the checkpoint carries the shape
      run.set_base_checkpoint(ch->checkpoint());
    }
  }
  absl::StatusOr<CheckedSubmission> checked = checks_.Check(tenant, spec);
  if (!checked.ok()) {
    auto r = record(forge::v1::SCHEDULE_RUN_FAILED, std::string(checked.status().message()));
    return r.has_value() ? r : winner();
  }
  if (checked->base.has_value() && run.base_checkpoint().empty()) {
    run.set_base_checkpoint(checked->base->checkpoint);
  }
  Principal as_tenant;
  as_tenant.kind = forge::v1::TOKEN_KIND_TENANT;
  as_tenant.tenant = tenant;
  as_tenant.token_id = absl::StrCat("schedule:", schedule.id());
  run.set_outcome(forge::v1::SCHEDULE_RUN_SUBMITTED);
  absl::Notification submitted;
  absl::StatusOr<forge::v1::SubmitJobResponse> result;
  ScheduleRun committed;
  jobs_->Submit(
      as_tenant, std::move(request),
      [&](absl::StatusOr<forge::v1::SubmitJobResponse> r) {
        result = std::move(r);
        submitted.Notify();
      },
      checked->base.has_value() ? &*checked->base : nullptr, std::move(checked->contamination),
      [&](const forge::v1::Job& job, WriteBatch* batch) {
        // The run row commits with the job: both or neither.
        run.set_job_id(job.id());
        run.set_message(absl::StrCat("submitted job ", job.id()));
        committed = run;
        batch->insert_schedule_runs.push_back(run);
      });
  submitted.WaitForNotification();
  if (result.ok()) {
    FORGE_LOG(INFO) << "event=schedule_run schedule=" << schedule.id()
                    << " slot=" << FormatSlot(slot) << " outcome=submitted job="
                    << result->job().id();
    return committed;
  }
  if (absl::IsAlreadyExists(result.status())) return winner();  // the job was not stored
  if (absl::IsUnavailable(result.status())) {
    FORGE_LOG(ERROR) << "event=schedule_submit_failed schedule=" << schedule.id()
                     << " slot=" << FormatSlot(slot) << " error=" << result.status();
    return std::nullopt;  // tried again next tick
  }
  run.set_job_id("");
  auto r = record(forge::v1::SCHEDULE_RUN_FAILED, std::string(result.status().message()));
  return r.has_value() ? r : winner();
}

void ScheduleManager::Start() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = false;
  }
  ticker_ = std::thread([this] { TickerLoop(); });
}

void ScheduleManager::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

void ScheduleManager::TickerLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick_interval);
      if (stopping_) return;
    }
    Tick();
  }
}

}  // namespace forge::coordinator
