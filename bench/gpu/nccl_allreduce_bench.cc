// All-reduce (sum, float32, in place) over forge::cuda::NcclCommunicator: one thread per GPU,
// one rank each, rendezvous through an in-process Gloo HashStore. For every size in --sizes,
// each rank first runs one checked call (known data, result compared with the exact sum), then
// --warmup untimed calls, then --iters calls enqueued back to back; rank 0 times each of those
// with a pair of CUDA events on its stream. Rank 0 prints an nccl-tests style table: median
// time per call, algbw = bytes / time, busbw = algbw * 2(n-1)/n, and #wrong (elements of the
// checked call that differ from the exact sum, over all ranks).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gloo/rendezvous/hash_store.h"
#include "worker/cuda/nccl_communicator.h"

ABSL_FLAG(std::string, sizes, "1MiB,16MiB,64MiB,256MiB,1GiB",
          "comma-separated buffer sizes: byte counts, or with a KiB, MiB or GiB suffix; each a "
          "multiple of 4 bytes");
ABSL_FLAG(int, iters, 20, "timed calls per size");
ABSL_FLAG(int, warmup, 5, "untimed calls per size before the timed ones");
ABSL_FLAG(int, devices, 0, "GPUs to use, one rank each, devices 0..n-1 (0: all visible)");

namespace {

constexpr size_t kChunkFloats = size_t{4} << 20;  // host staging for fill and check: 16 MiB

absl::StatusOr<std::vector<size_t>> ParseSizes(const std::string& text) {
  std::vector<size_t> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    size_t unit = 1;
    if (absl::ConsumeSuffix(&item, "GiB")) {
      unit = size_t{1} << 30;
    } else if (absl::ConsumeSuffix(&item, "MiB")) {
      unit = size_t{1} << 20;
    } else if (absl::ConsumeSuffix(&item, "KiB")) {
      unit = size_t{1} << 10;
    } else {
      (void)absl::ConsumeSuffix(&item, "B");
    }
    uint64_t n = 0;
    if (!absl::SimpleAtoi(item, &n) || n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sizes: \"", text,
                       "\": each size must be a positive integer with an optional "
                       "KiB/MiB/GiB suffix (e.g. 1MiB,4096)"));
    }
    const size_t bytes = n * unit;
    if (bytes % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sizes: ", bytes, " bytes is not a whole number of floats (4 bytes)"));
    }
    out.push_back(bytes);
  }
  if (out.empty()) return absl::InvalidArgumentError("--sizes: no sizes given");
  return out;
}

std::string HumanBytes(size_t bytes) {
  if (bytes >= (size_t{1} << 30) && bytes % (size_t{1} << 30) == 0) {
    return absl::StrCat(bytes >> 30, "GiB");
  }
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0) {
    return absl::StrCat(bytes >> 20, "MiB");
  }
  if (bytes >= (size_t{1} << 10) && bytes % (size_t{1} << 10) == 0) {
    return absl::StrCat(bytes >> 10, "KiB");
  }
  return absl::StrCat(bytes, "B");
}

// Rank r contributes (r + 1) * (i % 7 + 1): small integers, so every sum is exact in float.
float Value(int rank, size_t i) { return static_cast<float>((rank + 1) * (i % 7 + 1)); }

struct Shared {
  Shared(int world, std::vector<size_t> sizes)
      : world(world), sizes(std::move(sizes)), sync(world), wrong(world, 0) {}
  const int world;
  const std::vector<size_t> sizes;
  gloo::rendezvous::HashStore store;
  std::barrier<> sync;         // ranks meet after each size, before rank 0 prints it
  std::vector<int64_t> wrong;  // per rank, for the current size; written before `sync`
};

#define BENCH_CUDA(expr)                                                                       \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      return absl::InternalError(                                                              \
          absl::StrCat(#expr, ": ", cudaGetErrorName(e_), " (", cudaGetErrorString(e_), ")")); \
    }                                                                                          \
  } while (0)

#define BENCH_RETURN_IF_ERROR(expr) \
  do {                              \
    absl::Status s_ = (expr);       \
    if (!s_.ok()) return s_;        \
  } while (0)

