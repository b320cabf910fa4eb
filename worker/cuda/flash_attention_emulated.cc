// The flash attention's launches on the CUDA emulation (flash_attention_emulation.h), for the
// emulated backend: the same bodies and grids as flash_attention.cu; flash_attention.cc is
// the entry point in both builds.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif

#include "worker/cuda/flash_attention_emulation.h"

namespace forge::cuda::flash {

template <int D>
cudaError_t LaunchForward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H,
                          float scale, cudaStream_t) {
  RunFlash((Tq + kBlockRows - 1) / kBlockRows, B * H, ForwardSmem<D>::kBytes,
           [&](FiberCtx& ctx) { ForwardBody<D>(ctx, y, lse, qkv, Tq, C, H, scale); });
  return cudaSuccess;
}

template <int D>
cudaError_t LaunchBackward(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                           const float* lse, int B, int Tq, int C, int H, float scale,
                           cudaStream_t) {
  const int blocks = (Tq + kBlockRows - 1) / kBlockRows;
  RunFlash(blocks, B * H, BackwardSmem<D>::kBytes, [&](FiberCtx& ctx) {
    BackwardQueryBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  });
  RunFlash(blocks, B * H, BackwardSmem<D>::kBytes, [&](FiberCtx& ctx) {
    BackwardKeyBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  });
  return cudaSuccess;
}

FORGE_FLASH_INSTANTIATE(16)
FORGE_FLASH_INSTANTIATE(32)
FORGE_FLASH_INSTANTIATE(64)
FORGE_FLASH_INSTANTIATE(128)

}  // namespace forge::cuda::flash
