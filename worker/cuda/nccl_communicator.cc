#include "worker/cuda/nccl_communicator.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "gloo/rendezvous/store.h"

namespace forge::cuda {
namespace {

using Clock = std::chrono::steady_clock;

// "nccl_communicator.cc:123", for error texts.
std::string Where(const char* file, int line) {
  const char* slash = std::strrchr(file, '/');
  return absl::StrCat(slash != nullptr ? slash + 1 : file, ":", line);
}

absl::Status CudaError(cudaError_t e, int rank, absl::string_view what, const char* file,
                       int line) {
  return absl::InternalError(absl::StrCat("nccl rank ", rank, ": ", what,
                                          " failed: ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ") at ", Where(file, line)));
}

// Remote and system errors (a peer or the network went away) are worth retrying with a new
// communicator; CUDA, internal and usage errors are not.
absl::Status NcclError(ncclResult_t r, ncclComm_t comm, int rank, absl::string_view what,
                       const char* file, int line) {
  const char* last = ncclGetLastError(comm);
  std::string detail = last != nullptr ? std::string(last) : "";
  absl::StripTrailingAsciiWhitespace(&detail);
  std::string text = absl::StrCat("nccl rank ", rank, ": ", what,
                                  " failed: ", ncclGetErrorString(r), detail.empty() ? "" : " (",
                                  detail, detail.empty() ? "" : ")", " at ", Where(file, line));
  if (r == ncclRemoteError || r == ncclSystemError) return absl::UnavailableError(text);
  return absl::InternalError(text);
}

#define FORGE_CUDA_ERROR(e, what) CudaError((e), options_.rank, (what), __FILE__, __LINE__)
#define FORGE_NCCL_ERROR(r, what) NcclError((r), comm_, options_.rank, (what), __FILE__, __LINE__)

// Returns the CUDA error as a Status (Internal) from the enclosing member function.
#define FORGE_CUDA_RETURN_IF_ERROR(expr, what)        \
  do {                                                \
    cudaError_t _forge_cuda_err = (expr);             \
    if (_forge_cuda_err != cudaSuccess) {             \
      return FORGE_CUDA_ERROR(_forge_cuda_err, what); \
    }                                                 \
  } while (0)

// Waits between polls of a stream or communicator: yields for the first 200 us of a wait so
// that short collectives return promptly, then sleeps with growing intervals up to 1 ms so that
// a long wait does not burn a core.
class Backoff {
 public:
  void Wait() {
    if (Clock::now() - start_ < std::chrono::microseconds(200)) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(1000));
  }

 private:
  const Clock::time_point start_ = Clock::now();
  std::chrono::microseconds sleep_{20};
};

// Gloo's FileStore is not thread-safe and rank threads of one process share one store; see
// SerializedStore in worker/engine/communicator.cc. wait() is not serialized: holding the
// mutex there would keep a peer from publishing the awaited key.
absl::Mutex& StoreMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(NcclOptions options) {
  // Everything that needs no GPU is checked first, so that bad options are reported as such
  // on any machine.
  RETURN_IF_ERROR(CheckNcclOptions(options));
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();  // do not leave the error for the caller's next CUDA call
    return absl::FailedPreconditionError(absl::StrCat(
        "nccl communicator rank ", options.rank, ": no CUDA device: cudaGetDeviceCount ",
        e != cudaSuccess
            ? absl::StrCat("failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")")
            : "found 0 devices"));
  }
  if (options.device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator: device must be in [0, ",
                                                   count, ") on this machine (got ", options.device,
                                                   ")"));
  }
  std::unique_ptr<NcclCommunicator> comm(new NcclCommunicator(std::move(options)));
  RETURN_IF_ERROR(comm->Init());
  return comm;
}

