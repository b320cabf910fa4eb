// Global-norm gradient clipping and scaling over a flat fp32 gradient buffer. The norm is
// summed in double over fixed 64 Ki-element chunks, then over the chunks in order, so it is
// the same bits at any thread count.
#ifndef FORGE_WORKER_ENGINE_GRAD_CLIP_H_
#define FORGE_WORKER_ENGINE_GRAD_CLIP_H_

#include <cstddef>

#include "worker/engine/thread_pool.h"

namespace forge::engine {

// The L2 norm of grads[0..n).
double GlobalNorm(const float* grads, size_t n, ThreadPool& pool);

// Returns the norm before clipping; when max_norm > 0 and the norm exceeds it, scales grads
// by max_norm / norm. max_norm <= 0 turns clipping off.
double ClipGradNorm(float* grads, size_t n, double max_norm, ThreadPool& pool);

// grads[i] *= factor, e.g. 1 / micro-batches after gradient accumulation.
void ScaleGrads(float* grads, size_t n, float factor, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GRAD_CLIP_H_
