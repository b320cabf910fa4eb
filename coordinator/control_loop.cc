#include "coordinator/control_loop.h"

#include <chrono>

#include "common/log.h"

namespace forge::coordinator {

ControlLoop::ControlLoop(JobManager* jobs, WorkerManager* workers, ControlLoopOptions options)
    : jobs_(jobs), workers_(workers), options_(options) {}

ControlLoop::~ControlLoop() { Stop(); }

void ControlLoop::Start() { thread_ = std::thread([this] { Run(); }); }

void ControlLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ControlLoop::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void ControlLoop::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&ready), options_.tick);
      if (stop_) return;
      // Let wakes coalesce: not another pass sooner than min_pass_interval after the last.
      mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.min_pass_interval);
      if (stop_) return;
    }
    RunOnce();
  }
}

void ControlLoop::RunOnce() {
  for (const std::string& id : workers_->ExpireSilent()) {
    jobs_->OnWorkerLost(id, "no heartbeat within the grace");
  }
  jobs_->CheckAckTimeouts();
  jobs_->CheckStepTimeouts();
  bool pass;
  {
    absl::MutexLock lock(&mu_);
    // A pass at least every 10 ticks even unwoken: wait times (starvation limit) change.
    pass = wake_ || ++idle_ticks_ >= 10;
    wake_ = false;
    if (pass) idle_ticks_ = 0;
  }
  if (pass) SchedulingPass();
}

void ControlLoop::SchedulingPass() {
  const auto start = std::chrono::steady_clock::now();
  std::vector<PendingJob> queue = jobs_->PendingQueue();
  if (queue.empty()) return;
  ClusterView cluster = workers_->View();
  const auto busy = jobs_->BusyDevices();
  for (WorkerView& w : cluster.workers) {
    for (DeviceSlot& d : w.devices) d.busy = busy.contains({w.id, d.id});
  }
  ScheduleResult result = Schedule(queue, cluster, options_.scheduler);
  uint64_t placed = 0;
  for (const JobPlacement& p : result.placed) {
    if (jobs_->Place(p)) ++placed;
  }
  jobs_->SetWaiting(result.waiting);
  const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
  if (options_.on_pass) options_.on_pass(took);
  absl::MutexLock lock(&mu_);
  ++stats_.passes;
  stats_.placements += placed;
  stats_.last_pass = took;
}

ControlLoopStats ControlLoop::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace forge::coordinator
