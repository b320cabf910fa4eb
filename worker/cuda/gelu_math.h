// GELU's tanh form and its derivative on one float: what the GELU kernels (kernels.cu) and
// the emulated cuBLASLt's GELU epilogues (cuda_runtime_emulated.cc) compute per element. The
// CPU engine's worker/engine/gelu.cc is the reference they are tested against.
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#ifndef FORGE_WORKER_CUDA_GELU_MATH_H_
#define FORGE_WORKER_CUDA_GELU_MATH_H_

#include <cmath>

// Device and host code under nvcc; plain C++ elsewhere (the emulation, host compilers).
#ifdef __CUDACC__
#define FORGE_GELU_HD __host__ __device__
#else
#define FORGE_GELU_HD
#endif

namespace forge::cuda {

inline constexpr float kGeluSqrt2OverPi = 0.7978845608028654f;
inline constexpr float kGeluCubic = 0.044715f;

FORGE_GELU_HD inline float GeluOf(float x) {
  const float t = tanhf(kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x));
  return 0.5f * x * (1.0f + t);
}

// d gelu(x) / dx.
FORGE_GELU_HD inline float GeluGradOf(float x) {
  const float t = tanhf(kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x));
  const float dt = kGeluSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dt;
}

}  // namespace forge::cuda

#undef FORGE_GELU_HD

#endif  // FORGE_WORKER_CUDA_GELU_MATH_H_
