#include "coordinator/worker_manager.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/log.h"
#include "common/names.h"
#include "common/proto_time.h"
#include "common/status_macros.h"

namespace forge::coordinator {

using forge::v1::Worker;

namespace {

absl::Status ValidateRegistration(const forge::v1::RegisterWorker& reg) {
  RETURN_IF_ERROR(ValidateIdentifier("register.worker_id", reg.worker_id(), 128));
  if (reg.hostname().size() > 256) {
    return absl::InvalidArgumentError("register.hostname is longer than 256 characters");
  }
  if (reg.version().size() > 128) {
    return absl::InvalidArgumentError("register.version is longer than 128 characters");
  }
  if (reg.devices().empty() || reg.devices_size() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("register.devices must list 1..4096 devices (got ", reg.devices_size(), ")"));
  }
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < reg.devices_size(); ++i) {
    const auto& d = reg.devices(i);
    RETURN_IF_ERROR(ValidateIdentifier(absl::StrCat("register.devices[", i, "].id"),
                                       absl::StrReplaceAll(d.id(), {{":", "."}}), 64));
    if (d.kind() != forge::v1::DEVICE_KIND_CPU && d.kind() != forge::v1::DEVICE_KIND_CUDA) {
      return absl::InvalidArgumentError(
          absl::StrCat("register.devices[", i, "].kind must be cpu or cuda"));
    }
    if (!ids.insert(d.id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("register.devices[", i, "].id \"", d.id(), "\" is listed twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

WorkerManager::WorkerManager(Store* store, Clock* clock, WorkerManagerOptions options)
    : store_(store), clock_(clock), options_(options) {}

absl::Status WorkerManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<Worker> workers, store_->LoadWorkers());
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (Worker& w : workers) {
    Entry e;
    w.clear_ranks();
    // A worker alive at the last stop counts as alive until the reconnect grace from now runs
    // out; one already dead stays dead (not scheduled, not reported lost again) until it
    // reconnects.
    if (w.state() != forge::v1::WORKER_STATE_DEAD) w.set_state(forge::v1::WORKER_STATE_ALIVE);
    e.worker = std::move(w);
    e.last_heartbeat = now;
    e.recovered = true;
    std::string id = e.worker.id();
    workers_[id] = std::move(e);
  }
  FORGE_LOG(INFO) << "event=workers_recovered count=" << workers_.size()
                  << " reconnect_grace=" << absl::FormatDuration(ReconnectGrace());
  return absl::OkStatus();
}

void WorkerManager::StartReconnectWindow() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (auto& [id, e] : workers_) {
    if (e.recovered) e.last_heartbeat = now;
  }
}

absl::StatusOr<std::pair<forge::v1::Registered, uint64_t>> WorkerManager::Register(
    const forge::v1::RegisterWorker& reg, std::shared_ptr<WorkerConnection> conn) {
  RETURN_IF_ERROR(ValidateRegistration(reg));
  std::shared_ptr<WorkerConnection> old;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = workers_[reg.worker_id()];
    const bool was_dead = e.worker.state() == forge::v1::WORKER_STATE_DEAD;
    const absl::Time now = clock_->Now();
    old = std::move(e.conn);
    e.conn = std::move(conn);
    e.generation = generation = next_generation_++;
    e.last_heartbeat = now;
    e.recovered = false;
    e.worker.set_id(reg.worker_id());
    e.worker.set_hostname(reg.hostname());
    e.worker.set_version(reg.version());
    e.worker.set_state(forge::v1::WORKER_STATE_ALIVE);
    *e.worker.mutable_devices() = reg.devices();
    *e.worker.mutable_ranks() = reg.ranks();
    *e.worker.mutable_last_heartbeat() = ToProtoTime(now);
    *e.worker.mutable_registered_time() = ToProtoTime(now);
    PersistLocked(e);
    FORGE_LOG(INFO) << "event=worker_registered worker=" << reg.worker_id()
                    << " host=" << reg.hostname() << " devices=" << reg.devices_size()
                    << " held_ranks=" << reg.ranks_size() << (was_dead ? " was=DEAD" : "");
  }
  if (old) old->Close("replaced by a newer stream from the same worker");
  forge::v1::Registered r;
  r.set_worker_id(reg.worker_id());
  r.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  r.set_grace_ms(absl::ToInt64Milliseconds(options_.grace));
  return std::make_pair(r, generation);
}

void WorkerManager::Heartbeat(const std::string& worker_id, uint64_t generation,
                              const forge::v1::Heartbeat& hb) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.generation != generation) return;
  Entry& e = it->second;
  const absl::Time now = clock_->Now();
  e.last_heartbeat = now;
  *e.worker.mutable_last_heartbeat() = ToProtoTime(now);
  *e.worker.mutable_ranks() = hb.ranks();
  if (e.worker.state() == forge::v1::WORKER_STATE_DEAD) {
    // Declared dead while its stream stayed open (e.g. a long pause): alive again.
    e.worker.set_state(forge::v1::WORKER_STATE_ALIVE);
    FORGE_LOG(INFO) << "event=worker_alive_again worker=" << worker_id;
    PersistLocked(e);
  }
}

