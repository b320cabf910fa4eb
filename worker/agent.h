// The worker agent: holds the one long-lived WorkerService.Connect stream to the coordinator.
//
// One session = one stream: RegisterWorker (with the ranks still held) -> Registered ->
// a Heartbeat{seq, ranks} every heartbeat_interval, AssignmentAck for every Assignment,
// StopRanks handled as they come. A session ends when the stream breaks, the coordinator ends
// it, no message (heartbeat acks included) arrives for grace_ms, or Registered does not come
// within register_timeout. The agent then reconnects after an exponential backoff with full
// jitter (reset by every successful registration).
//
// A refused token (UNAUTHENTICATED / PERMISSION_DENIED) is logged as an error and retried
// every max_backoff rather than ending Run(): the token is fetched from `token_source` before
// every connection attempt, so an operator who writes a valid token into the worker's token
// file fixes the worker without restarting it.
//
// Concurrency: Run() is the session thread (it connects and reads the stream); each session
// has one heartbeat thread that writes heartbeats and watches for a silent coordinator.
// Writes to a stream are serialized by Session::write_mu. Agent state is guarded by mu_; the
// rank table has its own lock. Shutdown() may be called from any thread.
#ifndef FORGE_WORKER_AGENT_H_
#define FORGE_WORKER_AGENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forge/v1/coordinator.grpc.pb.h"
#include "worker/backoff.h"
#include "worker/rank_table.h"
#include "worker/supervisor.h"

namespace forge::worker {

struct WorkerAgentOptions {
  std::string coordinator;  // "host:port"
  // Returns the worker token; called before every connection attempt. The token is sent as
  // `authorization: Bearer <token>` and never logged. An error is logged and retried like a
  // refused token.
  std::function<absl::StatusOr<std::string>()> token_source;
  std::string worker_id;
  std::string hostname;
  std::vector<forge::v1::Device> devices;  // at least one
  std::string version;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // How long to wait for Registered after RegisterWorker before reconnecting.
  absl::Duration register_timeout = absl::Seconds(10);
  // Null = plaintext (insecure) channel.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Seed of the backoff jitter; 0 = from std::random_device.
  uint64_t seed = 0;
  // forge-trainer, spawned once per accepted rank. Empty = hold ranks without training
  // (unit tests of the protocol).
  std::string trainer_binary;
  std::string work_dir;  // trainers' private directories and data caches live here
  std::string peer_address = "127.0.0.1";  // where trainers accept their peers' connections
  // Trainer output waiting for a connection is kept up to this many bytes (oldest dropped).
  size_t max_buffered_log_bytes = 4 << 20;
};

class WorkerAgent {
 public:
  explicit WorkerAgent(WorkerAgentOptions options);
  // REQUIRES: Run() has returned, or was never called.
  ~WorkerAgent();

  WorkerAgent(const WorkerAgent&) = delete;
  WorkerAgent& operator=(const WorkerAgent&) = delete;

  // Connects, serves and reconnects until Shutdown(). Returns OK after Shutdown(), or
  // INVALID_ARGUMENT at once for unusable options. Call once.
  absl::Status Run();

  // Ends Run() promptly: cancels the live stream and any backoff wait. Thread-safe;
  // idempotent; may come before Run().
  void Shutdown();

  // The ranks held now (for tests and status lines).
  std::vector<forge::v1::RankInfo> HeldRanks() const { return ranks_.Snapshot(); }

 private:
  struct Session;

  // One stream from connect to end: why it ended. Sets *registered when Registered arrived.
  absl::Status RunSession(bool* registered);
  void HeartbeatLoop(Session* session);
  void Handle(Session* session, const forge::v1::CoordinatorMessage& message);
  void HandleAssignment(Session* session, const forge::v1::Assignment& assignment);
  void HandleStop(const forge::v1::StopRanks& stop);
  // Writes under session->write_mu; false when the stream is broken.
  static bool Write(Session* session, const forge::v1::WorkerMessage& message);
  // Queues a message for the coordinator; the heartbeat thread of the live session sends it
  // (after a reconnection if there is none). Log batches beyond max_buffered_log_bytes are
  // dropped oldest first; exits are never dropped.
  void Enqueue(forge::v1::WorkerMessage message);
  void OnTrainerExit(const forge::v1::RankExited& exited);

  // Constant after construction.
  const WorkerAgentOptions options_;

  RankTable ranks_;  // thread-safe

  // Owned by the Run() thread.
  Backoff backoff_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  Session* session_ ABSL_GUARDED_BY(mu_) = nullptr;  // the live session, owned by Run()
  std::deque<forge::v1::WorkerMessage> outbox_ ABSL_GUARDED_BY(mu_);
  size_t outbox_log_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  // Declared last: destroyed first, so its callbacks never see a half-destroyed agent.
  std::unique_ptr<TrainerSupervisor> supervisor_;  // null without trainer_binary
};

}  // namespace forge::worker

#endif  // FORGE_WORKER_AGENT_H_
