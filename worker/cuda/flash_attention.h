// Causal self-attention fused on the tensor cores, FlashAttention-2 style: each block of 64
// queries streams tiles of 64 keys through shared memory; each warp computes its 16 rows'
// scores with mma.sync (bf16 inputs, fp32 accumulation), keeps them, the online softmax and
// its output accumulator in registers, and feeds the probabilities straight into the value
// product. No T x T matrix exists anywhere. The backward recomputes the probabilities from the
// saved log-sum-exp in two kernels, one owning each query's dq and one owning each key's dk
// and dv, so no gradient is accumulated by more than one block and the results are
// deterministic.
//
// bf16 only (the tensor cores' bf16 products); head sizes 16, 32, 64 and 128. Same contract
// as the fused CUDA-core kernels of kernels.h (qkv [B, T, 3C], y [B, T, C], lse [B, H, T]),
// which remain for exact fp32 mode.
//
// The kernel bodies are in flash_attention_body.h; flash_attention_emulation_test.cc runs them
// on the CUDA emulation against the CPU engine, so their logic is tested where no GPU is
// present.
#ifndef FORGE_WORKER_CUDA_FLASH_ATTENTION_H_
#define FORGE_WORKER_CUDA_FLASH_ATTENTION_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace forge::cuda {

bool FlashAttentionHeadSizeSupported(int head_size);

// Shared memory per block the kernels need for this head size (the most of the three); the
// device must allow it (cudaDeviceProp::sharedMemPerBlockOptin: 227 KiB on H100, less on some
// consumer GPUs). 0 for an unsupported head size.
size_t FlashAttentionSmemBytes(int head_size);

// qkv and dy must be 16-byte aligned and y and dqkv 4-byte aligned (cudaMalloc and the
// backend's arenas are 256-byte aligned); otherwise cudaErrorMisalignedAddress and nothing
// runs. cudaErrorInvalidValue, with nothing run, for an unsupported head size, heads that do
// not divide C, B < 1, Tq < 1 or B·H > 65535 (the grid's y).
cudaError_t FlashAttentionForward(__nv_bfloat16* y, float* lse, const __nv_bfloat16* qkv, int B,
                                  int Tq, int C, int H, cudaStream_t stream);

// dqkv overwritten; `delta` is scratch of B·H·T floats.
cudaError_t FlashAttentionBackward(__nv_bfloat16* dqkv, float* delta, const __nv_bfloat16* dy,
                                   const __nv_bfloat16* qkv, const __nv_bfloat16* y,
                                   const float* lse, int B, int Tq, int C, int H,
                                   cudaStream_t stream);

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_H_
