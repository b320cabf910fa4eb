// forge-worker: the agent of one host. Connects to the coordinator, offers this host's
// devices and holds the ranks it is assigned.
//
//   forge-worker --coordinator=HOST:PORT --token-file=F --devices=SPEC --work-dir=DIR
//                [--worker-id=ID] [--hostname=NAME]
//
// Flags may be spelled with dashes or underscores (--token-file = --token_file).
// SIGTERM / SIGINT stop the agent and exit 0; bad flags exit 1 with a message naming the flag.
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/flags_util.h"
#include "common/log.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "worker/agent.h"
#include "worker/devices.h"
#include "worker/identity.h"

#ifndef FORGE_VERSION
#define FORGE_VERSION "dev"
#endif

ABSL_FLAG(std::string, coordinator, "", "coordinator address HOST:PORT (required)");
ABSL_FLAG(std::string, token_file, "",
          "--token-file: file holding the worker token (required; re-read before every "
          "connection attempt)");
ABSL_FLAG(std::string, devices, "",
          "devices to offer (required): cpu:N, cpu:all, cuda:all or cuda:I[,J...], kinds joined "
          "by '+', e.g. cpu:4+cuda:all");
ABSL_FLAG(std::string, work_dir, "", "--work-dir: the worker's own directory (required)");
ABSL_FLAG(std::string, peer_address, "127.0.0.1",
          "address of this host that trainers of other hosts can reach (Gloo all-reduce "
          "between ranks); 127.0.0.1 is enough when every worker runs on one host");
ABSL_FLAG(std::string, trainer, "",
          "path of forge-trainer, spawned once per rank; default: forge-trainer beside this "
          "binary");
ABSL_FLAG(std::string, worker_id, "",
          "--worker-id: stable worker id; default: kept in WORK_DIR/worker_id, created on "
          "first start as <hostname>-<6 hex digits>");
ABSL_FLAG(std::string, hostname, "", "hostname reported to the coordinator; default: this host's");

namespace forge::worker {
namespace {

absl::Status Required(absl::string_view flag, const std::string& value, absl::string_view eg) {
  if (!value.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " is required, e.g. --", flag, "=", eg));
}

void WarnIfTokenFileIsShared(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    FORGE_LOG(WARNING) << "--token-file=" << path << " is readable by group or others (mode "
                       << std::oct << (st.st_mode & 0777) << std::dec << "); chmod 600 it";
  }
}

absl::StatusOr<WorkerAgentOptions> OptionsFromFlags() {
  WorkerAgentOptions options;
  options.coordinator = absl::GetFlag(FLAGS_coordinator);
  RETURN_IF_ERROR(Required("coordinator", options.coordinator, "127.0.0.1:7070"));
  const std::string token_file = absl::GetFlag(FLAGS_token_file);
  RETURN_IF_ERROR(ReadTokenFile(token_file).status());  // fail fast; re-read per attempt
  WarnIfTokenFileIsShared(token_file);
  options.token_source = [token_file] { return ReadTokenFile(token_file); };
  const std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  RETURN_IF_ERROR(Required("work-dir", work_dir, "/var/lib/forge-worker"));
  options.work_dir = work_dir;
  options.peer_address = absl::GetFlag(FLAGS_peer_address);
  options.trainer_binary = absl::GetFlag(FLAGS_trainer);
  if (options.trainer_binary.empty()) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
      std::string path(self, static_cast<size_t>(n));
      options.trainer_binary = path.substr(0, path.rfind('/') + 1) + "forge-trainer";
    }
  }
  if (access(options.trainer_binary.c_str(), X_OK) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--trainer=", options.trainer_binary, " is not an executable file; build forge-trainer "
        "(scripts/build) or point --trainer at it"));
  }
  if (absl::Status s = MakeDirs(work_dir, 0700); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--work-dir=", work_dir, ": ", s.message()));
  }

  options.hostname = absl::GetFlag(FLAGS_hostname);
  if (options.hostname.empty()) options.hostname = LocalHostname();
  if (options.hostname.size() > 256) {
    return absl::InvalidArgumentError("--hostname is longer than 256 characters");
  }
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) {
    ASSIGN_OR_RETURN(options.worker_id, LoadOrCreateWorkerId(work_dir, options.hostname));
  } else {
    RETURN_IF_ERROR(ValidateIdentifier("--worker-id", options.worker_id, 128));
  }

  const std::string spec = absl::GetFlag(FLAGS_devices);
  RETURN_IF_ERROR(Required("devices", spec, "cpu:4"));
  ASSIGN_OR_RETURN(DeviceRequest request,
                   ParseDeviceSpec(spec, static_cast<int>(std::thread::hardware_concurrency())));
  ASSIGN_OR_RETURN(options.devices, DiscoverDevices(request));
  options.version = FORGE_VERSION;
  return options;
}

int Main(int argc, char** argv) {
  // Signals are taken by one thread with sigwait; block them before gRPC starts threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "forge-worker --coordinator=HOST:PORT --token-file=F --devices=cpu:N|cuda:all "
      "--work-dir=DIR [--worker-id=ID] [--hostname=NAME]");
  ParseDashedCommandLine(argc, argv);
  SetLogTag("worker");

  absl::StatusOr<WorkerAgentOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    FORGE_LOG(ERROR) << "forge-worker: " << options.status().message();
    return 1;
  }
  FORGE_LOG(INFO) << "worker=" << options->worker_id << " hostname=" << options->hostname
                  << " coordinator=" << options->coordinator << " version=" << options->version
                  << " devices=" << DescribeDevices(options->devices) << " starting";

  WorkerAgent agent(*std::move(options));
  std::atomic<bool> run_returned{false};
  std::thread signal_thread([&agent, &signals, &run_returned] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (run_returned.load()) return;  // our own wake-up below
    FORGE_LOG(INFO) << "signal " << sig << " received; shutting down";
    agent.Shutdown();
  });
  const absl::Status status = agent.Run();
  // Run() returns without a signal only on an error: wake the signal thread to end it. A
  // signal thread that already returned leaves the SIGTERM pending on a blocked mask.
  run_returned.store(true);
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  if (!status.ok()) {
    FORGE_LOG(ERROR) << "forge-worker: " << status.message();
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace forge::worker

int main(int argc, char** argv) { return forge::worker::Main(argc, argv); }
