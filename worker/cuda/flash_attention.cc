// The flash attention's entry points (flash_attention.h), shared by the GPU build and the
// emulated one: argument checks and the choice of head size; the launches are theirs
// (flash::LaunchForward / LaunchBackward in flash_attention.cu or flash_attention_emulated.cc).
#include "worker/cuda/flash_attention.h"

#include <cmath>
#include <cstdint>

#include "worker/cuda/flash_attention_body.h"
#include "worker/cuda/kernels.h"

namespace forge::cuda {
namespace {

bool Valid(int B, int Tq, int C, int H) {
  return B >= 1 && Tq >= 1 && H >= 1 && C % H == 0 && int64_t{B} * H <= 65535;
}

// The kernels read qkv and dy 16 bytes at a time and write y and dqkv 4 bytes at a time.
bool Aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

float Scale(int head_size) { return 1.0f / std::sqrt(static_cast<float>(head_size)); }

}  // namespace

bool FlashAttentionHeadSizeSupported(int head_size) {
  return head_size == 16 || head_size == 32 || head_size == 64 || head_size == 128;
}

size_t FlashAttentionSmemBytes(int head_size) {
  auto most = [](size_t a, size_t b) { return a > b ? a : b; };
  switch (head_size) {
    case 16:
      return most(flash::ForwardSmem<16>::kBytes, flash::BackwardSmem<16>::kBytes);
    case 32:
      return most(flash::ForwardSmem<32>::kBytes, flash::BackwardSmem<32>::kBytes);
    case 64:
      return most(flash::ForwardSmem<64>::kBytes, flash::BackwardSmem<64>::kBytes);
    case 128:
      return most(flash::ForwardSmem<128>::kBytes, flash::BackwardSmem<128>::kBytes);
    default:
      return 0;
  }
}

cudaError_t FlashAttentionForward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H,
                                  cudaStream_t stream) {
  if (!Valid(B, Tq, C, H) || !FlashAttentionHeadSizeSupported(C / H)) return cudaErrorInvalidValue;
  if (!Aligned(qkv, 16) || !Aligned(y, 4)) return cudaErrorMisalignedAddress;
  const int D = C / H;
  switch (D) {
    case 16:
      return flash::LaunchForward<16>(y, lse, qkv, B, Tq, C, H, Scale(D), stream);
    case 32:
      return flash::LaunchForward<32>(y, lse, qkv, B, Tq, C, H, Scale(D), stream);
    case 64:
      return flash::LaunchForward<64>(y, lse, qkv, B, Tq, C, H, Scale(D), stream);
    default:
      return flash::LaunchForward<128>(y, lse, qkv, B, Tq, C, H, Scale(D), stream);
  }
}

cudaError_t FlashAttentionBackward(bf16* dqkv, float* delta, const bf16* dy, const bf16* qkv,
                                   const bf16* y, const float* lse, int B, int Tq, int C, int H,
                                   cudaStream_t stream) {
  if (!Valid(B, Tq, C, H) || !FlashAttentionHeadSizeSupported(C / H)) return cudaErrorInvalidValue;
  if (!Aligned(qkv, 16) || !Aligned(dy, 16) || !Aligned(dqkv, 4)) {
    return cudaErrorMisalignedAddress;
  }
  if (cudaError_t e = AttentionDelta<bf16>(delta, dy, y, B, Tq, C, H, stream); e != cudaSuccess) {
    return e;
  }
  const int D = C / H;
  switch (D) {
    case 16:
      return flash::LaunchBackward<16>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, Scale(D), stream);
    case 32:
      return flash::LaunchBackward<32>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, Scale(D), stream);
    case 64:
      return flash::LaunchBackward<64>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, Scale(D), stream);
    default:
      return flash::LaunchBackward<128>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, Scale(D), stream);
  }
}

}  // namespace forge::cuda
