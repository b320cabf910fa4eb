// exp and tanh for the kernels, plus the 4-lane float vector (one SSE register) they run on.
//
// float gets branch-free versions (range reduction plus a polynomial, about 1e-7 relative)
// written on GCC/Clang vector extensions, so they compile to SIMD on any target without
// -march flags and give the same bits wherever they run: no library call, no fused
// multiply-add (the build is ISO C++, so -ffp-contract=off), and a scalar call computes
// exactly what one vector lane does. double, which only the gradient checks use, gets the C
// library's functions.
#ifndef FORGE_WORKER_ENGINE_FAST_MATH_H_
#define FORGE_WORKER_ENGINE_FAST_MATH_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace forge::engine {

using Float4 = float __attribute__((vector_size(16)));
using Int4 = int32_t __attribute__((vector_size(16)));
// Eight lanes, for loops compiled twice (target_clones: AVX2 and baseline, where GCC splits it
// into two SSE halves). Every lane op is an IEEE one, so either clone gives the same bits.
using Float8 = float __attribute__((vector_size(32)));

inline Float4 Broadcast4(float x) { return Float4{} + x; }
inline Float4 Load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store4(float* p, Float4 v) { std::memcpy(p, &v, sizeof(v)); }
inline float Sum4(Float4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }  // a fixed order

// A Float8 is passed in memory without AVX and in registers with it (GCC's -Wpsabi note). The
// Float8 functions are always inlined (and call nothing, not even std::bit_cast) into loops
// compiled with target_clones, so no Float8 crosses a call, at any optimisation level.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// e^x per lane of a float vector V (Float4, Float8); inputs are clamped to [-87, 88], so
// results stay normal floats.
template <typename V>
[[gnu::always_inline]] inline V ExpLanes(V x) {
  typedef int32_t I __attribute__((vector_size(sizeof(V))));
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  // n = round(x / ln 2) by the 1.5 · 2^23 trick; r = x - n ln 2 in two steps (Cody-Waite).
  const V shifted = x * 1.44269504088896341f + 12582912.0f;
  const V n = shifted - 12582912.0f;
  // __builtin_bit_cast, not std::bit_cast: a call (at -O0) would pass a Float8 across it.
  const I ni = __builtin_bit_cast(I, shifted) - 0x4B400000;
  V r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  // Taylor series to r^7 on |r| <= 0.347: truncation error below 5e-9.
  V p = V{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * __builtin_bit_cast(V, (ni + 127) << 23);
}

// tanh(x) = 1 - 2 / (e^{2x} + 1): absolute error about 2e-7.
inline Float4 Exp(Float4 x) { return ExpLanes(x); }
inline Float4 Tanh(Float4 x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }
// Float8 versions, for loops compiled with target_clones: always inlined there.
[[gnu::always_inline]] inline Float8 Load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
[[gnu::always_inline]] inline void Store8(float* p, Float8 v) { std::memcpy(p, &v, sizeof(v)); }
[[gnu::always_inline]] inline Float8 Exp(Float8 x) { return ExpLanes(x); }
[[gnu::always_inline]] inline Float8 Tanh(Float8 x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }
#pragma GCC diagnostic pop

inline float Exp(float x) { return Exp(Broadcast4(x))[0]; }
inline float Tanh(float x) { return Tanh(Broadcast4(x))[0]; }
inline double Exp(double x) { return std::exp(x); }
inline double Tanh(double x) { return std::tanh(x); }

// x[i] = e^(x[i] - shift) for i < n; returns their sum, accumulated in 4 lanes (a fixed
// order for a given n).
template <typename T>
T ExpShiftedSum(T* x, int n, T shift) {
  if constexpr (std::is_same_v<T, float>) {
    Float4 acc{};
    int i = 0;
    for (; i + 4 <= n; i += 4) {
      const Float4 e = Exp(Load4(x + i) - shift);
      Store4(x + i, e);
      acc += e;
    }
    for (; i < n; ++i) {
      x[i] = Exp(x[i] - shift);
      acc[i % 4] += x[i];
    }
    return Sum4(acc);
  } else {
    T sum = 0;
    for (int i = 0; i < n; ++i) sum += (x[i] = Exp(x[i] - shift));
    return sum;
  }
}

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_FAST_MATH_H_
