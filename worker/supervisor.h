// TrainerSupervisor: one trainer process (forge-trainer) per assigned rank.
//
// Start() writes the assignment (with the attempt's rank token) into a private directory
// (0700, files 0600) under the work dir and spawns the trainer in its own process group,
// stdout and stderr on one pipe. A reader thread per process forwards whole output lines to
// on_output, then reaps the process and reports its exit (code, or 128 + signal, and its last
// "forge-trainer:" error line) to on_exit. Stop() sends SIGTERM to the process group and
// SIGKILL after stop_grace (a SIGSTOPped trainer ignores SIGTERM until continued; SIGKILL
// does not wait). Trainers die with the agent: PR_SET_PDEATHSIG, and the trainer also exits
// when its parent changes.
//
// Thread safety: thread-safe. Callbacks run on the reader threads, never under mu_.
#ifndef FORGE_WORKER_SUPERVISOR_H_
#define FORGE_WORKER_SUPERVISOR_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::worker {

struct SupervisorOptions {
  std::string trainer_binary;  // path of forge-trainer
  std::string coordinator;     // HOST:PORT handed to trainers
  std::string work_dir;        // ranks live in work_dir/ranks/<job>-a<attempt>-r<rank>/
  // Address this host's trainers listen on for their peers' Gloo connections.
  std::string peer_address = "127.0.0.1";
  absl::Duration stop_grace = absl::Seconds(3);
  // Whole lines ("...\n"), batched per read.
  std::function<void(const forge::v1::RankLogs&)> on_output;
  std::function<void(const forge::v1::RankExited&)> on_exit;
};

class TrainerSupervisor {
 public:
  explicit TrainerSupervisor(SupervisorOptions options);
  // Kills every trainer (SIGKILL) and joins the reader threads.
  ~TrainerSupervisor();

  // Spawns the trainer of `assignment`. A no-op (OK) when that (job, attempt, rank) already
  // runs or ran here: a re-sent assignment never starts a second process.
  absl::Status Start(const forge::v1::Assignment& assignment);
  // Stops the trainers of `job_id` with attempt <= `attempt` (SIGTERM, SIGKILL after grace).
  void Stop(const std::string& job_id, int32_t attempt);

 private:
  using Key = std::tuple<std::string, int32_t, int32_t>;  // (job, attempt, rank)
  struct Child {
    pid_t pid = -1;
    bool reaped = false;
    bool stop_requested = false;
    absl::Time stop_time;
  };

  void Supervise(Key key, pid_t pid, int out_fd);
  void KillerLoop();

  const SupervisorOptions options_;

  mutable absl::Mutex mu_;
  std::map<Key, Child> children_ ABSL_GUARDED_BY(mu_);
  std::map<Key, std::thread> threads_ ABSL_GUARDED_BY(mu_);  // joined once reaped
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread killer_;  // escalates SIGTERM to SIGKILL after stop_grace
};

}  // namespace forge::worker

#endif  // FORGE_WORKER_SUPERVISOR_H_
