// The GPT model's own CUDA kernels (everything but the matmuls, which are cuBLASLt's), as
// host-callable launchers that enqueue on `stream` and return the launch error.
//
// T is the activation type: float (exact mode: tests compare it with the CPU engine at fp32
// tolerance) or __nv_bfloat16 (training: bf16 storage, fp32 arithmetic). Parameters,
// gradients, LayerNorm statistics, losses and the attention log-sum-exp are always fp32.
// Layouts are the CPU engine's (row-major; see worker/engine/*.h for each op's maths).
//
// Determinism: no kernel uses atomics or depends on scheduling order. Every reduction has one
// owner that sums in a fixed order (a warp butterfly, a block tree of fixed shape, or a
// sequential loop), and multi-stage reductions use a fixed number of partials that depends on
// the shapes only. So the same inputs give the same bits on the same GPU model, every run.
#ifndef FORGE_WORKER_CUDA_KERNELS_H_
#define FORGE_WORKER_CUDA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace forge::cuda {

using bf16 = __nv_bfloat16;

// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:].
template <typename T>
cudaError_t EmbeddingForward(T* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int Tq, int C, cudaStream_t stream);

// dwte[token,:] += the sum of dx over the positions holding `token`, in increasing position
// order. The positions come grouped by token (built on the host from the batch's tokens):
// bucket i holds positions order[start[i] .. start[i+1]) of token bucket_token[i].
template <typename T>
cudaError_t EmbeddingBackwardWte(float* dwte, const T* dx, const int32_t* order,
                                 const int32_t* start, const int32_t* bucket_token, int buckets,
                                 int C, cudaStream_t stream);

// dwpe[t,:] += sum over b (in order) of dx[b,t,:].
template <typename T>
cudaError_t EmbeddingBackwardWpe(float* dwpe, const T* dx, int B, int Tq, int C,
                                 cudaStream_t stream);

// LayerNorm over rows of C (eps 1e-5, biased variance); saves mean and rstd.
template <typename T>
cudaError_t LayerNormForward(T* out, float* mean, float* rstd, const T* inp, const float* weight,
                             const float* bias, int N, int C, cudaStream_t stream);

// Floats of scratch LayerNormBackward and BiasGrad need for N rows of C.
size_t ColumnReduceScratchFloats(int N, int C);

// dinp += dLoss/dinp (accumulates); dweight += and dbias += (two stages through `scratch`).
// Up to 65535 · 32 rows (cudaErrorInvalidValue past that; 2 million rows, far past a batch).
// With rows, weight and dinp in 16-byte packs and C up to 128 packs (1024 bf16, 512 fp32), one
// kernel reads dout and inp once for all three gradients; otherwise they are read twice.
template <typename T>
cudaError_t LayerNormBackward(T* dinp, float* dweight, float* dbias, float* scratch,
                              const T* dout, const T* inp, const float* weight, const float* mean,
                              const float* rstd, int N, int C, cudaStream_t stream);

// dbias[c] += sum over rows n of dout[n, c]; rows as LayerNormBackward.
template <typename T>
cudaError_t BiasGrad(float* dbias, float* scratch, const T* dout, int N, int C,
                     cudaStream_t stream);

// GELU (tanh approximation). out may equal inp; dinp may equal dout.
template <typename T>
cudaError_t GeluForward(T* out, const T* inp, size_t n, cudaStream_t stream);
template <typename T>
cudaError_t GeluBackward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t stream);

// Head sizes the attention kernels are built for.
bool AttentionHeadSizeSupported(int head_size);

// Causal self-attention, fused (flash-attention style: tiles of keys in shared memory, online
// softmax; no T x T matrix in global memory). qkv [B, T, 3C]; y [B, T, C]; lse [B, H, T] the
// log-sum-exp of each query's scaled scores, saved for the backward. B·H is at most 65535
// (the grid's y dimension; cudaErrorInvalidValue beyond), as for AttentionBackward.
template <typename T>
cudaError_t AttentionForward(T* y, float* lse, const T* qkv, int B, int Tq, int C, int H,
                             cudaStream_t stream);

// dqkv [B, T, 3C] (overwritten) from dy; `delta` is scratch of B·H·T floats. Two kernels, one
// owning each query's dq and one owning each key's dk and dv, so no gradient is accumulated
// by more than one thread group.
template <typename T>
cudaError_t AttentionBackward(T* dqkv, float* delta, const T* dy, const T* qkv, const T* y,
                              const float* lse, int B, int Tq, int C, int H, cudaStream_t stream);

// delta[b, h, i] = dy_i · y_i over the head (the softmax backward's row sums); B·H·T floats.
template <typename T>
cudaError_t AttentionDelta(float* delta, const T* dy, const T* y, int B, int Tq, int C, int H,
                           cudaStream_t stream);

