// The three products of a dense layer (matmul.h: forward, input gradient, weight gradient) as
// column-major GEMM calls, C[m,n] = op(A)[m,k] · op(B)[k,n], for BLAS libraries that are
// column-major (cuBLAS / cuBLASLt). The engine's matrices are row-major; a row-major [r, c]
// matrix is a column-major [c, r] one, so each product is computed transposed.
//
// Pure arithmetic on shapes, shared by the CUDA backend and checked on the CPU (with
// cblas_sgemm in column-major mode) by gemm_layout_test.cc, so the mapping is tested where no
// GPU is present.
#ifndef FORGE_WORKER_ENGINE_GEMM_LAYOUT_H_
#define FORGE_WORKER_ENGINE_GEMM_LAYOUT_H_

#include <cstdint>

#include "worker/engine/matmul.h"

namespace forge::engine {

// Which of the layer's buffers feeds an operand.
enum class GemmOperand { kWeight, kInput, kOutputGrad };

struct GemmCall {
  GemmOperand a, b;        // what A and B are
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;  // of the column-major product
  int lda = 0, ldb = 0, ldc = 0;
  // Strided batch: `batch` products, operand i of product p at base + p · stride_i elements.
  int batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// `out_ld` (0: N) is the row pitch, in elements, of `out` and `dout` [M,N]: rows may be padded
// (the logits' rows are, to a multiple of 8 elements, so every row starts 16-byte aligned
// whatever the vocabulary size).
inline int OutputPitch(int out_ld, int N) { return out_ld > 0 ? out_ld : N; }

// out[M,N] = inp[M,K] · W: C is `out`.
inline GemmCall ForwardGemm(WeightLayout layout, int M, int K, int N, int out_ld = 0) {
  GemmCall g{GemmOperand::kWeight, GemmOperand::kInput};
  g.trans_a = layout == WeightLayout::kOutIn;
  g.m = N, g.n = M, g.k = K;
  g.lda = layout == WeightLayout::kInOut ? N : K;
  g.ldb = K, g.ldc = OutputPitch(out_ld, N);
  return g;
}

// dinp[M,K] = dout[M,N] · W^T (kInOut) or dout · W (kOutIn): C is `dinp`.
inline GemmCall InputGradGemm(WeightLayout layout, int M, int K, int N, int out_ld = 0) {
  GemmCall g{GemmOperand::kWeight, GemmOperand::kOutputGrad};
  g.trans_a = layout == WeightLayout::kInOut;
  g.m = K, g.n = M, g.k = N;
  g.lda = layout == WeightLayout::kInOut ? N : K;
  g.ldb = OutputPitch(out_ld, N), g.ldc = K;
  return g;
}

// dW (in W's layout) = inp^T · dout (kInOut, [K,N]) or dout^T · inp (kOutIn, [N,K]): C is dW.
inline GemmCall WeightGradGemm(WeightLayout layout, int M, int K, int N, int out_ld = 0) {
  const int ldo = OutputPitch(out_ld, N);
  GemmCall g;
  if (layout == WeightLayout::kInOut) {
    g.a = GemmOperand::kOutputGrad, g.b = GemmOperand::kInput;
    g.trans_a = false, g.trans_b = true;
    g.m = N, g.n = K, g.k = M;
    g.lda = ldo, g.ldb = K, g.ldc = N;
  } else {
    g.a = GemmOperand::kInput, g.b = GemmOperand::kOutputGrad;
    g.trans_a = false, g.trans_b = true;
    g.m = K, g.n = N, g.k = M;
    g.lda = K, g.ldb = ldo, g.ldc = K;
  }
  return g;
}

// Causal attention as batched GEMMs (the CUDA backend's tensor-core attention), for one
// sequence of T tokens at a time: the H heads are a strided batch. Per head, in the engine's
// row-major layouts (attention.h):
//   Q, K, V   [T, hs] at columns h·hs of the q | k | v thirds of qkv [T, 3C] (ld 3C)
//   Y, dY     [T, hs] at columns h·hs of y, dy [T, C] (ld C)
//   dQ, dK, dV like Q, K, V but in dqkv [T, 3C]
//   S, P, dP, dS  [T, T], row = query i, column = key j, rows ScoreLd(T) elements apart (T
//       rounded up to 8, so every row and head of a bf16 or fp32 matrix starts 16-byte
//       aligned, which cuBLASLt's tensor-core kernels need), head h at h·T·ScoreLd(T):
//       S = Q K^T (unscaled), P = causal softmax(scale · S), dP = dY V^T,
//       dS = P ∘ (dP − delta) · scale (delta_i = dY_i · Y_i), so dQ = dS K and dK = dS^T Q.
// `a`, `b` name the inputs and `out` the product. As with the dense layers, each product is
// computed transposed, as a column-major one; attention_gemm_test.cc checks them against the
// CPU engine with column-major cblas.
enum class AttentionOperand { kQ, kK, kV, kY, kDy, kS, kP, kDp, kDs, kDq, kDk, kDv };

struct AttentionGemm {
  AttentionOperand a, b, out;
  GemmCall call;
};

// The row pitch of the score-shaped matrices, in elements.
inline int ScoreLd(int T) { return (T + 7) / 8 * 8; }

namespace attention_gemm_internal {
inline AttentionGemm Make(AttentionOperand a, AttentionOperand b, AttentionOperand out,
                          bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb,
                          int ldc, int64_t stride_a, int64_t stride_b, int64_t stride_c, int H) {
  AttentionGemm g{a, b, out, {}};
  g.call.trans_a = trans_a, g.call.trans_b = trans_b;
  g.call.m = m, g.call.n = n, g.call.k = k;
  g.call.lda = lda, g.call.ldb = ldb, g.call.ldc = ldc;
  g.call.batch = H;
  g.call.stride_a = stride_a, g.call.stride_b = stride_b, g.call.stride_c = stride_c;
  return g;
}
}  // namespace attention_gemm_internal

// S = Q K^T: S^T[j,i] = sum_d K[j,d] Q[i,d].
inline AttentionGemm ScoresGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kK, AttentionOperand::kQ,
                                       AttentionOperand::kS, true, false, T, T, hs, 3 * C, 3 * C,
                                       ld, hs, hs, tt, H);
}

