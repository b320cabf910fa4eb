// Gang scheduling policy: a pure function from (queue, cluster view) to placements.
//
// No I/O, no clock, no locks: the coordinator builds the inputs under its own lock, calls
// Schedule(), and applies the result. Tests and benchmarks call it directly.
//
// Contract:
//  - Gang: a job is placed with all `ranks` devices at once, or not at all.
//  - A device is never given twice: only free devices of alive workers are used, and each
//    at most once per call.
//  - Order: jobs are considered by priority (higher first), then submit_seq (lower first).
//    A job that does not fit is skipped and later jobs may use the free devices (backfill),
//    except that once a blocked job has waited at least `starvation_limit`, no later job of
//    the same device kind is placed in this call (the devices are kept for it as they free).
//  - Placement: a job that fits on one worker goes to the alive worker with the fewest free
//    devices of its kind that still holds it (best fit: keeps big holes for big jobs); a job
//    that needs several workers takes workers with the most free devices first and the
//    remainder from the best-fitting worker (fewest workers; e.g. free 8, 8, 2 and 10 ranks
//    take 8 + 2 and keep a whole 8 free). Ranks are numbered in the order workers were
//    chosen: rank 0 on the first, devices in each worker's device order.
//  - Every job not placed gets a reason for people, and `unschedulable` when it cannot fit
//    even on an empty fleet of the alive workers (e.g. "needs 64 cuda devices; alive workers
//    have 16 in all").
#ifndef FORGE_COORDINATOR_SCHEDULER_H_
#define FORGE_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "forge/v1/job.pb.h"

namespace forge::coordinator {

struct PendingJob {
  std::string job_id;
  int32_t priority = 0;
  int64_t submit_seq = 0;  // unique; lower = submitted earlier
  int32_t ranks = 1;
  forge::v1::DeviceKind device_kind = forge::v1::DEVICE_KIND_CPU;
  absl::Duration waited = absl::ZeroDuration();  // time spent queued so far
};

struct DeviceSlot {
  std::string id;  // "cpu:0"
  forge::v1::DeviceKind kind = forge::v1::DEVICE_KIND_CPU;
  bool busy = false;  // held by a running job
};

struct WorkerView {
  std::string id;
  bool alive = false;
  std::vector<DeviceSlot> devices;  // in the worker's own order
};

struct ClusterView {
  std::vector<WorkerView> workers;
};

struct RankSlot {
  std::string worker_id;
  std::string device_id;
};

struct JobPlacement {
  std::string job_id;
  std::vector<RankSlot> ranks;  // ranks[i] is rank i
};

struct WaitingJob {
  std::string job_id;
  std::string reason;
  bool unschedulable = false;
};

struct ScheduleResult {
  std::vector<JobPlacement> placed;   // in the order they were decided
  std::vector<WaitingJob> waiting;    // every job of the queue not placed
};

struct SchedulerOptions {
  absl::Duration starvation_limit = absl::Minutes(10);
};

ScheduleResult Schedule(const std::vector<PendingJob>& queue, const ClusterView& cluster,
                        const SchedulerOptions& options = {});

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SCHEDULER_H_
