// The ranks a worker holds, and the rules for accepting and stopping them.
//
// A rank is held from an accepted Assignment until a StopRanks covers it. Held ranks survive
// reconnections (they are re-announced in RegisterWorker) but not a restart of the process.
// Phase: "assigned" on accept, "starting" once its trainer process is spawned, "exited"
// when that process ended (until the coordinator stops the rank).
//
// Thread-safe: every method takes mu_.
#ifndef FORGE_WORKER_RANK_TABLE_H_
#define FORGE_WORKER_RANK_TABLE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::worker {

inline constexpr absl::string_view kPhaseAssigned = "assigned";
inline constexpr absl::string_view kPhaseStarting = "starting";
inline constexpr absl::string_view kPhaseExited = "exited";

class RankTable {
 public:
  explicit RankTable(std::vector<forge::v1::Device> devices);

  RankTable(const RankTable&) = delete;
  RankTable& operator=(const RankTable&) = delete;

  // Holds the assigned rank in phase "assigned", or says why not (the message goes back to
  // the coordinator in the AssignmentAck):
  //   INVALID_ARGUMENT     empty job id, negative rank, rank >= world_size, a device that is
  //                        not on this worker, or a device whose kind differs from the job's
  //                        resources.device (unspecified counts as cpu, as in JobSpec);
  //   FAILED_PRECONDITION  a stale attempt (the job is held here at a newer attempt), the
  //                        device is busy with another rank, or the rank is held elsewhere.
  // Re-sending a held (job, attempt, rank, device) is accepted again. Accepting a newer
  // attempt of a held job drops that job's older ranks; they are appended to `superseded`.
  absl::Status Accept(const forge::v1::Assignment& assignment,
                      std::vector<forge::v1::RankInfo>* superseded);

  // Drops the ranks of `job_id` whose attempt is <= `attempt`, and returns them.
  std::vector<forge::v1::RankInfo> Stop(absl::string_view job_id, int32_t attempt);

  // Sets the phase of a held rank (and its exit status when phase is "exited"); false when
  // the rank is not held at that attempt.
  bool SetPhase(absl::string_view job_id, int32_t attempt, int32_t rank, absl::string_view phase,
                int32_t exit_code = 0, absl::string_view exit_reason = "");

  // Every held rank, ordered by (job id, rank).
  std::vector<forge::v1::RankInfo> Snapshot() const;

  // Constant after construction.
  const std::vector<forge::v1::Device>& devices() const { return devices_; }

 private:
  using Key = std::pair<std::string, int32_t>;  // (job id, rank)

  const forge::v1::Device* FindDevice(absl::string_view id) const;

  // Constant after construction.
  const std::vector<forge::v1::Device> devices_;

  mutable absl::Mutex mu_;
  std::map<Key, forge::v1::RankInfo> ranks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forge::worker

#endif  // FORGE_WORKER_RANK_TABLE_H_
