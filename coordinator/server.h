// The coordinator process: Store, managers, control loop and the gRPC server, wired together.
#ifndef FORGE_COORDINATOR_SERVER_H_
#define FORGE_COORDINATOR_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/alerts.h"

namespace forge::coordinator {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:7700";  // HOST:PORT; port 0 picks a free one
  std::string state_dir;                   // SQLite database and admin.token live here
  std::string storage_root;                // shared storage for checkpoints and datasets
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration heartbeat_grace = absl::Seconds(3);
  // After start-up, workers known alive get this long to reconnect (heartbeat_grace if longer).
  absl::Duration reconnect_grace = absl::Seconds(8);
  absl::Duration ack_timeout = absl::Seconds(30);
  // A rank silent this long fails its attempt; collectives time out after the other.
  absl::Duration step_timeout = absl::Seconds(120);
  absl::Duration collective_timeout = absl::Seconds(60);
  bool synchronous_full = true;  // SQLite synchronous=FULL (durable acks)
  int max_message_bytes = 4 << 20;
  // How often schedules look for a due slot.
  absl::Duration schedule_tick_interval = absl::Seconds(1);
  // HOST:PORT of the dashboard, /metrics and /healthz (port 0 picks a free one); empty = off.
  std::string http_listen;
  // Where people reach the dashboard (e.g. "https://forge.example.com" behind a proxy), for
  // links in alerts; empty = "http://" + the bound --http address.
  std::string dashboard_url;
  // Webhooks told of failed and restarted jobs, lost workers, blocked promotions and skipped
  // schedule slots; no URLs = none.
  AlertOptions alerts;
  Clock* clock = RealClock();
};

class Coordinator {
 public:
  // Opens the state, recovers jobs/workers/tokens, writes STATE_DIR/admin.token on first
  // start, starts the control loop and serves on `listen`.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(const CoordinatorOptions& options);
  ~Coordinator();  // Shutdown()s

  int port() const;
  // The bound --http port; 0 when the dashboard is off.
  int http_port() const;
  // Stops accepting calls, ends open streams, stops the loop and flushes the store.
  // Idempotent; thread-safe.
  void Shutdown();
  // Blocks until Shutdown() has been called and the server stopped.
  void Wait();

 private:
  class Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SERVER_H_
