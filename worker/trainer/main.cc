// forge-trainer: one training rank. Spawned by forge-worker for each assigned device; not
// meant to be run by hand (see forge-train for local runs).
//
//   forge-trainer --coordinator=HOST:PORT --assignment=DIR/assignment.pb --work-dir=DIR
//
// The assignment file (written 0600 by the worker) holds the job spec, the rank, the world
// size and the attempt's rank token. Exit codes: see rank_runner.h.
#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/flags_util.h"
#include "common/log.h"
#include "worker/trainer/rank_runner.h"

ABSL_FLAG(std::string, coordinator, "", "coordinator HOST:PORT");
ABSL_FLAG(std::string, assignment, "", "assignment file written by the worker");
ABSL_FLAG(std::string, work_dir, "", "the worker's work dir");
ABSL_FLAG(int, parent_pid, 0, "exit when this process (the worker agent) is gone");
ABSL_FLAG(int, threads, 1, "CPU threads for this rank");
ABSL_FLAG(int64_t, eval_tokens, 65536, "held-out tokens evaluated per suite");
ABSL_FLAG(std::string, interface_address, "127.0.0.1",
          "address Gloo listens on and advertises to peer ranks");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "forge-trainer --coordinator=HOST:PORT --assignment=FILE --work-dir=DIR (spawned by "
      "forge-worker)");
  forge::ParseDashedCommandLine(argc, argv);
  forge::SetLogTag("trainer");
  forge::trainer::RankOptions o;
  o.coordinator = absl::GetFlag(FLAGS_coordinator);
  const std::string path = absl::GetFlag(FLAGS_assignment);
  absl::StatusOr<std::string> bytes = forge::ReadFile(path);
  if (o.coordinator.empty() || !bytes.ok() || !o.assignment.ParseFromString(*bytes)) {
    std::fprintf(stderr,
                 "forge-trainer: --coordinator and a readable --assignment file are required "
                 "(got --assignment=%s)\n",
                 path.c_str());
    return forge::trainer::kExitInvalid;
  }
  o.rank_dir = path.substr(0, path.rfind('/'));
  o.parent_pid = absl::GetFlag(FLAGS_parent_pid);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.eval_tokens = absl::GetFlag(FLAGS_eval_tokens);
  o.interface_address = absl::GetFlag(FLAGS_interface_address);
  return forge::trainer::RunRank(o);
}
