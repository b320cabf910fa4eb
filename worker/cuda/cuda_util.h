// Small helpers for the CUDA backend: CUDA / cuBLAS errors as absl::Status, and an owning
// device buffer.
#ifndef FORGE_WORKER_CUDA_CUDA_UTIL_H_
#define FORGE_WORKER_CUDA_CUDA_UTIL_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace forge::cuda {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e), " (",
                                          cudaGetErrorName(e), ", error ", static_cast<int>(e),
                                          ")"));
}

inline absl::Status CublasStatus(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(e)));
}

// Evaluates a CUDA runtime call; returns its error as a Status naming the call.
#define FORGE_CUDA_RETURN_IF_ERROR(call)                                          \
  do {                                                                            \
    if (absl::Status _forge_cuda_s = ::forge::cuda::CudaStatus((call), #call);    \
        !_forge_cuda_s.ok()) {                                                    \
      return _forge_cuda_s;                                                       \
    }                                                                             \
  } while (0)

#define FORGE_CUBLAS_RETURN_IF_ERROR(call)                                        \
  do {                                                                            \
    if (absl::Status _forge_cublas_s = ::forge::cuda::CublasStatus((call), #call); \
        !_forge_cublas_s.ok()) {                                                  \
      return _forge_cublas_s;                                                     \
    }                                                                             \
  } while (0)

// The number of CUDA devices a driver reports; 0 when there is no driver or no device (with
// the toolkit but no driver, cudaGetDeviceCount fails with error 35 and writes nothing).
inline int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not confused
    return 0;
  }
  return count;
}

// Owns `count` elements of T in device memory (cudaMalloc; never managed memory).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static absl::StatusOr<DeviceBuffer> Allocate(size_t count, const char* what) {
    DeviceBuffer b;
    if (count == 0) return b;
    void* p = nullptr;
    if (cudaError_t e = cudaMalloc(&p, count * sizeof(T)); e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          "cudaMalloc of ", count * sizeof(T), " bytes for ", what, ": ", cudaGetErrorString(e),
          "; use a smaller micro-batch, sequence length or model"));
    }
    b.data_ = static_cast<T*>(p);
    b.count_ = count;
    return b;
  }

  T* get() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void Reset() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_CUDA_UTIL_H_
