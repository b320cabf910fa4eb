// The dense layers: out = inp · W + bias (+ residual), forward and backward, on OpenBLAS.
//
// Every product is cut into a fixed grid of output tiles that depends on the shapes only, and
// each tile is one single-threaded BLAS call whose whole inner (K) reduction it owns; the pool
// only decides which thread runs which tile. So the bits are the same at any thread count.
// (OpenBLAS's own threading is not used: it splits by thread count, and measured here one
// vs two OpenBLAS threads change 2-7% of the output bits of these products.)
// Matrices are row-major. T is float (training) or double (gradient checks).
#ifndef FORGE_WORKER_ENGINE_MATMUL_H_
#define FORGE_WORKER_ENGINE_MATMUL_H_

#include "worker/engine/thread_pool.h"

namespace forge::engine {

// How a weight matrix mapping K inputs to N outputs is stored.
enum class WeightLayout {
  kInOut,  // [K, N]: Hugging Face Conv1D (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)
  kOutIn,  // [N, K]: the token embedding wte [V, C] reused as the output head
};

// Makes OpenBLAS compute on the calling thread only (the engine parallelises above it).
// Process-wide; idempotent; the Gpt constructor calls it.
void UseSingleThreadedBlas();

// C[m,n] = alpha · op(A) · op(B) + beta · C on the calling thread (cblas_sgemm or
// cblas_dgemm). op(A) is [m,k]; lda, ldb, ldc are row strides in elements.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
          int ldb, T beta, T* c, int ldc);

// out[M,N] = inp[M,K] · W + bias[N] + residual[M,N]. `bias` and `residual` may be null;
// `residual` must not overlap `out`.
template <typename T>
void MatmulForward(T* out, const T* inp, const T* weight, WeightLayout layout, const T* bias,
                   const T* residual, int M, int K, int N, ThreadPool& pool);

// Backward of MatmulForward given dout = dLoss/dout [M,N]:
//   dinp[M,K]  = dout · W^T        (overwritten; skipped when dinp is null)
//   dweight   += dLoss/dW          (same layout as `weight`)
//   dbias[N]  += column sums of dout (skipped when dbias is null; must be null for kOutIn)
// dinp must not overlap dout, inp or weight.
template <typename T>
void MatmulBackward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                    WeightLayout layout, int M, int K, int N, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_MATMUL_H_
