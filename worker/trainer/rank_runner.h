// One training rank of a job attempt, from assignment to exit, readable top to bottom:
//
//   fetch the datasets (verified) -> build the trainer -> rendezvous (Gloo, through the
//   coordinator) -> resume from the attempt's checkpoint -> for each step: train, report;
//   at checkpoint steps: check replicas agree, snapshot (the only blocking part) and hand the
//   snapshot to a background thread that writes and uploads it -> final checkpoint, held-out
//   eval, FinishJob (rank 0).
//
// Exit codes (the worker forwards them; the coordinator decides):
//   0 done; 1 failed (restartable: a peer vanished, I/O, the coordinator gone);
//   2 the job cannot run as specified (not retried); 3 replicas diverged (not retried);
//   4 told to stop (the attempt is over).
#ifndef FORGE_WORKER_TRAINER_RANK_RUNNER_H_
#define FORGE_WORKER_TRAINER_RANK_RUNNER_H_

#include <string>

#include "absl/status/status.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::trainer {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitInvalid = 2;
inline constexpr int kExitDiverged = 3;
inline constexpr int kExitStopped = 4;

struct RankOptions {
  std::string coordinator;
  forge::v1::Assignment assignment;
  std::string rank_dir;  // private: data cache, checkpoint staging
  int parent_pid = 0;    // exit when the worker agent is gone
  int threads = 1;
  int64_t eval_tokens = 65536;  // held-out tokens per suite per eval
  std::string interface_address = "127.0.0.1";  // where Gloo listens for peers
};

// Runs the rank; returns the exit code (and prints "forge-trainer: <why>" on failure).
int RunRank(const RankOptions& options);

}  // namespace forge::trainer

#endif  // FORGE_WORKER_TRAINER_RANK_RUNNER_H_
