// Test harness for integration tests: runs the real forge binaries on loopback.
//
// A Cluster owns a temporary directory, one coordinator process (listening on 127.0.0.1:0,
// port read from --port-file), and any worker processes started through it. Every process
// is killed (SIGKILL) when the Cluster is destroyed, so a failing test leaves nothing behind.
#ifndef FORGE_TESTS_HARNESS_H_
#define FORGE_TESTS_HARNESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "forge/v1/coordinator.grpc.pb.h"

namespace forge::testing {

// Where the built programs are: $FORGE_BIN_DIR when set, else the build's bin/.
std::string BinDir();

// A child process with stdout/stderr in files.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_path,
          std::map<std::string, std::string> env = {});
  ~Process();  // SIGKILL + reap if still running
  pid_t pid() const { return pid_; }
  bool Running();
  void Kill(int sig);
  // Waits for exit; returns the exit code (128+signal if killed) or -1 on timeout.
  int Wait(absl::Duration timeout);
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string log_path_;
};

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class Cluster {
 public:
  // Creates a fresh temp dir; does not start anything.
  Cluster();
  ~Cluster();

  // Starts (or restarts, reusing the same state dir and port) the coordinator and waits until
  // it accepts connections. Fast liveness settings for tests unless overridden.
  void StartCoordinator(std::vector<std::string> extra_flags = {});
  void KillCoordinator(int sig = 9);
  int port() const { return port_; }
  std::string address() const;
  std::string admin_token() const;
  const std::string& dir() const { return dir_; }

  // Starts a worker with its own work dir under the temp dir; returns its index.
  int StartWorker(const std::string& token, const std::string& devices,
                  const std::string& worker_id, std::vector<std::string> extra_flags = {});
  // A stand-in trainer (a script that sleeps until killed) for tests of placement and the
  // worker protocol, which must not spend the machine's cores on training: pass
  // "--trainer=" + IdleTrainer() to StartWorker. Tests of training use the real one.
  std::string IdleTrainer();
  Process* worker(int i) { return workers_[i].get(); }

  // Runs build/bin/forge with `args`, FORGE_COORDINATOR set, and FORGE_TOKEN = token (unless
  // token is empty). Optional stdin text is not supported: specs are written to files.
  CliResult Cli(const std::vector<std::string>& args, const std::string& token);

  // Writes `content` to a file in the temp dir and returns its path.
  std::string WriteFile(const std::string& name, const std::string& content);

  // gRPC stubs with the given bearer token.
  std::shared_ptr<grpc::Channel> channel();
  static void Authorize(grpc::ClientContext* ctx, const std::string& token);

  // Writes `docs` synthetic English-like documents (deterministic in `seed`), prepares them
  // with `forge data prepare` and registers them for the tenant with `forge data register`.
  // Returns the prepared directory.
  std::string RegisterDataset(const std::string& tenant_token, const std::string& name,
                              int docs = 120, int seed = 1);

  // Creates a tenant through the CLI and returns its token.
  std::string CreateTenant(const std::string& name);
  std::string CreateWorkerToken();

 private:
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Process> coordinator_;
  int coordinator_starts_ = 0;
  std::vector<std::unique_ptr<Process>> workers_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Pids of the job's forge-trainer processes on this machine (found by the job id in their
// command line).
std::vector<pid_t> TrainerPids(const std::string& job_id);

// Polls `pred` every 50 ms until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout);

}  // namespace forge::testing

#endif  // FORGE_TESTS_HARNESS_H_
