// An outside check of a Schedule() result against the contract in scheduler.h, shared by the
// scheduler's tests and its benchmark.
#ifndef FORGE_COORDINATOR_SCHEDULER_CHECK_H_
#define FORGE_COORDINATOR_SCHEDULER_CHECK_H_

#include <string>
#include <vector>

#include "coordinator/scheduler.h"

namespace forge::coordinator {

// Every promise of the contract that can be checked from the outside (gang all-or-nothing,
// no device twice, alive free devices of the right kind, ranks contiguous per worker, every
// job reported exactly once with a reason, unschedulable exactly when the alive fleet is too
// small, nothing that fits left waiting except behind a starvation hold, no backfill past a
// starving job). Returns the violations, one line each; empty when the result is sound.
std::vector<std::string> ScheduleViolations(const std::vector<PendingJob>& queue,
                                            const ClusterView& cluster,
                                            const SchedulerOptions& options,
                                            const ScheduleResult& result);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SCHEDULER_CHECK_H_
