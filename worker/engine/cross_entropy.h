// Softmax cross-entropy over a vocabulary of V classes, row-major [N, V] logits.
// Targets < 0 are ignored (no loss, zero gradient). Deterministic at any thread count.
#ifndef FORGE_WORKER_ENGINE_CROSS_ENTROPY_H_
#define FORGE_WORKER_ENGINE_CROSS_ENTROPY_H_

#include <cstdint>

#include "worker/engine/thread_pool.h"

namespace forge::engine {

// losses[n] = logsumexp(logits[n]) - logits[n][targets[n]], or 0 where targets[n] < 0.
// REQUIRES: targets[n] < V.
template <typename T>
void CrossEntropyForward(T* losses, const T* logits, const int32_t* targets, int N, int V,
                         ThreadPool& pool);

// dlogits[n] = scale · (softmax(logits[n]) - onehot(targets[n])), zero rows where
// targets[n] < 0. For the mean over valid tokens pass scale = 1 / (their count).
// dlogits may equal logits (computed in place, row by row).
template <typename T>
void CrossEntropyBackward(T* dlogits, const T* logits, const int32_t* targets, T scale, int N,
                          int V, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_CROSS_ENTROPY_H_
