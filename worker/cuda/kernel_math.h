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
// Adds one value; -inf adds nothing (and -inf − -inf would be NaN). A NaN makes (m, l) =
// (+inf, NaN), which every later add and merge keeps (a NaN l with m = -inf would be dropped
// as an empty part by MaxSumMerge): a NaN logit anywhere makes the row's loss NaN, so a run
// that diverged shows it.
__device__ __forceinline__ void MaxSumAdd(float& m, float& l, float x) {
  if (x != x) {
    m = INFINITY;
    l = NAN;
    return;
  }
  if (x == -INFINITY) return;
  if (x > m) {
    l = (m == -INFINITY ? 0.0f : l * expf(m - x)) + 1.0f;
    m = x;
  } else {
    l += expf(x - m);
  }
}

// a · b rounded on its own: nvcc contracts a product feeding an addition into one fma by
// default, and fma(a, b, c · d) and fma(c, d, a · b) may differ in the last bit, which would
// make MaxSumMerge depend on its operands' order.
__device__ __forceinline__ float MulRounded(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);  // never contracted
#else
  return a * b;
#endif
}

// Merges (m2, l2) into (m, l). Commutative in its two operands' bits (each product rounded
// before the sum, and float addition is commutative).
__device__ __forceinline__ void MaxSumMerge(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  l = (m == -INFINITY ? 0.0f : MulRounded(l, expf(m - mx))) +
      (m2 == -INFINITY ? 0.0f : MulRounded(l2, expf(m2 - mx)));
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

// The block's (max, sum of exp) from every thread's (m, l), left in every thread's (m, l): a
// warp tree, then thread 0 merges the warps in order. blockDim.x a multiple of 32; every
// thread of the block must call it, once per kernel (its shared slots are not reused safely).
__device__ __forceinline__ void BlockMaxSum(float& m, float& l) {
  __shared__ float warp_m[kWarp], warp_l[kWarp];
  __shared__ float block_m, block_l;
  WarpMaxSum(m, l);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = warp_m[0], S = warp_l[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / kWarp); ++w) {
      MaxSumMerge(M, S, warp_m[w], warp_l[w]);
    }
    block_m = M;
    block_l = S;
  }
  __syncthreads();
  m = block_m;
  l = block_l;
}

// The sum of every thread's v over a block of kBlock threads (a power of two), in a fixed
// tree; every thread gets it. Every thread must call it, once per kernel.
template <int kBlock>
__device__ __forceinline__ double BlockSum(double v) {
  __shared__ double sh[kBlock];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  return sh[0];
}

// norm_out[0] = sqrt(sum_squares) · grad_scale; norm_out[1] = the factor to multiply raw
// gradients by (grad_scale, times max_norm / norm where max_norm > 0 and the norm exceeds it).
__device__ __forceinline__ void WriteNormAndFactor(float* norm_out, double sum_squares,
                                                   float grad_scale, float max_norm) {
  const double norm = sqrt(sum_squares) * grad_scale;
  double factor = grad_scale;
  if (max_norm > 0 && norm > max_norm) factor *= max_norm / norm;
  norm_out[0] = static_cast<float>(norm);
  norm_out[1] = static_cast<float>(factor);
}

}  // namespace forge::cuda::kmath

#endif  // FORGE_WORKER_CUDA_KERNEL_MATH_H_
