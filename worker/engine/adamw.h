// AdamW (Loshchilov & Hutter) over a flat fp32 parameter buffer, with fp32 moments, bias
// correction and decoupled weight decay on the 2-D tensors only (IsDecayed):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr · (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd · p)   (wd only if decayed)
// Elementwise, so the bits are the same at any thread count.
// Thread safety: owned by one thread.
#ifndef FORGE_WORKER_ENGINE_ADAMW_H_
#define FORGE_WORKER_ENGINE_ADAMW_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "worker/engine/param_info.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;  // GPT-2 / nanoGPT
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  // `params` describes the buffer Step will update (Gpt::Parameters()); m and v start at 0.
  AdamW(absl::Span<const ParamInfo> params, const AdamWOptions& options);

  // One update with learning rate `lr`: advances step() to t = step() + 1 and uses t for the
  // bias correction. `params` and `grads` hold num_params() values each.
  void Step(float* params, const float* grads, float lr, ThreadPool& pool);

  size_t num_params() const { return m_.size(); }
  // Updates done so far; with m and v, the whole state a checkpoint must save and restore.
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }
  float* m() { return m_.data(); }
  float* v() { return v_.data(); }
  const float* m() const { return m_.data(); }
  const float* v() const { return v_.data(); }
  const AdamWOptions& options() const { return options_; }

 private:
  struct Chunk {  // a piece of one tensor: the unit of parallel work
    size_t offset, count;
    bool decay;
  };

  AdamWOptions options_;
  std::vector<Chunk> chunks_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_ADAMW_H_
