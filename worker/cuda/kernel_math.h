// Device helpers shared by the kernels (kernels.cu) and the benchmark's reference kernels
// (bench/gpu): conversions between the activation type and fp32, warp sums, and the online
// softmax statistics. Compiles for the GPU and, under FORGE_CUDA_EMULATION, as host C++
// (launch.h brings the emulation's builtins).
#ifndef FORGE_WORKER_CUDA_KERNEL_MATH_H_
#define FORGE_WORKER_CUDA_KERNEL_MATH_H_

#include <cuda_bf16.h>

#include <cmath>

#include "worker/cuda/launch.h"

namespace forge::cuda::kmath {

inline constexpr int kWarp = 32;

__device__ __forceinline__ float ToF(float x) { return x; }
__device__ __forceinline__ float ToF(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T FromF(float x);
template <>
__device__ __forceinline__ float FromF<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}  // RNE

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Online softmax statistics: (m, l) = (max of the values seen, sum of exp(value − m)).
// Adds one value; -inf adds nothing (and -inf − -inf would be NaN).
__device__ __forceinline__ void MaxSumAdd(float& m, float& l, float x) {
  if (x == -INFINITY) return;
  if (x > m) {
    l = (m == -INFINITY ? 0.0f : l * expf(m - x)) + 1.0f;
    m = x;
  } else {
    l += expf(x - m);
  }
}

// Merges (m2, l2) into (m, l). Commutative in its two operands' bits.
__device__ __forceinline__ void MaxSumMerge(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  l = (m == -INFINITY ? 0.0f : l * expf(m - mx)) + (m2 == -INFINITY ? 0.0f : l2 * expf(m2 - mx));
  m = mx;
}

// Merges every lane's (m, l) across the warp. Both lanes of each butterfly pair compute the
// same commutative expression, so every lane ends with the same bits.
__device__ __forceinline__ void WarpMaxSum(float& m, float& l) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float l2 = __shfl_xor_sync(0xffffffffu, l, o);
    MaxSumMerge(m, l, m2, l2);
  }
}

}  // namespace forge::cuda::kmath

#endif  // FORGE_WORKER_CUDA_KERNEL_MATH_H_
