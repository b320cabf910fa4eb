#include "worker/engine/adamw.h"

#include <algorithm>
#include <cmath>

namespace forge::engine {
namespace {

constexpr size_t kChunk = 1 << 16;

// Scalars by value and restrict-qualified arrays, so the loop vectorises (with
// -fno-math-errno for the square root; see CMakeLists.txt), 8 lanes wide in the AVX2 clone.
// Every operation is an IEEE one (no fused multiply-add in either clone), so both give the
// same bits. Tiny preset, 1 thread: clip + AdamW 3.6 -> 2.8 ms of a 240 ms step.
__attribute__((target_clones("avx2", "default"))) void UpdateChunk(
    float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
    size_t n, float lr, float wd, float b1, float b2, float eps, float c1, float c2) {
  for (size_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float update = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    p[i] -= lr * (update + wd * p[i]);
  }
}

}  // namespace

AdamW::AdamW(absl::Span<const ParamInfo> params, const AdamWOptions& options) : options_(options) {
  size_t total = 0;
  for (const ParamInfo& p : params) {
    for (size_t i = 0; i < p.count; i += kChunk) {
      chunks_.push_back({p.offset + i, std::min(kChunk, p.count - i), IsDecayed(p)});
    }
    total = std::max(total, p.offset + p.count);
  }
  m_.assign(total, 0.0f);
  v_.assign(total, 0.0f);
}

void AdamW::Step(float* params, const float* grads, float lr, ThreadPool& pool) {
  ++step_;
  const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
  const float c1 = 1.0f / (1.0f - static_cast<float>(std::pow(double{b1}, double(step_))));
  const float c2 = 1.0f / (1.0f - static_cast<float>(std::pow(double{b2}, double(step_))));
  pool.ParallelFor(chunks_.size(), [&](int64_t task) {
    const Chunk& chunk = chunks_[task];
    UpdateChunk(params + chunk.offset, grads + chunk.offset, m_.data() + chunk.offset,
                v_.data() + chunk.offset, chunk.count, lr,
                chunk.decay ? options_.weight_decay : 0.0f, b1, b2, eps, c1, c2);
  });
}

}  // namespace forge::engine
