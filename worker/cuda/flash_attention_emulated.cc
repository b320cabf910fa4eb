// flash_attention.h on the CUDA emulation (flash_attention_emulation.h), for the emulated
// backend: the same bodies and launch shapes as flash_attention.cu.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif

#include <cmath>

#include "worker/cuda/flash_attention.h"
#include "worker/cuda/flash_attention_emulation.h"
#include "worker/cuda/kernels.h"

namespace forge::cuda {
namespace {

using flash::bf16;

template <int D>
cudaError_t Forward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  flash::RunFlash(
      (Tq + flash::kBlockRows - 1) / flash::kBlockRows, B * H, flash::ForwardSmem<D>::kBytes,
      [&](flash::FiberCtx& ctx) { flash::ForwardBody<D>(ctx, y, lse, qkv, Tq, C, H, scale); });
  return cudaSuccess;
}

template <int D>
cudaError_t Backward(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                     const float* lse, int B, int Tq, int C, int H) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int blocks = (Tq + flash::kBlockRows - 1) / flash::kBlockRows;
  flash::RunFlash(blocks, B * H, flash::BackwardSmem<D>::kBytes, [&](flash::FiberCtx& ctx) {
    flash::BackwardQueryBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  });
  flash::RunFlash(blocks, B * H, flash::BackwardSmem<D>::kBytes, [&](flash::FiberCtx& ctx) {
    flash::BackwardKeyBody<D>(ctx, dqkv, delta, dy, qkv, lse, Tq, C, H, scale);
  });
  return cudaSuccess;
}

}  // namespace

cudaError_t FlashAttentionForward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H,
                                  cudaStream_t) {
  if (H < 1 || C % H != 0 || B * H > 65535) return cudaErrorInvalidValue;
  switch (C / H) {
    case 16:
      return Forward<16>(y, lse, qkv, B, Tq, C, H);
    case 32:
      return Forward<32>(y, lse, qkv, B, Tq, C, H);
    case 64:
      return Forward<64>(y, lse, qkv, B, Tq, C, H);
    case 128:
      return Forward<128>(y, lse, qkv, B, Tq, C, H);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t FlashAttentionBackward(bf16* dqkv, float* delta, const bf16* dy, const bf16* qkv,
                                   const bf16* y, const float* lse, int B, int Tq, int C, int H,
                                   cudaStream_t stream) {
  if (H < 1 || C % H != 0 || B * H > 65535) return cudaErrorInvalidValue;
  if (cudaError_t e = AttentionDelta<bf16>(delta, dy, y, B, Tq, C, H, stream); e != cudaSuccess) {
    return e;
  }
  switch (C / H) {
    case 16:
      return Backward<16>(dqkv, delta, dy, qkv, lse, B, Tq, C, H);
    case 32:
      return Backward<32>(dqkv, delta, dy, qkv, lse, B, Tq, C, H);
    case 64:
      return Backward<64>(dqkv, delta, dy, qkv, lse, B, Tq, C, H);
    case 128:
      return Backward<128>(dqkv, delta, dy, qkv, lse, B, Tq, C, H);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace forge::cuda
