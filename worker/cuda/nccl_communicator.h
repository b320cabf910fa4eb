// NcclCommunicator: GPU collectives (all-reduce sum, broadcast) on device memory between the
// ranks of one training job, over NCCL. The GPU counterpart of forge::Communicator.
//
//   NcclOptions opts{.rank = r, .world_size = n, .device = r, .store = &store,
//                    .key = "job7/a0/nccl-unique-id"};
//   ASSIGN_OR_RETURN(auto comm, NcclCommunicator::Create(opts));
//   RETURN_IF_ERROR(comm->AllReduceSumAsync(grads, count, stream));  // overlaps with compute
//   ...
//   RETURN_IF_ERROR(comm->Synchronize(stream));  // bounded by opts.timeout
//
// Device: Create cudaSetDevice()s `device` on the calling thread and every collective call
// does it again (cheap), so the device stays current on whichever thread uses the
// communicator. Buffers must be device memory (cudaMalloc) on that device; streams must belong
// to it.
//
// Rendezvous: rank 0 calls ncclGetUniqueId() and publishes its 128 bytes under `key` in the
// shared Gloo store; every other rank waits for the key (up to `timeout`) and reads it. Then all
// ranks initialise the NCCL communicator together. A fresh key per job attempt keeps a restarted
// attempt from joining a dead communicator (Gloo's HashStore refuses to set a key twice). With
// world_size == 1 no store is needed: a one-rank NCCL communicator is built locally.
//
// Collectives are matched by call order, as in NCCL: every rank must issue the same sequence of
// collectives with the same counts (and root for Broadcast). All-reduce and broadcast run in
// place. The *Async calls return once the work is enqueued on `stream`; Synchronize waits for
// the stream.
//
// Timeouts and abort: the communicator is created non-blocking (ncclConfig_t.blocking = 0), so
// no NCCL call can hang the caller. `timeout` bounds Create (store wait plus NCCL init), the
// enqueue of every collective (which may connect to peers on first use), and every Synchronize.
// When a deadline passes, or NCCL reports an asynchronous error (a peer died, a network or CUDA
// failure), the communicator calls ncclCommAbort, which also stops its kernels still spinning
// on the GPU, and becomes broken: that call returns DeadlineExceeded (naming the timeout),
// Unavailable (remote or system error: rebuild and retry) or Internal (CUDA or NCCL internal
// error), with NCCL's own text; every later call returns FailedPrecondition "communicator is
// broken: <first error>". The data of the failed collective is undefined. Build a new
// communicator under a new key to continue. A peer that is merely slow looks the same as a dead
// one once `timeout` passes, so choose it well above the slowest expected step.
//
// Shutdown: the destructor of a healthy communicator finalizes it (flushing enqueued work, for
// at most `timeout`; then it aborts) and calls ncclCommDestroy; a broken one was already
// aborted. Destroy the communicators of all ranks of one process at about the same time: NCCL
// frees shared intra-process resources when the last of them goes.
//
// Thread safety: owned by one thread. No method may be called concurrently with another on the
// same NcclCommunicator. Ranks in one process (tests, benchmarks) each use their own
// communicator on their own thread and device, and may share one store (calls into the store
// are serialized among NcclCommunicators).
#ifndef FORGE_WORKER_CUDA_NCCL_COMMUNICATOR_H_
#define FORGE_WORKER_CUDA_NCCL_COMMUNICATOR_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gloo {
namespace rendezvous {
class Store;
}  // namespace rendezvous
}  // namespace gloo

namespace forge::cuda {

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  // CUDA device index this rank uses; Create cudaSetDevice()s it.
  int device = 0;
  // Shared rendezvous store; required when world_size > 1. Not owned: must outlive Create.
  gloo::rendezvous::Store* store = nullptr;
  // Store key under which rank 0 publishes the NCCL unique id. Unique per job attempt.
  std::string key = "nccl-unique-id";
  // Bounds Create, the enqueue of each collective, and every Synchronize.
  absl::Duration timeout = absl::Seconds(60);
};

// The checks of `options` that need no GPU (ranks, timeout, store and key), shared by the
// GPU build and the emulated one: InvalidArgument naming the field, or OK.
absl::Status CheckNcclOptions(const NcclOptions& options);

class NcclCommunicator {
 public:
  // Validates `options` (before touching CUDA), selects the device, rendezvouses and
  // initialises NCCL. InvalidArgument for bad options, FailedPrecondition when no CUDA device
  // is usable, DeadlineExceeded when peers do not join within `timeout`.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(NcclOptions options);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  int device() const { return options_.device; }
  // The NCCL handle, for calls this class does not wrap; nullptr once broken (aborted).
  // Do not destroy or abort it.
  ncclComm_t comm() const { return comm_; }
  // True once a collective failed or timed out; see "Timeouts and abort" above.
  bool broken() const { return !broken_.empty(); }

  // Enqueues an in-place fp32 sum of device memory data[0..count) across all ranks on
  // `stream`; returns once enqueued. REQUIRES: count > 0, data != nullptr.
  absl::Status AllReduceSumAsync(float* data, size_t count, cudaStream_t stream);
  // Enqueues an in-place copy of data[0..count) from rank `root` to every other rank.
  // REQUIRES: count > 0, data != nullptr, 0 <= root < world_size.
  absl::Status BroadcastAsync(float* data, size_t count, int root, cudaStream_t stream);
  // Waits until all work on `stream` is done, polling cudaStreamQuery and
  // ncclCommGetAsyncError. On an NCCL async error, a CUDA error, or when `timeout` passes,
  // aborts the communicator, marks it broken and returns the error (see the header comment).
  absl::Status Synchronize(cudaStream_t stream);

  // AllReduceSumAsync + Synchronize.
  absl::Status AllReduceSum(float* data, size_t count, cudaStream_t stream);
  // BroadcastAsync + Synchronize.
  absl::Status Broadcast(float* data, size_t count, int root, cudaStream_t stream);

 private:
  explicit NcclCommunicator(NcclOptions options) : options_(std::move(options)) {}

  using Deadline = std::chrono::steady_clock::time_point;

  absl::Status Init();
  absl::StatusOr<ncclUniqueId> ExchangeUniqueId(Deadline deadline);
  // Common checks of the collective calls; also makes `device` current.
  absl::Status CheckUsable(const float* data, size_t count, absl::string_view what);
  // Polls ncclCommGetAsyncError until it leaves ncclInProgress; breaks the communicator on an
  // error or when `deadline` passes.
  absl::Status WaitReady(absl::string_view what, Deadline deadline);
  // Handles an NCCL call's return code: ncclInProgress is waited out (bounded by `timeout`),
  // ncclSuccess returns OK, anything else breaks the communicator.
  absl::Status AfterEnqueue(ncclResult_t result, absl::string_view what);
  // Aborts the NCCL communicator, records `error` as the first failure and returns it.
  absl::Status Break(absl::Status error);

  const NcclOptions options_;
  ncclComm_t comm_ = nullptr;  // nullptr before Init and after Break
  std::string broken_;         // non-empty once broken: the first error's message
};

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_NCCL_COMMUNICATOR_H_