absl::StatusOr<ncclUniqueId> NcclCommunicator::ExchangeUniqueId(Deadline deadline) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (options_.rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return FORGE_NCCL_ERROR(r, "ncclGetUniqueId");
  }
  if (options_.world_size == 1) return id;
  const std::string where = absl::StrCat("store key \"", options_.key, "\"");
  try {
    if (options_.rank == 0) {
      std::vector<char> bytes(id.internal, id.internal + sizeof(id.internal));
      absl::MutexLock lock(&StoreMutex());
      options_.store->set(options_.key, bytes);
      return id;
    }
    const auto left =
        std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                 std::chrono::milliseconds(1));
    options_.store->wait({options_.key}, left);
    std::vector<char> bytes;
    {
      absl::MutexLock lock(&StoreMutex());
      bytes = options_.store->get(options_.key);
    }
    if (bytes.size() != sizeof(id.internal)) {
      return absl::InvalidArgumentError(
          absl::StrCat("nccl rank ", options_.rank, ": ", where, " holds ", bytes.size(),
                       " bytes, not an NCCL unique id (", sizeof(id.internal),
                       "); is the key used by something else?"));
    }
    std::memcpy(id.internal, bytes.data(), bytes.size());
    return id;
  } catch (const std::exception& ex) {
    std::string msg = ex.what();
    const bool timed_out =
        msg.find("imeout") != std::string::npos || msg.find("imed out") != std::string::npos;
    std::string text = absl::StrCat(
        "nccl rank ", options_.rank, ": rendezvous on ", where,
        timed_out ? absl::StrCat(" timed out after ", absl::FormatDuration(options_.timeout))
                  : " failed",
        " (check that rank 0 started and every rank uses the same store and key): ", msg);
    if (timed_out) return absl::DeadlineExceededError(text);
    return absl::UnavailableError(text);
  }
}

absl::Status NcclCommunicator::Init() {
  const Deadline deadline = Clock::now() + absl::ToChronoNanoseconds(options_.timeout);
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device),
                             absl::StrCat("cudaSetDevice(", options_.device, ")"));
  ASSIGN_OR_RETURN(ncclUniqueId id, ExchangeUniqueId(deadline));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every NCCL call returns at once; we bound the waits ourselves
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options_.world_size, id, options_.rank, &config);
  comm_ = comm;
  if (r != ncclSuccess && r != ncclInProgress) {
    absl::Status s = FORGE_NCCL_ERROR(r, "ncclCommInitRankConfig");
    return comm_ != nullptr ? Break(s) : s;
  }
  if (comm_ == nullptr) {
    return absl::InternalError(absl::StrCat("nccl rank ", options_.rank,
                                            ": ncclCommInitRankConfig returned no communicator"));
  }
  return WaitReady(
      absl::StrCat("init (", options_.world_size, " ranks, ",
                   options_.world_size > 1 ? absl::StrCat("key \"", options_.key, "\"") : "local",
                   ")"),
      deadline);
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;  // never initialised, or already aborted by Break
  (void)cudaSetDevice(options_.device);
  // Finalize flushes enqueued work; in non-blocking mode it returns at once and is polled.
  // A communicator that cannot finish within `timeout` is aborted instead of destroyed.
  ncclResult_t r = ncclCommFinalize(comm_);
  if (r == ncclSuccess || r == ncclInProgress) {
    absl::Status s =
        WaitReady("finalize", Clock::now() + absl::ToChronoNanoseconds(options_.timeout));
    if (!s.ok()) return;  // WaitReady aborted it
    (void)ncclCommDestroy(comm_);
  } else {
    (void)ncclCommAbort(comm_);
  }
  comm_ = nullptr;
}

absl::Status NcclCommunicator::Break(absl::Status error) {
  if (comm_ != nullptr) {
    ncclComm_t comm = comm_;
    comm_ = nullptr;
    // ncclCommAbort is blocking even for a non-blocking communicator; it sets the abort flag
    // that NCCL kernels poll, so kernels waiting for a peer exit.
    ncclResult_t r = ncclCommAbort(comm);
    if (r != ncclSuccess) {
      error = absl::Status(
          error.code(),
          absl::StrCat(error.message(), "; ncclCommAbort also failed: ", ncclGetErrorString(r)));
    }
  }
  if (broken_.empty()) broken_ = std::string(error.message());
  return error;
}