// Y = P V: Y^T[d,i] = sum_j V^T[d,j] P^T[j,i].
inline AttentionGemm OutputGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kV, AttentionOperand::kP,
                                       AttentionOperand::kY, false, false, hs, T, T, 3 * C, ld, C,
                                       hs, tt, hs, H);
}

// dP = dY V^T: dP^T[j,i] = sum_d V[j,d] dY[i,d].
inline AttentionGemm ProbGradGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kV, AttentionOperand::kDy,
                                       AttentionOperand::kDp, true, false, T, T, hs, 3 * C, C, ld,
                                       hs, hs, tt, H);
}

// dV = P^T dY: dV^T[d,j] = sum_i dY^T[d,i] P[i,j].
inline AttentionGemm ValueGradGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kDy, AttentionOperand::kP,
                                       AttentionOperand::kDv, false, true, hs, T, T, C, ld, 3 * C,
                                       hs, tt, hs, H);
}

// dQ = dS K: dQ^T[d,i] = sum_j K^T[d,j] dS^T[j,i].
inline AttentionGemm QueryGradGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kK, AttentionOperand::kDs,
                                       AttentionOperand::kDq, false, false, hs, T, T, 3 * C, ld,
                                       3 * C, hs, tt, hs, H);
}

// dK = dS^T Q: dK^T[d,j] = sum_i Q^T[d,i] dS[i,j].
inline AttentionGemm KeyGradGemm(int T, int C, int H) {
  const int hs = C / H;
  const int ld = ScoreLd(T);
  const int64_t tt = int64_t{T} * ld;
  return attention_gemm_internal::Make(AttentionOperand::kQ, AttentionOperand::kDs,
                                       AttentionOperand::kDk, false, true, hs, T, T, 3 * C, ld,
                                       3 * C, hs, tt, hs, H);
}

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GEMM_LAYOUT_H_