void WorkerManager::Disconnected(const std::string& worker_id, uint64_t generation) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.generation != generation) return;
  it->second.conn.reset();
  FORGE_LOG(INFO) << "event=worker_stream_closed worker=" << worker_id;
}

std::vector<std::string> WorkerManager::ExpireSilent() {
  std::vector<std::string> dead;
  std::vector<std::shared_ptr<WorkerConnection>> to_close;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto& [id, e] : workers_) {
      if (e.worker.state() != forge::v1::WORKER_STATE_ALIVE) continue;
      if (now - e.last_heartbeat <= (e.recovered ? ReconnectGrace() : options_.grace)) continue;
      const forge::v1::Worker last_seen = e.worker;
      e.worker.set_state(forge::v1::WORKER_STATE_DEAD);
      e.worker.clear_ranks();
      FORGE_LOG(WARNING) << "event=worker_dead worker=" << id << " silent="
                         << absl::FormatDuration(
                                absl::Trunc(now - e.last_heartbeat, absl::Milliseconds(1)));
      if (e.conn) to_close.push_back(std::move(e.conn));
      const absl::Duration silent = now - e.last_heartbeat;
      PersistLocked(e, [&](WriteBatch* batch) -> std::function<void(absl::Status)> {
        return options_.on_lost ? options_.on_lost(last_seen, silent, batch) : nullptr;
      });
      dead.push_back(id);
    }
  }
  for (auto& c : to_close) c->Close("declared dead: no heartbeat within the grace");
  return dead;
}

bool WorkerManager::Send(const std::string& worker_id, const forge::v1::CoordinatorMessage& msg) {
  std::shared_ptr<WorkerConnection> conn;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end() || !it->second.conn) return false;
    conn = it->second.conn;
  }
  return conn->Send(msg);
}

ClusterView WorkerManager::View() const {
  absl::MutexLock lock(&mu_);
  ClusterView view;
  view.workers.reserve(workers_.size());
  for (const auto& [id, e] : workers_) {
    WorkerView w;
    w.id = id;
    w.alive = e.worker.state() == forge::v1::WORKER_STATE_ALIVE;
    w.devices.reserve(e.worker.devices_size());
    for (const auto& d : e.worker.devices()) w.devices.push_back({d.id(), d.kind(), false});
    view.workers.push_back(std::move(w));
  }
  // Deterministic order for the policy (and for tests).
  std::sort(view.workers.begin(), view.workers.end(),
            [](const WorkerView& a, const WorkerView& b) { return a.id < b.id; });
  return view;
}

std::vector<Worker> WorkerManager::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<Worker> out;
  out.reserve(workers_.size());
  for (const auto& [id, e] : workers_) out.push_back(e.worker);
  std::sort(out.begin(), out.end(),
            [](const Worker& a, const Worker& b) { return a.id() < b.id(); });
  return out;
}

WorkerManager::Counts WorkerManager::counts() const {
  absl::MutexLock lock(&mu_);
  Counts c;
  for (const auto& [id, e] : workers_) {
    if (e.worker.state() == forge::v1::WORKER_STATE_ALIVE)
      ++c.alive;
    else
      ++c.dead;
  }
  return c;
}

void WorkerManager::PersistLocked(
    const Entry& e, const std::function<std::function<void(absl::Status)>(WriteBatch*)>& extra) {
  // The fleet registry is for recovery only: a lost write costs a grace period, not a job,
  // so nobody waits for it.
  WriteBatch batch;
  Worker w = e.worker;
  w.clear_ranks();
  batch.put_workers.push_back(std::move(w));
  std::function<void(absl::Status)> then = extra ? extra(&batch) : nullptr;
  store_->Commit(std::move(batch), [id = e.worker.id(), then = std::move(then)](absl::Status s) {
    if (!s.ok()) FORGE_LOG(ERROR) << "event=worker_commit_failed worker=" << id << " error=" << s;
    if (then) then(s);
  });
}

}  // namespace forge::coordinator
