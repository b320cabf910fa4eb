#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>

#include "worker/cuda/flash_attention.h"
#include "worker/cuda/flash_attention_body.h"
#include "worker/cuda/kernels.h"

namespace forge::cuda {
namespace {

using flash::bf16;

// The body's execution context on the GPU.
struct DeviceCtx {
  char* smem_ = nullptr;

  __device__ int tid() const { return threadIdx.x; }
  __device__ int block_x() const { return blockIdx.x; }
  __device__ int block_y() const { return blockIdx.y; }
  __device__ int grid_x() const { return gridDim.x; }
  __device__ void sync() const { __syncthreads(); }
  __device__ float shfl_xor(float v, int mask) const {
    return __shfl_xor_sync(0xffffffffu, v, mask);
  }
  __device__ char* smem() const { return smem_; }

  // 16 bytes from global to shared memory without passing through registers; src-size 0
  // zero-fills the destination and reads nothing.
  __device__ void copy16_async(bf16* smem_dst, const bf16* global_src, bool valid) const {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :
                 : "r"(dst), "l"(global_src), "r"(valid ? 16 : 0)
                 : "memory");
  }
  __device__ void async_commit() const { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
  __device__ void async_wait_prior() const {
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
  }

  // Four 8 x 8 matrices of shared memory, as stored or transposed (flash_attention_body.h
  // states the layouts). The "memory" clobber keeps the compiler from moving them across the
  // stores they read.
  __device__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* row) const {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }
  __device__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* row) const {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }

  // d += A · B on the tensor cores (sm_80 and later; the build targets sm_90).
  __device__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // no bf16 mma.sync before sm_80: a build for such a device has no flash attention
#endif
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
