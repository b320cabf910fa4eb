// Causal self-attention on the tensor cores (in bf16; exact fp32 mode runs the same products
// without them): each sequence's H heads go through cuBLASLt as strided batches of products
// (gemm_layout.h: S = Q K^T, Y = P V, and the backward's dP, dV, dQ, dK), with the softmax
// steps in our kernels (kernels.h: AttentionSoftmax*). Scores are
// fp32; probabilities and score gradients are in the activation type (bf16 in training). The
// backward recomputes S from Q and K and the saved log-sum-exp rather than keeping P.
//
// The price is a scratch of [H, T, T] matrices (ScratchBytes) and the masked upper triangle
// being computed and thrown away; for long contexts, where that scratch does not fit, the
// backend uses the fused kernels (kernels.h: AttentionForward), which keep no T x T matrix.
// Results match the fused kernels' contract: same y, lse [B, H, T] and dqkv.
//
// Thread safety: owned by one thread (the backend's), like the Matmul it uses.
#ifndef FORGE_WORKER_CUDA_ATTENTION_GEMM_H_
#define FORGE_WORKER_CUDA_ATTENTION_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/gemm.h"
#include "worker/engine/gemm_layout.h"

namespace forge::cuda {

template <typename T>
class GemmAttention {
 public:
  // Device bytes of scratch for H heads and sequences of up to max_seq tokens.
  static size_t ScratchBytes(int H, int max_seq);

  // `matmul` is not owned and must outlive this.
  static absl::StatusOr<std::unique_ptr<GemmAttention>> Create(Matmul* matmul, int H, int max_seq);

  // y [B, T, C], lse [B, H, T] from qkv [B, T, 3C] (the layouts of kernels.h).
  absl::Status Forward(T* y, float* lse, const T* qkv, int B, int Tq, int C, int H,
                       cudaStream_t stream);
  // dqkv [B, T, 3C] (overwritten); delta is scratch of B·H·T floats.
  absl::Status Backward(T* dqkv, float* delta, const T* dy, const T* qkv, const T* y,
                        const float* lse, int B, int Tq, int C, int H, cudaStream_t stream);

 private:
  GemmAttention(Matmul* matmul, int H, int max_seq) : matmul_(matmul), H_(H), max_seq_(max_seq) {}
  absl::Status CheckShape(int Tq, int C, int H) const;
  // Runs one product of gemm_layout.h for one sequence (null where the product has no use).
  absl::Status Run(const engine::AttentionGemm& g, const void* qkv, const void* dy, void* y,
                   void* dqkv, int C, cudaStream_t stream);

  Matmul* const matmul_;
  const int H_, max_seq_;
  DeviceBuffer<char> scratch_;
  // Regions of scratch_: scores and their gradient (fp32), probabilities and score
  // gradients (T); each [H, Tq, Tq] for the call's Tq.
  float *s_ = nullptr, *dp_ = nullptr;
  T *p_ = nullptr, *ds_ = nullptr;
};

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_ATTENTION_GEMM_H_
