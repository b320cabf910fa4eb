// The coordinator's one control thread: liveness checks and scheduling passes.
//
// Every `tick` (and at once when woken) it declares silent workers dead and fails their jobs'
// attempts, times out unacknowledged assignments, and, when something changed, runs the
// scheduling policy over the queue and the fleet and applies the placements. Being the only
// caller of JobManager::Place makes "a device is never given twice" a property of one thread.
//
// Thread safety: Start/Stop/Wake are thread-safe; everything else runs on the loop thread.
#ifndef FORGE_COORDINATOR_CONTROL_LOOP_H_
#define FORGE_COORDINATOR_CONTROL_LOOP_H_

#include <cstdint>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/job_manager.h"
#include "coordinator/scheduler.h"
#include "coordinator/worker_manager.h"

namespace forge::coordinator {

struct ControlLoopOptions {
  absl::Duration tick = absl::Milliseconds(100);
  // Wakes within this time of the last scheduling pass share the next one: a burst of
  // submissions costs one pass over the queue, not one pass each.
  absl::Duration min_pass_interval = absl::Milliseconds(50);
  SchedulerOptions scheduler;
  // Told how long each scheduling pass over a non-empty queue took. May be null.
  std::function<void(absl::Duration took)> on_pass;
};

struct ControlLoopStats {
  uint64_t passes = 0;
  uint64_t placements = 0;
  absl::Duration last_pass = absl::ZeroDuration();
};

class ControlLoop {
 public:
  ControlLoop(JobManager* jobs, WorkerManager* workers, ControlLoopOptions options);
  ~ControlLoop();  // Stop()s

  void Start();
  void Stop();
  // Asks for a scheduling pass soon. Cheap; callable from any thread, including callbacks.
  void Wake();

  // One iteration, for tests that drive the loop by hand (without Start()).
  void RunOnce();

  ControlLoopStats stats() const;

 private:
  void Run();
  void SchedulingPass();

  JobManager* const jobs_;
  WorkerManager* const workers_;
  const ControlLoopOptions options_;

  mutable absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int idle_ticks_ ABSL_GUARDED_BY(mu_) = 0;
  ControlLoopStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_CONTROL_LOOP_H_
