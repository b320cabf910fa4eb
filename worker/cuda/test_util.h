// Helpers of the CUDA tests: random inputs, rounding to what a bf16 kernel sees, device
// buffers filled from and read back into host floats, and the comparison rules.
//
//   ExpectClose        every element: |got − want| <= tol · (|want| + 0.1 · rms(want)). For
//                      kernels whose only bf16 rounding is of their inputs and outputs.
//   ExpectCloseInNorm  the whole tensor: ||got − want|| / ||want|| <= rel_l2, and no element
//                      off by more than `worst` in the measure above. For attention in bf16,
//                      whose probabilities are rounded to bf16 before the tensor-core products
//                      (as every flash attention does): that gives ~0.2 % in norm but a few
//                      percent on elements where the products cancel. A wrong row or tile
//                      still fails the element bound by far.
#ifndef FORGE_WORKER_CUDA_TEST_UTIL_H_
#define FORGE_WORKER_CUDA_TEST_UTIL_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/cuda_util.h"

namespace forge::cuda::testing {

using Vec = std::vector<float>;

inline Vec Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

// Host values as the kernel's T sees them (bf16 inputs are rounded first, so the CPU
// reference computes on the same inputs).
template <typename T>
Vec Rounded(const Vec& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(__float2bfloat16(v[i]));
  return out;
}

template <typename T>
class Dev {
 public:
  explicit Dev(size_t n) : buf_(*DeviceBuffer<T>::Allocate(n, "test")) {}
  Dev(const Vec& host) : Dev(host.size()) { Upload(host); }
  void Upload(const Vec& host) {
    std::vector<T> tmp(host.size());
    for (size_t i = 0; i < host.size(); ++i) tmp[i] = static_cast<T>(host[i]);
    ASSERT_EQ(cudaMemcpy(buf_.get(), tmp.data(), tmp.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  Vec Download() const {
    std::vector<T> tmp(buf_.size());
    EXPECT_EQ(cudaMemcpy(tmp.data(), buf_.get(), tmp.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    Vec out(tmp.size());
    for (size_t i = 0; i < tmp.size(); ++i) out[i] = static_cast<float>(tmp[i]);
    return out;
  }
  T* get() const { return buf_.get(); }

 private:
  DeviceBuffer<T> buf_;
};

// 0.1 · rms(want): the scale below which elements are judged absolutely.
inline float Floor(const Vec& want) {
  double sq = 0;
  for (float w : want) sq += double{w} * w;
  return 0.1f * static_cast<float>(std::sqrt(sq / std::max<size_t>(1, want.size())));
}

inline void ExpectClose(const Vec& got, const Vec& want, float tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const float floor = Floor(want);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float err = std::abs(got[i] - want[i]);
    if (!(err <= tol * (std::abs(want[i]) + floor)) && ++bad <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements off";
}

inline void ExpectCloseInNorm(const Vec& got, const Vec& want, double rel_l2, double worst,
                              const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const float floor = Floor(want);
  double e2 = 0, w2 = 0, max_rel = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double{got[i]} - want[i]);
    e2 += err * err;
    w2 += double{want[i]} * want[i];
    const double rel = err / (std::abs(want[i]) + floor);
    if (!(rel <= max_rel)) max_rel = rel, at = i;  // NaN is the worst
  }
  const double l2 = std::sqrt(e2 / std::max(w2, 1e-300));
  EXPECT_LE(l2, rel_l2) << what << ": relative L2 error";
  EXPECT_LE(max_rel, worst) << what << "[" << at << "]: got " << got[at] << " want " << want[at];
}

}  // namespace forge::cuda::testing

#endif  // FORGE_WORKER_CUDA_TEST_UTIL_H_
