#include "worker/engine/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace forge::engine {
namespace {

constexpr size_t kChunk = 1 << 16;

}  // namespace

double GlobalNorm(const float* grads, size_t n, ThreadPool& pool) {
  std::vector<double> partial((n + kChunk - 1) / kChunk, 0.0);
  pool.ParallelFor(partial.size(), [&](int64_t task) {
    const size_t end = std::min(n, (task + 1) * kChunk);
    double acc[4] = {};
    size_t i = task * kChunk;
    for (; i + 4 <= end; i += 4) {
      for (int j = 0; j < 4; ++j) acc[j] += double{grads[i + j]} * grads[i + j];
    }
    for (; i < end; ++i) acc[0] += double{grads[i]} * grads[i];
    partial[task] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  });
  double sum = 0;
  for (double p : partial) sum += p;
  return std::sqrt(sum);
}

void ScaleGrads(float* grads, size_t n, float factor, ThreadPool& pool) {
  pool.ParallelFor((n + kChunk - 1) / kChunk, [&](int64_t task) {
    const size_t end = std::min(n, (task + 1) * kChunk);
    for (size_t i = task * kChunk; i < end; ++i) grads[i] *= factor;
  });
}

double ClipGradNorm(float* grads, size_t n, double max_norm, ThreadPool& pool) {
  const double norm = GlobalNorm(grads, n, pool);
  if (max_norm > 0 && norm > max_norm) {
    ScaleGrads(grads, n, static_cast<float>(max_norm / norm), pool);
  }
  return norm;
}

}  // namespace forge::engine
