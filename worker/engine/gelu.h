// GELU with GPT-2's tanh approximation:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Elementwise over n values; deterministic at any thread count.
#ifndef FORGE_WORKER_ENGINE_GELU_H_
#define FORGE_WORKER_ENGINE_GELU_H_

#include <cstddef>

#include "worker/engine/thread_pool.h"

namespace forge::engine {

// out[i] = gelu(inp[i]). out may equal inp.
template <typename T>
void GeluForward(T* out, const T* inp, size_t n, ThreadPool& pool);

// dinp[i] = gelu'(inp[i]) · dout[i] (overwritten). dinp may equal dout.
template <typename T>
void GeluBackward(T* dinp, const T* inp, const T* dout, size_t n, ThreadPool& pool);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GELU_H_