// The softmax steps of the GEMM attention (attention_gemm.h), over `rows` rows of T scores
// `ld` elements apart (one sequence's [H, T, T]: row r is query r % T; the padding past T is
// not touched). Forward: lse[r] = log sum_{j <= i} exp(scale · s[r, j]),
// probs[r, j] = exp(scale · s[r, j] − lse[r]) for j <= i, 0 after.
template <typename T>
cudaError_t AttentionSoftmax(T* probs, float* lse, const float* scores, int rows, int Tq, int ld,
                             float scale, cudaStream_t stream);
// Backward: probs recomputed as above from the scores and lse, and
// dscores = probs · (dprobs − delta[r]) · scale (0 where masked).
template <typename T>
cudaError_t AttentionSoftmaxBackward(T* probs, T* dscores, const float* scores,
                                     const float* dprobs, const float* lse, const float* delta,
                                     int rows, int Tq, int ld, float scale, cudaStream_t stream);

// Softmax cross-entropy over rows of V logits, `ld` (>= V) elements apart: losses[n] (0 where
// targets[n] < 0). When dlogits is not null it also writes scale · (softmax - onehot) there, at
// the same pitch (zero rows for ignored targets; the padding past V is left alone); dlogits
// may equal logits. Rows that fit 8 16-byte packs a thread of a 1024-thread block (65536 bf16
// or 32768 fp32 entries) with a pitch and pointers 16-byte aligned are read from memory once
// (the pack that straddles V whole, so the buffers must hold N · ld entries, the last row's
// padding included); others twice. A NaN logit makes its row's loss and gradient NaN.
template <typename T>
cudaError_t CrossEntropy(float* losses, T* dlogits, const T* logits, const int32_t* targets,
                         float scale, int N, int V, int ld, cudaStream_t stream);

// CrossEntropy on the kernel that reads each row twice (the one CrossEntropy takes for rows
// too long to hold or unaligned), whatever the row: for the kernel benchmark and the tests.
template <typename T>
cudaError_t CrossEntropyStreaming(float* losses, T* dlogits, const T* logits,
                                  const int32_t* targets, float scale, int N, int V, int ld,
                                  cudaStream_t stream);

// Doubles of scratch GradNorm needs for n gradients.
size_t GradNormScratchDoubles(size_t n);

// norm_out[0] = || grad_scale · grads ||_2 (summed in double, fixed order);
// norm_out[1] = the factor to multiply raw gradients by: grad_scale, times
// max_norm / norm when max_norm > 0 and the norm exceeds it.
cudaError_t GradNorm(float* norm_out, double* scratch, const float* grads, size_t n,
                     float grad_scale, float max_norm, cudaStream_t stream);

// One AdamW update of params[0..n) (fp32 master) with gradient grads · (*grad_factor), which
// is written back to grads (scaled and clipped, as the CPU engine leaves them); lowp (may be
// null) receives the updated parameters converted to T. c1 = 1 / (1 - b1^t),
// c2 = 1 / (1 - b2^t); weight decay wd (0 for tensors that are not decayed).
template <typename T>
cudaError_t AdamWUpdate(float* params, T* lowp, float* grads, float* m, float* v, size_t n,
                        const float* grad_factor, float lr, float b1, float b2, float eps,
                        float wd, float c1, float c2, cudaStream_t stream);

// Where a span of the parameter buffer begins, and the weight decay of its entries.
struct DecaySpan {
  size_t begin;
  float weight_decay;
};
// Spans per kernel launch of AdamWUpdateSpans (they travel as a kernel parameter).
inline constexpr int kMaxDecaySpansPerLaunch = 200;

// AdamWUpdate over params[0..n) with each entry's weight decay from the span it lies in:
// spans[r] covers [spans[r].begin, spans[r + 1].begin) (the last up to n); begins start at 0
// and do not decrease (an empty span is allowed), else cudaErrorInvalidValue before anything
// runs. One launch per kMaxDecaySpansPerLaunch spans, instead of one per span: the GPT model's
// decayed weights and undecayed biases and LayerNorm parameters alternate (~8 spans a layer).
// `spans` is host memory. The same bits as AdamWUpdate run span by span.
template <typename T>
cudaError_t AdamWUpdateSpans(float* params, T* lowp, float* grads, float* m, float* v, size_t n,
                             const DecaySpan* spans, int num_spans, const float* grad_factor,
                             float lr, float b1, float b2, float eps, float c1, float c2,
                             cudaStream_t stream);

// out[i] = T(in[i]).
template <typename T>
cudaError_t CastFromFloat(T* out, const float* in, size_t n, cudaStream_t stream);

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_KERNELS_H_
