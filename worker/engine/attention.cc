#include "worker/engine/attention.h"

#include <algorithm>
#include <cmath>

#include "worker/engine/fast_math.h"
#include "worker/engine/matmul.h"

namespace forge::engine {
namespace {

// Queries go in blocks of this many rows, each against keys 0..block end only, so the score
// and value products skip most of the masked upper triangle.
constexpr int kBlock = 64;

template <typename T>
T Dot(const T* x, const T* y, int n) {
  T acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * y[i + j];
  }
  for (; i < n; ++i) acc[i % 8] += x[i] * y[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

template <typename T>
void AttentionForward(T* y, T* att, const T* qkv, int B, int T_, int C, int H, ThreadPool& pool) {
  const int hs = C / H, C3 = 3 * C;
  const T scale = T(1) / std::sqrt(T(hs));
  pool.ParallelFor(static_cast<int64_t>(B) * H, [&](int64_t task) {
    const int b = task / H, h = task % H;
    const T* q = qkv + static_cast<size_t>(b) * T_ * C3 + h * hs;
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* p = att + static_cast<size_t>(task) * T_ * T_;
    T* yb = y + static_cast<size_t>(b) * T_ * C + h * hs;
    for (int r0 = 0; r0 < T_; r0 += kBlock) {
      const int r1 = std::min(T_, r0 + kBlock);
      Gemm<T>(false, true, r1 - r0, r1, hs, scale, q + static_cast<size_t>(r0) * C3, C3, k, C3,
              T(0), p + static_cast<size_t>(r0) * T_, T_);
      for (int t = r0; t < r1; ++t) {
        T* row = p + static_cast<size_t>(t) * T_;
        T max = row[0];
        for (int j = 1; j <= t; ++j) max = std::max(max, row[j]);
        const T inv = T(1) / ExpShiftedSum(row, t + 1, max);
        for (int j = 0; j <= t; ++j) row[j] *= inv;
        std::fill(row + t + 1, row + T_, T(0));
      }
      Gemm<T>(false, false, r1 - r0, hs, r1, T(1), p + static_cast<size_t>(r0) * T_, T_, v, C3,
              T(0), yb + static_cast<size_t>(r0) * C, C);
    }
  });
}

template <typename T>
void AttentionBackward(T* dqkv, T* scratch, const T* dy, const T* qkv, const T* att, int B, int T_,
                       int C, int H, ThreadPool& pool) {
  const int hs = C / H, C3 = 3 * C;
  const T scale = T(1) / std::sqrt(T(hs));
  pool.ParallelFor(static_cast<int64_t>(B) * H, [&](int64_t task) {
    const int b = task / H, h = task % H;
    const size_t qkv_offset = static_cast<size_t>(b) * T_ * C3 + h * hs;
    const T* q = qkv + qkv_offset;
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* dq = dqkv + qkv_offset;
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    const T* p = att + static_cast<size_t>(task) * T_ * T_;
    T* ds = scratch + static_cast<size_t>(task) * T_ * T_;
    const T* dyb = dy + static_cast<size_t>(b) * T_ * C + h * hs;
    // dP = dy v^T, then dScores = P ⊙ (dP - rowsum(P ⊙ dP)) · scale, lower triangle only.
    for (int r0 = 0; r0 < T_; r0 += kBlock) {
      const int r1 = std::min(T_, r0 + kBlock);
      Gemm<T>(false, true, r1 - r0, r1, hs, T(1), dyb + static_cast<size_t>(r0) * C, C, v, C3, T(0),
              ds + static_cast<size_t>(r0) * T_, T_);
      for (int t = r0; t < r1; ++t) {
        const T* prow = p + static_cast<size_t>(t) * T_;
        T* row = ds + static_cast<size_t>(t) * T_;
        const T dot = Dot(prow, row, t + 1);
        for (int j = 0; j <= t; ++j) row[j] = prow[j] * (row[j] - dot) * scale;
        std::fill(row + t + 1, row + T_, T(0));
      }
    }
    for (int r0 = 0; r0 < T_; r0 += kBlock) {
      const int r1 = std::min(T_, r0 + kBlock), n = r1 - r0;
      const size_t off = static_cast<size_t>(r0);
      // Rows r0..r1 of dq need keys 0..r1; rows r0..r1 of dk and dv get contributions from
      // queries r0..T.
      Gemm<T>(false, false, n, hs, r1, T(1), ds + off * T_, T_, k, C3, T(0), dq + off * C3, C3);
      Gemm<T>(true, false, n, hs, T_ - r0, T(1), ds + off * T_ + r0, T_, q + off * C3, C3, T(0),
              dk + off * C3, C3);
      Gemm<T>(true, false, n, hs, T_ - r0, T(1), p + off * T_ + r0, T_, dyb + off * C, C, T(0),
              dv + off * C3, C3);
    }
  });
}

template void AttentionForward<float>(float*, float*, const float*, int, int, int, int,
                                      ThreadPool&);
template void AttentionForward<double>(double*, double*, const double*, int, int, int, int,
                                       ThreadPool&);
template void AttentionBackward<float>(float*, float*, const float*, const float*, const float*,
                                       int, int, int, int, ThreadPool&);
template void AttentionBackward<double>(double*, double*, const double*, const double*,
                                        const double*, int, int, int, int, ThreadPool&);

}  // namespace forge::engine
