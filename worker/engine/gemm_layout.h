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

#include "worker/engine/matmul.h"

namespace forge::engine {

// Which of the layer's buffers feeds an operand.
enum class GemmOperand { kWeight, kInput, kOutputGrad };

struct GemmCall {
  GemmOperand a, b;        // what A and B are
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;  // of the column-major product
  int lda = 0, ldb = 0, ldc = 0;
};

// out[M,N] = inp[M,K] · W: C is `out`.
inline GemmCall ForwardGemm(WeightLayout layout, int M, int K, int N) {
  GemmCall g{GemmOperand::kWeight, GemmOperand::kInput};
  g.trans_a = layout == WeightLayout::kOutIn;
  g.m = N, g.n = M, g.k = K;
  g.lda = layout == WeightLayout::kInOut ? N : K;
  g.ldb = K, g.ldc = N;
  return g;
}

// dinp[M,K] = dout[M,N] · W^T (kInOut) or dout · W (kOutIn): C is `dinp`.
inline GemmCall InputGradGemm(WeightLayout layout, int M, int K, int N) {
  GemmCall g{GemmOperand::kWeight, GemmOperand::kOutputGrad};
  g.trans_a = layout == WeightLayout::kInOut;
  g.m = K, g.n = M, g.k = N;
  g.lda = layout == WeightLayout::kInOut ? N : K;
  g.ldb = N, g.ldc = K;
  return g;
}

// dW (in W's layout) = inp^T · dout (kInOut, [K,N]) or dout^T · inp (kOutIn, [N,K]): C is dW.
inline GemmCall WeightGradGemm(WeightLayout layout, int M, int K, int N) {
  GemmCall g;
  if (layout == WeightLayout::kInOut) {
    g.a = GemmOperand::kOutputGrad, g.b = GemmOperand::kInput;
    g.trans_a = false, g.trans_b = true;
    g.m = N, g.n = K, g.k = M;
    g.lda = N, g.ldb = K, g.ldc = N;
  } else {
    g.a = GemmOperand::kInput, g.b = GemmOperand::kOutputGrad;
    g.trans_a = false, g.trans_b = true;
    g.m = K, g.n = N, g.k = M;
    g.lda = K, g.ldb = N, g.ldc = K;
  }
  return g;
}

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GEMM_LAYOUT_H_