absl::Status NcclCommunicator::WaitReady(absl::string_view what, Deadline deadline) {
  Backoff backoff;
  while (true) {
    ncclResult_t state = ncclInProgress;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) return Break(FORGE_NCCL_ERROR(r, "ncclCommGetAsyncError"));
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return Break(FORGE_NCCL_ERROR(state, what));
    if (Clock::now() >= deadline) {
      return Break(absl::DeadlineExceededError(
          absl::StrCat("nccl rank ", options_.rank, ": ", what, " did not complete within timeout ",
                       absl::FormatDuration(options_.timeout),
                       " (a peer rank is missing, stalled or dead); communicator aborted")));
    }
    backoff.Wait();
  }
}

absl::Status NcclCommunicator::CheckUsable(const float* data, size_t count,
                                           absl::string_view what) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("nccl rank ", options_.rank,
                                                      ": communicator is broken: ", broken_,
                                                      "; create a new one under a new key"));
  }
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl communicator: ", what, " count must be > 0"));
  }
  if (data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator: ", what, " data is null"));
  }
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device),
                             absl::StrCat("cudaSetDevice(", options_.device, ")"));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AfterEnqueue(ncclResult_t result, absl::string_view what) {
  if (result == ncclSuccess) return absl::OkStatus();
  // In non-blocking mode the enqueue may still be running (e.g. connecting to peers on the
  // first use of an algorithm); NCCL must not be called again, nor the stream used, until the
  // communicator is ready.
  if (result == ncclInProgress) {
    return WaitReady(absl::StrCat(what, " enqueue"),
                     Clock::now() + absl::ToChronoNanoseconds(options_.timeout));
  }
  // A failed call leaves a non-blocking communicator in an error state: abort it.
  return Break(FORGE_NCCL_ERROR(result, what));
}

absl::Status NcclCommunicator::AllReduceSumAsync(float* data, size_t count, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckUsable(data, count, "all-reduce"));
  return AfterEnqueue(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream),
                      absl::StrCat("all-reduce of ", count, " floats"));
}

absl::Status NcclCommunicator::BroadcastAsync(float* data, size_t count, int root,
                                              cudaStream_t stream) {
  RETURN_IF_ERROR(CheckUsable(data, count, "broadcast"));
  if (root < 0 || root >= options_.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl communicator: broadcast root must be in [0, ", options_.world_size,
                     ") (got ", root, ")"));
  }
  return AfterEnqueue(ncclBroadcast(data, data, count, ncclFloat32, root, comm_, stream),
                      absl::StrCat("broadcast of ", count, " floats from rank ", root));
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t stream) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("nccl rank ", options_.rank,
                                                      ": communicator is broken: ", broken_,
                                                      "; create a new one under a new key"));
  }
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device),
                             absl::StrCat("cudaSetDevice(", options_.device, ")"));
  const Deadline deadline = Clock::now() + absl::ToChronoNanoseconds(options_.timeout);
  Backoff backoff;
  while (true) {
    // NCCL's error first: a kernel whose peer died may never finish, so the stream alone
    // would only tell us at the deadline.
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) return Break(FORGE_NCCL_ERROR(r, "ncclCommGetAsyncError"));
    if (state != ncclSuccess && state != ncclInProgress) {
      return Break(FORGE_NCCL_ERROR(state, "collective (asynchronous error)"));
    }
    cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) {
      return Break(FORGE_CUDA_ERROR(e, "cudaStreamQuery while waiting for collectives"));
    }
    if (Clock::now() >= deadline) {
      return Break(absl::DeadlineExceededError(
          absl::StrCat("nccl rank ", options_.rank,
                       ": collectives on the stream did not complete within "
                       "timeout ",
                       absl::FormatDuration(options_.timeout),
                       " (a peer rank is missing, stalled or dead); communicator aborted")));
    }
    backoff.Wait();
  }
}

absl::Status NcclCommunicator::AllReduceSum(float* data, size_t count, cudaStream_t stream) {
  RETURN_IF_ERROR(AllReduceSumAsync(data, count, stream));
  return Synchronize(stream);
}

absl::Status NcclCommunicator::Broadcast(float* data, size_t count, int root, cudaStream_t stream) {
  RETURN_IF_ERROR(BroadcastAsync(data, count, root, stream));
  return Synchronize(stream);
}

}  // namespace forge::cuda
