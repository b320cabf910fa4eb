#include <mma.h>

#include <cmath>
#include <mutex>
#include <set>
#include <utility>

#include "worker/cuda/flash_attention.h"
#include "worker/cuda/flash_attention_body.h"
#include "worker/cuda/kernels.h"

namespace forge::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using flash::bf16;

// The body's execution context on the GPU.
struct DeviceCtx {
  using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
  using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
  using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

  char* smem_ = nullptr;

  __device__ int tid() const { return threadIdx.x; }
  __device__ int block_x() const { return blockIdx.x; }
  __device__ int block_y() const { return blockIdx.y; }
  __device__ int grid_x() const { return gridDim.x; }
  __device__ void sync() const { __syncthreads(); }
  __device__ void syncwarp() const { __syncwarp(); }
  __device__ float shfl_xor(float v, int mask) const {
    return __shfl_xor_sync(0xffffffffu, v, mask);
  }
  __device__ char* smem() const { return smem_; }

  __device__ void fill(Acc& a, float x) const { wmma::fill_fragment(a, x); }
  __device__ void load_a(FragA& f, const bf16* p, int ld) const {
    wmma::load_matrix_sync(f, p, ld);
  }
  __device__ void load_b_col(FragBCol& f, const bf16* p, int ld) const {
    wmma::load_matrix_sync(f, p, ld);
  }
  __device__ void load_b_row(FragBRow& f, const bf16* p, int ld) const {
    wmma::load_matrix_sync(f, p, ld);
  }
  __device__ void load_acc(Acc& f, const float* p, int ld) const {
    wmma::load_matrix_sync(f, p, ld, wmma::mem_row_major);
  }
  template <typename B>
  __device__ void mma(Acc& d, const FragA& a, const B& b) const {
    wmma::mma_sync(d, a, b, d);
  }
  __device__ void store(float* p, const Acc& f, int ld) const {
    wmma::store_matrix_sync(p, f, ld, wmma::mem_row_major);
  }
};

template <int D>
__global__ void __launch_bounds__(flash::kThreads)
    FlashForwardKernel(bf16* y, float* lse, const bf16* qkv, int Tq, int C, int H, float scale) {
  extern __shared__ __align__(128) char smem[];
  DeviceCtx ctx{smem};
  flash::ForwardBody<D>(ctx, y, lse, qkv, Tq, C, H, scale);
}

template <int D>
__global__ void __launch_bounds__(flash::kThreads)
    FlashBackwardQueryKernel(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                             const float* lse, int Tq, int C, int H, float scale) {
  extern __shared__ __align__(128) char smem[];
  DeviceCtx ctx{smem};
  flash::BackwardQueryBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
}

template <int D>
__global__ void __launch_bounds__(flash::kThreads)
    FlashBackwardKeyKernel(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                           const float* lse, int Tq, int C, int H, float scale) {
  extern __shared__ __align__(128) char smem[];
  DeviceCtx ctx{smem};
  flash::BackwardKeyBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
}

// Raises the kernel's dynamic shared-memory limit to `bytes` (above the 48 KiB default), once
// per kernel and device: the attribute is per device, and setting it can wait for copies in
// flight, so it is not repeated at every launch.
template <typename K>
cudaError_t AllowSmem(K kernel, size_t bytes) {
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  const std::pair<const void*, int> key(reinterpret_cast<const void*>(kernel), device);
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key) > 0) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bytes));
  if (e == cudaSuccess) done.insert(key);
  return e;
}

}  // namespace

namespace flash {

template <int D>
cudaError_t LaunchForward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H,
                          float scale, cudaStream_t stream) {
  const size_t bytes = ForwardSmem<D>::kBytes;
  if (cudaError_t e = AllowSmem(FlashForwardKernel<D>, bytes); e != cudaSuccess) return e;
  const dim3 grid((Tq + flash::kBlockRows - 1) / flash::kBlockRows, B * H);
  FlashForwardKernel<D><<<grid, flash::kThreads, bytes, stream>>>(y, lse, qkv, Tq, C, H, scale);
  return cudaGetLastError();
}

template <int D>
cudaError_t LaunchBackward(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                           const float* lse, int B, int Tq, int C, int H, float scale,
                           cudaStream_t stream) {
  const size_t bytes = BackwardSmem<D>::kBytes;
  if (cudaError_t e = AllowSmem(FlashBackwardQueryKernel<D>, bytes); e != cudaSuccess) return e;
  if (cudaError_t e = AllowSmem(FlashBackwardKeyKernel<D>, bytes); e != cudaSuccess) return e;
  const dim3 grid((Tq + flash::kBlockRows - 1) / flash::kBlockRows, B * H);
  FlashBackwardQueryKernel<D>
      <<<grid, flash::kThreads, bytes, stream>>>(dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  FlashBackwardKeyKernel<D>
      <<<grid, flash::kThreads, bytes, stream>>>(dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  return cudaGetLastError();
}

FORGE_FLASH_INSTANTIATE(16)
FORGE_FLASH_INSTANTIATE(32)
FORGE_FLASH_INSTANTIATE(64)
FORGE_FLASH_INSTANTIATE(128)

}  // namespace flash
}  // namespace forge::cuda
