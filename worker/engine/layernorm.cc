#include "worker/engine/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace forge::engine {
namespace {

constexpr int kRowsPerTask = 32;
constexpr int kColsPerTask = 64;

// Sum of x[0..n) with 8 interleaved partial sums combined in a fixed order: vectorisable
// without -ffast-math and the same bits on every run.
template <typename T>
T Sum(const T* x, int n) {
  T acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j];
  }
  for (; i < n; ++i) acc[i % 8] += x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

template <typename T>
void LayerNormForward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int N,
                      int C, ThreadPool& pool) {
  const int64_t tasks = (N + kRowsPerTask - 1) / kRowsPerTask;
  pool.ParallelFor(tasks, [&](int64_t task) {
    std::vector<T> centered(C);
    const int end = std::min<int>(N, (task + 1) * kRowsPerTask);
    for (int n = task * kRowsPerTask; n < end; ++n) {
      const T* x = inp + static_cast<size_t>(n) * C;
      const T m = Sum(x, C) / C;
      for (int c = 0; c < C; ++c) centered[c] = x[c] - m;
      T sq[8] = {};
      for (int c = 0; c < C; ++c) sq[c % 8] += centered[c] * centered[c];
      const T var = (((sq[0] + sq[1]) + (sq[2] + sq[3])) + ((sq[4] + sq[5]) + (sq[6] + sq[7]))) / C;
      const T s = T(1) / std::sqrt(var + T(kLayerNormEps));
      T* o = out + static_cast<size_t>(n) * C;
      for (int c = 0; c < C; ++c) o[c] = centered[c] * s * weight[c] + bias[c];
      mean[n] = m;
      rstd[n] = s;
    }
  });
}

template <typename T>
void LayerNormBackward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                       const T* mean, const T* rstd, int N, int C, ThreadPool& pool) {
  // Two kinds of task in one loop: row blocks own dinp; column blocks own dweight and dbias,
  // each column reduced over all rows in order.
  const int64_t row_tasks = (N + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t col_tasks = (C + kColsPerTask - 1) / kColsPerTask;
  pool.ParallelFor(row_tasks + col_tasks, [&](int64_t task) {
    if (task < row_tasks) {
      std::vector<T> g(C), xhat(C);
      const int end = std::min<int>(N, (task + 1) * kRowsPerTask);
      for (int n = task * kRowsPerTask; n < end; ++n) {
        const T* x = inp + static_cast<size_t>(n) * C;
        const T* dy = dout + static_cast<size_t>(n) * C;
        for (int c = 0; c < C; ++c) {
          xhat[c] = (x[c] - mean[n]) * rstd[n];
          g[c] = dy[c] * weight[c];
        }
        const T g_mean = Sum(g.data(), C) / C;
        T gx[8] = {};
        for (int c = 0; c < C; ++c) gx[c % 8] += g[c] * xhat[c];
        const T gx_mean =
            (((gx[0] + gx[1]) + (gx[2] + gx[3])) + ((gx[4] + gx[5]) + (gx[6] + gx[7]))) / C;
        T* dx = dinp + static_cast<size_t>(n) * C;
        for (int c = 0; c < C; ++c) dx[c] += (g[c] - g_mean - xhat[c] * gx_mean) * rstd[n];
      }
      return;
    }
    const int c0 = (task - row_tasks) * kColsPerTask, c1 = std::min(C, c0 + kColsPerTask);
    std::vector<T> dw(c1 - c0, T(0)), db(c1 - c0, T(0));
    for (int n = 0; n < N; ++n) {
      const T* x = inp + static_cast<size_t>(n) * C;
      const T* dy = dout + static_cast<size_t>(n) * C;
      const T m = mean[n], s = rstd[n];
      for (int c = c0; c < c1; ++c) {
        dw[c - c0] += dy[c] * ((x[c] - m) * s);
        db[c - c0] += dy[c];
      }
    }
    for (int c = c0; c < c1; ++c) {
      dweight[c] += dw[c - c0];
      dbias[c] += db[c - c0];
    }
  });
}

template void LayerNormForward<float>(float*, float*, float*, const float*, const float*,
                                      const float*, int, int, ThreadPool&);
template void LayerNormForward<double>(double*, double*, double*, const double*, const double*,
                                       const double*, int, int, ThreadPool&);
template void LayerNormBackward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, const float*, const float*, int, int,
                                       ThreadPool&);
template void LayerNormBackward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, const double*, const double*, int, int,
                                        ThreadPool&);

}  // namespace forge::engine
