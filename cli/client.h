// The CLI's connection to the coordinator: one channel, the bearer token on every call, the
// per-call deadline, and gRPC statuses turned into messages a person can act on.
#ifndef FORGE_CLI_CLIENT_H_
#define FORGE_CLI_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forge/v1/coordinator.grpc.pb.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::cli {

inline constexpr char kDefaultCoordinator[] = "127.0.0.1:7700";

struct ConnectionOptions {
  std::string coordinator = kDefaultCoordinator;  // HOST:PORT
  std::string token;                              // the bearer token itself
  absl::Duration timeout = absl::Seconds(30);     // deadline of each call
};

// The token to send: the contents of `token_file` when it is not empty, else `env_token`
// (the value of FORGE_TOKEN, which holds the token itself; may be null). Surrounding
// whitespace is trimmed. A usage error (exit 2) when neither gives a token, naming both ways.
absl::StatusOr<std::string> ResolveToken(const std::string& token_file, const char* env_token);

// Thread-compatible: a command uses it from one thread.
class CoordinatorClient {
 public:
  // Connects (lazily, as gRPC does) to options.coordinator over plaintext.
  explicit CoordinatorClient(ConnectionOptions options);
  // Uses `channel`, e.g. an in-process channel in tests.
  CoordinatorClient(ConnectionOptions options, std::shared_ptr<grpc::Channel> channel);

  forge::v1::JobService::StubInterface& jobs() { return *jobs_; }
  forge::v1::WorkerService::StubInterface& workers() { return *workers_; }
  forge::v1::AdminService::StubInterface& admin() { return *admin_; }
  forge::v1::DataService::StubInterface& data() { return *data_; }
  forge::v1::CheckpointService::StubInterface& checkpoints() { return *checkpoints_; }
  forge::v1::ModelService::StubInterface& models() { return *models_; }
  forge::v1::ScheduleService::StubInterface& schedules() { return *schedules_; }

  // A fresh context for one call: `authorization: Bearer <token>` and the deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  // The same without a deadline, for a stream that moves file data (an upload or a
  // download) and may take longer than any fixed deadline; guard it with an IdleWatchdog
  // (file_transfer.h) so that a stalled transfer still ends.
  std::unique_ptr<grpc::ClientContext> NewTransferContext() const;

  // The outcome of a finished call as an absl::Status with the same code. UNAVAILABLE and
  // DEADLINE_EXCEEDED messages name the coordinator and say what to check; other messages
  // are the coordinator's own (they name the field at fault).
  absl::Status Finish(const grpc::Status& status) const;

  const ConnectionOptions& options() const { return options_; }

 private:
  const ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<forge::v1::JobService::StubInterface> jobs_;
  std::unique_ptr<forge::v1::WorkerService::StubInterface> workers_;
  std::unique_ptr<forge::v1::AdminService::StubInterface> admin_;
  std::unique_ptr<forge::v1::DataService::StubInterface> data_;
  std::unique_ptr<forge::v1::CheckpointService::StubInterface> checkpoints_;
  std::unique_ptr<forge::v1::ModelService::StubInterface> models_;
  std::unique_ptr<forge::v1::ScheduleService::StubInterface> schedules_;
};

}  // namespace forge::cli

#endif  // FORGE_CLI_CLIENT_H_
