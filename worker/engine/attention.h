// Causal multi-head self-attention (the part between c_attn and c_proj):
//   per head h: y = softmax(q k^T / sqrt(hs), causal) v, heads concatenated.
// Layouts, row-major: qkv [B, T, 3C] with each token's q | k | v, head h at columns
// [h·hs, (h+1)·hs) of each third (hs = C / H); y [B, T, C]; att [B, H, T, T] the
// probabilities (row t holds keys 0..t, zeros after). One task per (b, h), each owning its
// outputs, so the bits are the same at any thread count.
#ifndef FORGE_WORKER_ENGINE_ATTENTION_H_
#define FORGE_WORKER_ENGINE_ATTENTION_H_

#include "worker/engine/thread_pool.h"

namespace forge::engine {

// Writes y and att. REQUIRES: H divides C.
template <typename T>
void AttentionForward(T* y, T* att, const T* qkv, int B, int T_, int C, int H, ThreadPool& pool);

// Given dy [B, T, C]: dqkv [B, T, 3C] = dLoss/dqkv (overwritten). `scratch` holds
// B·H·T·T values (its contents are garbage after). qkv and att as the forward left them.
template <typename T>
void AttentionBackward(T* dqkv, T* scratch, const T* dy, const T* qkv, const T* att, int B, int T_,
                       int C, int H, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_ATTENTION_H_