// Writes Value(rank, i) into dev[0..count) through the pinned staging buffer.
absl::Status Fill(float* dev, size_t count, int rank, float* staging) {
  for (size_t off = 0; off < count; off += kChunkFloats) {
    const size_t n = std::min(kChunkFloats, count - off);
    for (size_t i = 0; i < n; ++i) staging[i] = Value(rank, off + i);
    BENCH_CUDA(cudaMemcpy(dev + off, staging, n * sizeof(float), cudaMemcpyHostToDevice));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CountWrong(const float* dev, size_t count, int world, float* staging) {
  const float ranks_sum = world * (world + 1) / 2.0f;
  int64_t wrong = 0;
  for (size_t off = 0; off < count; off += kChunkFloats) {
    const size_t n = std::min(kChunkFloats, count - off);
    BENCH_CUDA(cudaMemcpy(staging, dev + off, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) wrong += staging[i] != ranks_sum * ((off + i) % 7 + 1);
  }
  return wrong;
}

// Device resources of one rank, released in reverse order on every path.
struct RankResources {
  ~RankResources() {
    for (cudaEvent_t e : events) (void)cudaEventDestroy(e);
    if (staging != nullptr) (void)cudaFreeHost(staging);
    if (buf != nullptr) (void)cudaFree(buf);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
  cudaStream_t stream = nullptr;
  float* buf = nullptr;
  float* staging = nullptr;
  std::vector<cudaEvent_t> events;
};

absl::Status RunRank(int rank, Shared& sh) {
  forge::cuda::NcclOptions o;
  o.rank = rank;
  o.world_size = sh.world;
  o.device = rank;
  o.store = &sh.store;
  o.key = "nccl-allreduce-bench";
  o.timeout = absl::Seconds(120);
  auto comm_or = forge::cuda::NcclCommunicator::Create(o);
  if (!comm_or.ok()) return comm_or.status();
  forge::cuda::NcclCommunicator& comm = **comm_or;
  // Declared after the communicator, so released before it is destroyed.
  RankResources res;
  BENCH_CUDA(cudaStreamCreateWithFlags(&res.stream, cudaStreamNonBlocking));
  const size_t max_bytes = *std::max_element(sh.sizes.begin(), sh.sizes.end());
  BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&res.buf), max_bytes));
  BENCH_CUDA(cudaMallocHost(reinterpret_cast<void**>(&res.staging), kChunkFloats * sizeof(float)));
  const int iters = std::max(1, absl::GetFlag(FLAGS_iters));
  const int warmup = std::max(0, absl::GetFlag(FLAGS_warmup));
  if (rank == 0) {
    res.events.resize(2 * iters);
    for (cudaEvent_t& e : res.events) BENCH_CUDA(cudaEventCreate(&e));
  }

  for (size_t bytes : sh.sizes) {
    const size_t count = bytes / sizeof(float);
    BENCH_RETURN_IF_ERROR(Fill(res.buf, count, rank, res.staging));
    BENCH_RETURN_IF_ERROR(comm.AllReduceSum(res.buf, count, res.stream));
    absl::StatusOr<int64_t> wrong = CountWrong(res.buf, count, sh.world, res.staging);
    if (!wrong.ok()) return wrong.status();

    // The warmup's last Synchronize acts as a barrier: no rank starts the timed calls before
    // every rank finished the warmup all-reduces.
    for (int i = 0; i < warmup; ++i) {
      BENCH_RETURN_IF_ERROR(comm.AllReduceSumAsync(res.buf, count, res.stream));
    }
    BENCH_RETURN_IF_ERROR(comm.Synchronize(res.stream));
    for (int i = 0; i < iters; ++i) {
      if (rank == 0) BENCH_CUDA(cudaEventRecord(res.events[2 * i], res.stream));
      BENCH_RETURN_IF_ERROR(comm.AllReduceSumAsync(res.buf, count, res.stream));
      if (rank == 0) BENCH_CUDA(cudaEventRecord(res.events[2 * i + 1], res.stream));
    }
    BENCH_RETURN_IF_ERROR(comm.Synchronize(res.stream));

    sh.wrong[rank] = *wrong;
    sh.sync.arrive_and_wait();
    if (rank != 0) continue;
    std::vector<double> us(iters);
    for (int i = 0; i < iters; ++i) {
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, res.events[2 * i], res.events[2 * i + 1]));
      us[i] = ms * 1e3;
    }
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    const double algbw = bytes / (med * 1e3);  // bytes/us -> GB/s (1e9)
    const double busbw = algbw * 2.0 * (sh.world - 1) / sh.world;
    int64_t total_wrong = 0;
    for (int64_t w : sh.wrong) total_wrong += w;
    printf("  %12zu %8s %12zu %6s %12.1f %12.2f %12.2f %8lld\n", bytes, HumanBytes(bytes).c_str(),
           count, "float", med, algbw, busbw, static_cast<long long>(total_wrong));
    fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<std::vector<size_t>> sizes = ParseSizes(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) {
    fprintf(stderr, "%s\n", std::string(sizes.status().message()).c_str());
    return 1;
  }
  int visible = 0;
  cudaError_t e = cudaGetDeviceCount(&visible);
  if (e != cudaSuccess || visible == 0) {
    fprintf(stderr, "no CUDA device: %s; this benchmark needs at least one GPU\n",
            e != cudaSuccess ? absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorName(e), " (",
                                            cudaGetErrorString(e), ")")
                                   .c_str()
                             : "cudaGetDeviceCount found 0 devices");
    return 2;
  }
  int world = absl::GetFlag(FLAGS_devices);
  if (world < 0 || world > visible) {
    fprintf(stderr, "--devices must be in [0, %d] on this machine (got %d)\n", visible, world);
    return 1;
  }
  if (world == 0) world = visible;

  cudaDeviceProp prop{};
  int nccl_version = 0, runtime_version = 0, driver_version = 0;
  (void)cudaGetDeviceProperties(&prop, 0);
  (void)ncclGetVersion(&nccl_version);
  (void)cudaRuntimeGetVersion(&runtime_version);
  (void)cudaDriverGetVersion(&driver_version);
  printf(
      "# forge-bench-gpu-nccl-allreduce: %d ranks (threads, one GPU each) on %d x %s, "
      "NCCL %d.%d.%d, CUDA runtime %d.%d, driver %d.%d\n",
      world, world, prop.name, nccl_version / 10000, nccl_version / 100 % 100, nccl_version % 100,
      runtime_version / 1000, runtime_version % 1000 / 10, driver_version / 1000,
      driver_version % 1000 / 10);
  printf(
      "# in-place sum; time = median of %d calls timed with CUDA events on rank 0 after %d "
      "warmup calls; algbw = bytes/time; busbw = algbw*2(n-1)/n; #wrong over all ranks\n",
      std::max(1, absl::GetFlag(FLAGS_iters)), std::max(0, absl::GetFlag(FLAGS_warmup)));
  printf("# %12s %8s %12s %6s %12s %12s %12s %8s\n", "size(B)", "size", "count", "type", "time(us)",
         "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  fflush(stdout);

  Shared shared(world, *sizes);
  std::vector<absl::Status> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      results[r] = RunRank(r, shared);
      // A failed rank must not leave the others waiting at the barrier.
      if (!results[r].ok()) shared.sync.arrive_and_drop();
    });
  }
  for (auto& t : threads) t.join();
  int rc = 0;
  for (int r = 0; r < world; ++r) {
    if (!results[r].ok()) {
      fprintf(stderr, "rank %d: %s\n", r, results[r].ToString().c_str());
      rc = 1;
    }
  }
  if (world == 1) {
    printf(
        "# note: 1 rank: busbw is 0 by definition (2(n-1)/n = 0) and algbw measures a local "
        "device copy (NCCL copies send to receive buffer; in place, not even that), not "
        "communication; run on >= 2 GPUs to measure NCCL\n");
  }
  printf(
      "# reference: nccl-tests all_reduce_perf on 8x H100 with NVLink/NVSwitch reaches "
      "~360-480 GB/s busbw at large sizes (>= 256 MiB); fewer GPUs or smaller sizes are "
      "lower. Compare busbw at the large sizes.\n");
  return rc;
}
