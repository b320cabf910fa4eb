// LayerNorm over the last dimension: out = (x - mean) / sqrt(var + 1e-5) · weight + bias,
// with the biased variance, like torch.nn.LayerNorm and GPT-2. Rows are [N, C], row-major.
// Deterministic at any thread count (each output is computed by one task in a fixed order).
#ifndef FORGE_WORKER_ENGINE_LAYERNORM_H_
#define FORGE_WORKER_ENGINE_LAYERNORM_H_

#include "worker/engine/thread_pool.h"

namespace forge::engine {

inline constexpr double kLayerNormEps = 1e-5;

// out[N,C] = LayerNorm(inp); saves mean[N] and rstd[N] (1 / sqrt(var + eps)) for the backward.
template <typename T>
void LayerNormForward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int N,
                      int C, ThreadPool& pool);

// Given dout[N,C]: dinp += dLoss/dinp (accumulated, so the residual stream's gradient can be
// passed straight in), dweight[C] += and dbias[C] +=. `mean`, `rstd` from the forward.
// dinp must not overlap dout.
template <typename T>
void LayerNormBackward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                       const T* mean, const T* rstd, int N, int C, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_LAYERNORM_H_
