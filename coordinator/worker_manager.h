// The fleet: registered workers, their devices, their streams and their liveness.
//
// A worker is ALIVE while its heartbeats arrive within the grace and DEAD after; a dead
// worker's devices are not scheduled and its jobs restart (the control loop tells the
// JobManager). Reconnecting makes it ALIVE again. The set of known workers is written to the
// Store so a restarted coordinator knows its fleet: workers alive at the stop are given the
// reconnect grace from start-up to reconnect before they are declared dead (longer than the
// heartbeat grace: a worker's reconnect backoff grows while the coordinator is down); dead
// ones stay dead.
//
// Thread safety: thread-safe (mu_). Connection::Send may be called with mu_ held: it only
// queues a message and never calls back into the manager.
#ifndef FORGE_COORDINATOR_WORKER_MANAGER_H_
#define FORGE_COORDINATOR_WORKER_MANAGER_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::coordinator {

// One worker stream, seen from the managers. Implemented by the gRPC reactor.
class WorkerConnection {
 public:
  virtual ~WorkerConnection() = default;
  // Queues `msg` for the worker. Returns false if the stream is closing. Never blocks.
  virtual bool Send(const forge::v1::CoordinatorMessage& msg) = 0;
  // Ends the stream (e.g. superseded by a newer one). Idempotent.
  virtual void Close(absl::string_view why) = 0;
};

struct WorkerManagerOptions {
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration grace = absl::Seconds(3);
  // Told of each worker ExpireSilent declares dead (the worker as it was last seen, ranks
  // included, and how long it was silent) as the batch that records it dead is built, under
  // mu_: it may add rows to commit with it (an alert's outbox row), must be quick, and must
  // not call the WorkerManager. Returns what to run once that batch is committed (with its
  // status), or nullptr. May be null.
  std::function<std::function<void(absl::Status)>(const forge::v1::Worker& worker,
                                                  absl::Duration silent, WriteBatch* batch)>
      on_lost;
  // How long a worker that was alive when the coordinator last stopped has, from start-up, to
  // reconnect before it is declared dead (never less than `grace`). Workers retry with a
  // backoff that reaches 5 s (worker/agent.h max_backoff) during a long outage, so a shorter
  // allowance would declare live workers dead, and restart their jobs, after a restart.
  absl::Duration reconnect_grace = absl::Seconds(8);
};

class WorkerManager {
 public:
  WorkerManager(Store* store, Clock* clock, WorkerManagerOptions options);

  // Loads the known fleet; each worker that was alive counts as alive until the reconnect
  // grace from now has passed without it reconnecting; a dead one stays dead until it
  // reconnects.
  absl::Status Recover();
  // Starts the reconnect grace of recovered workers that have not reconnected yet again from
  // now: called once the server listens, so a slow recovery of the rest of the state does not
  // use up their time to reconnect.
  void StartReconnectWindow();

  // Validates a registration and makes `conn` the worker's stream (closing any older one).
  // Returns the Registered answer and the stream's generation (for later calls).
  absl::StatusOr<std::pair<forge::v1::Registered, uint64_t>> Register(
      const forge::v1::RegisterWorker& reg, std::shared_ptr<WorkerConnection> conn);
  // Records a heartbeat from stream `generation`; ignored if a newer stream replaced it.
  void Heartbeat(const std::string& worker_id, uint64_t generation, const forge::v1::Heartbeat& hb);
  // The stream ended. The worker stays alive until its grace runs out (it may reconnect).
  void Disconnected(const std::string& worker_id, uint64_t generation);

  // Marks alive workers silent past the grace (the reconnect grace for recovered ones not yet
  // back) as DEAD and returns their ids.
  std::vector<std::string> ExpireSilent();

  bool Send(const std::string& worker_id, const forge::v1::CoordinatorMessage& msg);

  // Scheduling view: every known worker with alive flag and devices (busy flags unset).
  ClusterView View() const;
  std::vector<forge::v1::Worker> List() const;

  struct Counts {
    int alive = 0;
    int dead = 0;
  };
  Counts counts() const;

 private:
  struct Entry {
    forge::v1::Worker worker;
    absl::Time last_heartbeat;
    // Loaded by Recover and not registered since: silence up to the reconnect grace (not the
    // heartbeat grace) is allowed after last_heartbeat.
    bool recovered = false;
    std::shared_ptr<WorkerConnection> conn;
    uint64_t generation = 0;
  };
  // What a recovered worker gets to reconnect: the longer of the two graces.
  absl::Duration ReconnectGrace() const {
    return std::max(options_.grace, options_.reconnect_grace);
  }
  // Commits the worker's row, with what `extra` adds to the batch; `extra` returns what to run
  // after the commit (or nullptr).
  void PersistLocked(const Entry& e,
                     const std::function<std::function<void(absl::Status)>(WriteBatch*)>& extra =
                         nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  Clock* const clock_;
  const WorkerManagerOptions options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_WORKER_MANAGER_H_
