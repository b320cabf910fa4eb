// Causal self-attention fused on the tensor cores, flash-attention style: each block of 64
// queries streams tiles of 64 keys through shared memory, the score and value products run as
// WMMA bf16 fragments with fp32 accumulation, the softmax is online, and no T x T matrix
// exists anywhere. The backward recomputes the probabilities from the saved log-sum-exp in two
// kernels, one owning each query's dq and one owning each key's dk and dv, so no gradient is
// accumulated by more than one block and the results are deterministic.
//
// bf16 only (WMMA has no fp32 inputs); head sizes 16, 32, 64 and 128. Same contract as the
// fused CUDA-core kernels of kernels.h (qkv [B, T, 3C], y [B, T, C], lse [B, H, T]), which
// remain for exact fp32 mode.
//
// The kernel bodies are in flash_attention_body.h; flash_attention_emulation_test.cc runs them
// on CPU threads against the CPU engine, so their logic is tested where no GPU is present.
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

cudaError_t FlashAttentionForward(__nv_bfloat16* y, float* lse, const __nv_bfloat16* qkv, int B,
                                  int Tq, int C, int H, cudaStream_t stream);

// dqkv overwritten; `delta` is scratch of B·H·T floats.
cudaError_t FlashAttentionBackward(__nv_bfloat16* dqkv, float* delta, const __nv_bfloat16* dy,
                                   const __nv_bfloat16* qkv, const __nv_bfloat16* y,
                                   const float* lse, int B, int Tq, int C, int H,
                                   cudaStream_t stream);

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_H_
