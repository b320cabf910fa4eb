// All-reduce (sum, float32) over forge::Communicator: forks --ranks processes that rendezvous
// through a Gloo FileStore in a temp dir on 127.0.0.1, sweeps sizes by x4 steps and prints an
// nccl-tests style table from rank 0: median time per call, algbw = bytes / time, busbw =
// algbw * 2(n-1)/n, and #wrong (elements that differ from the exact sum, over all ranks).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "gloo/rendezvous/file_store.h"
#include "worker/engine/communicator.h"

ABSL_FLAG(std::string, buffer, "communicator",
          "communicator: reduce in the communicator's own buffer (AllReduceBuffer, no copies, "
          "as nccl-tests does); user: a caller's buffer, copied in and out");
ABSL_FLAG(int, ranks, 2, "rank processes to fork");
ABSL_FLAG(int64_t, min_bytes, 4 << 10, "smallest buffer");
ABSL_FLAG(int64_t, max_bytes, 64 << 20, "largest buffer");
ABSL_FLAG(int, warmup, 5, "untimed calls per size");
ABSL_FLAG(int, iters, 0, "timed calls per size (0: about 256 MiB of traffic, 10..200)");
ABSL_FLAG(std::string, algo, "auto", "auto | ring | hd | bcube");

namespace {

using Clock = std::chrono::steady_clock;

float Value(int rank, size_t i) { return static_cast<float>((rank + 1) * (i % 7 + 1)); }

int RunRank(int rank, int world, const std::string& dir) {
  forge::CommunicatorOptions o;
  o.rank = rank;
  o.world_size = world;
  o.store = std::make_shared<gloo::rendezvous::FileStore>(dir);
  o.prefix = "allreduce-bench";
  o.timeout = absl::Seconds(60);
  const std::string algo = absl::GetFlag(FLAGS_algo);
  if (algo == "ring") o.algorithm = forge::AllReduceAlgorithm::kRingChunked;
  if (algo == "hd") o.algorithm = forge::AllReduceAlgorithm::kHalvingDoubling;
  if (algo == "bcube") o.algorithm = forge::AllReduceAlgorithm::kBcube;
  auto comm_or = forge::Communicator::Create(o);
  if (!comm_or.ok()) {
    fprintf(stderr, "rank %d: %s\n", rank, std::string(comm_or.status().message()).c_str());
    return 1;
  }
  auto& comm = **comm_or;
  if (rank == 0) {
    printf("# forge-bench-allreduce: %d ranks (processes), Gloo TCP on 127.0.0.1, algo=%s, "
           "buffer=%s\n",
           world, algo.c_str(), absl::GetFlag(FLAGS_buffer).c_str());
    printf("# %12s %12s %6s %12s %10s %10s %8s\n", "size(B)", "count", "type", "time(us)",
           "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  }
  const float ranks_sum = world * (world + 1) / 2.0f;
  for (int64_t bytes = absl::GetFlag(FLAGS_min_bytes); bytes <= absl::GetFlag(FLAGS_max_bytes);
       bytes *= 4) {
    const size_t count = bytes / sizeof(float);
    std::vector<float> input(count), user(count);
    float* data = user.data();
    if (absl::GetFlag(FLAGS_buffer) == "communicator") {
      absl::StatusOr<float*> own = comm.AllReduceBuffer(count);
      if (!own.ok()) return 1;
      data = *own;
    }
    for (size_t i = 0; i < count; ++i) input[i] = Value(rank, i);
    int iters = absl::GetFlag(FLAGS_iters);
    if (iters <= 0) iters = std::clamp<int>(static_cast<int>((256LL << 20) / bytes), 10, 200);
    std::vector<double> us;
    float wrong = 0;
    for (int it = -absl::GetFlag(FLAGS_warmup); it < iters; ++it) {
      std::memcpy(data, input.data(), bytes);
      if (!comm.Barrier().ok()) return 1;
      const auto t0 = Clock::now();
      absl::Status s = comm.AllReduceSum(data, count);
      const auto t1 = Clock::now();
      if (!s.ok()) {
        fprintf(stderr, "rank %d: %s\n", rank, std::string(s.message()).c_str());
        return 1;
      }
      if (it >= 0) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      if (it == iters - 1) {
        for (size_t i = 0; i < count; ++i) wrong += data[i] != ranks_sum * (i % 7 + 1);
      }
    }
    if (!comm.AllReduceSum(&wrong, 1).ok()) return 1;
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    const double algbw = bytes / (med * 1e3);  // bytes/us -> GB/s (1e9)
    const double busbw = algbw * 2.0 * (world - 1) / world;
    if (rank == 0) {
      printf("  %12lld %12zu %6s %12.1f %10.3f %10.3f %8.0f\n", static_cast<long long>(bytes),
             count, "float", med, algbw, busbw, wrong);
      fflush(stdout);
    }
  }
  if (rank == 0) {
    printf(
        "# reference: PyTorch torch.distributed gloo, 2 processes on this kind of box: 4 KiB "
        "0.49 ms, 1 MiB 0.37 GB/s, 16 MiB 1.03 GB/s, 64 MiB 1.28 GB/s busbw; goal: at least "
        "that at every size\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int world = absl::GetFlag(FLAGS_ranks);
  std::string dir = (std::filesystem::temp_directory_path() / "forge_allreduce_XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    perror("mkdtemp");
    return 1;
  }
  fflush(stdout);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      const int child_rc = RunRank(r, world, dir);
      fflush(stdout);  // _exit skips stdio flushing
      _exit(child_rc);
    }
    pids.push_back(pid);
  }
  int rc = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  std::filesystem::remove_all(dir);
  return rc;
}
