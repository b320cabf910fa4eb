#include "worker/engine/gelu.h"

#include <algorithm>

#include "worker/engine/fast_math.h"

namespace forge::engine {
namespace {

constexpr size_t kChunk = 16384;
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kCubic = 0.044715;

// Written once for a scalar T or a vector V of T (fast_math.h VecTraits).
template <typename T, typename V>
V Gelu(V x) {
  const V t = Tanh(T(kSqrt2OverPi) * (x + T(kCubic) * x * x * x));
  return T(0.5) * x * (T(1) + t);
}

template <typename T, typename V>
V GeluGrad(V x) {
  const V t = Tanh(T(kSqrt2OverPi) * (x + T(kCubic) * x * x * x));
  const V dt = T(kSqrt2OverPi) * (T(1) + T(3 * kCubic) * x * x);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dt;
}

}  // namespace

template <typename T>
void GeluForward(T* out, const T* inp, size_t n, ThreadPool& pool) {
  using V = VecTraits<T>;
  pool.ParallelFor((n + kChunk - 1) / kChunk, [&](int64_t task) {
    const size_t end = std::min(n, (task + 1) * kChunk);
    size_t i = task * kChunk;
    for (; i + V::kLanes <= end; i += V::kLanes) {
      V::Store(out + i, Gelu<T>(V::Load(inp + i)));
    }
    for (; i < end; ++i) out[i] = Gelu<T>(inp[i]);
  });
}

template <typename T>
void GeluBackward(T* dinp, const T* inp, const T* dout, size_t n, ThreadPool& pool) {
  using V = VecTraits<T>;
  pool.ParallelFor((n + kChunk - 1) / kChunk, [&](int64_t task) {
    const size_t end = std::min(n, (task + 1) * kChunk);
    size_t i = task * kChunk;
    for (; i + V::kLanes <= end; i += V::kLanes) {
      V::Store(dinp + i, GeluGrad<T>(V::Load(inp + i)) * V::Load(dout + i));
    }
    for (; i < end; ++i) dinp[i] = GeluGrad<T>(inp[i]) * dout[i];
  });
}
template void GeluForward<float>(float*, const float*, size_t, ThreadPool&);
template void GeluForward<double>(double*, const double*, size_t, ThreadPool&);
template void GeluBackward<float>(float*, const float*, const float*, size_t, ThreadPool&);
template void GeluBackward<double>(double*, const double*, const double*, size_t, ThreadPool&);

}  // namespace forge::engine
