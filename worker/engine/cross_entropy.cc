#include "worker/engine/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "worker/engine/fast_math.h"

namespace forge::engine {
namespace {

constexpr int kRowsPerTask = 8;

template <typename T>
T Max(const T* x, int V) {
  T max = x[0];
  for (int j = 1; j < V; ++j) max = std::max(max, x[j]);
  return max;
}

}  // namespace

template <typename T>
void CrossEntropyForward(T* losses, const T* logits, const int32_t* targets, int N, int V,
                         ThreadPool& pool) {
  pool.ParallelFor((N + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int end = std::min<int>(N, (task + 1) * kRowsPerTask);
    std::vector<T> row(V);
    for (int n = task * kRowsPerTask; n < end; ++n) {
      if (targets[n] < 0) {
        losses[n] = T(0);
        continue;
      }
      const T* x = logits + static_cast<size_t>(n) * V;
      const T max = Max(x, V);
      std::copy(x, x + V, row.begin());
      const T sum = ExpShiftedSum(row.data(), V, max);
      losses[n] = std::log(sum) + max - x[targets[n]];
    }
  });
}

template <typename T>
void CrossEntropyBackward(T* dlogits, const T* logits, const int32_t* targets, T scale, int N,
                          int V, ThreadPool& pool) {
  pool.ParallelFor((N + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int end = std::min<int>(N, (task + 1) * kRowsPerTask);
    for (int n = task * kRowsPerTask; n < end; ++n) {
      const T* x = logits + static_cast<size_t>(n) * V;
      T* d = dlogits + static_cast<size_t>(n) * V;
      if (targets[n] < 0) {
        std::fill(d, d + V, T(0));
        continue;
      }
      const T max = Max(x, V);
      if (d != x) std::copy(x, x + V, d);
      const T f = scale / ExpShiftedSum(d, V, max);
      for (int j = 0; j < V; ++j) d[j] *= f;
      d[targets[n]] -= scale;
    }
  });
}

template void CrossEntropyForward<float>(float*, const float*, const int32_t*, int, int,
                                         ThreadPool&);
template void CrossEntropyForward<double>(double*, const double*, const int32_t*, int, int,
                                          ThreadPool&);
template void CrossEntropyBackward<float>(float*, const float*, const int32_t*, float, int, int,
                                          ThreadPool&);
template void CrossEntropyBackward<double>(double*, const double*, const int32_t*, double, int, int,
                                           ThreadPool&);

}  // namespace forge::engine
