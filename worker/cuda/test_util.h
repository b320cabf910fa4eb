// Helpers of the CUDA tests: random inputs, rounding to what a bf16 kernel sees, device
// buffers filled from and read back into host floats, and the comparison rules.
//
// With FORGE_CUDA_EMULATION (kernels_emulation_test: the kernels on CPU threads, see
// cuda_emulation.h) the "device" buffers are host memory and a device is always present.
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
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/cuda_util.h"
#ifdef FORGE_CUDA_EMULATION
#include "worker/cuda/cuda_emulation.h"
#endif

namespace forge::cuda::testing {

using Vec = std::vector<float>;

#ifdef FORGE_CUDA_EMULATION
inline bool HaveDevice() { return true; }
inline cudaError_t Synchronize() { return cudaSuccess; }
#else
inline bool HaveDevice() { return CudaDeviceCount() > 0; }
inline cudaError_t Synchronize() { return cudaDeviceSynchronize(); }
#endif

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

#ifdef FORGE_CUDA_EMULATION
template <typename T>
class Dev {  // host memory, which the emulated kernels use
 public:
  explicit Dev(size_t n) : buf_(n) {}
  Dev(const Vec& host) : Dev(host.size()) { Upload(host); }
  void Upload(const Vec& host) {
    for (size_t i = 0; i < host.size(); ++i) buf_[i] = static_cast<T>(host[i]);
  }
  Vec Download() const {
    Vec out(buf_.size());
    for (size_t i = 0; i < buf_.size(); ++i) out[i] = static_cast<float>(buf_[i]);
    return out;
  }
  T* get() const { return const_cast<T*>(buf_.data()); }

 private:
  std::vector<T> buf_;
};

class DevInts {
 public:
  explicit DevInts(const std::vector<int32_t>& v) : buf_(v) {}
  int32_t* get() const { return const_cast<int32_t*>(buf_.data()); }

 private:
  std::vector<int32_t> buf_;
};
#else
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

// A device copy of ints.
class DevInts {
 public:
  explicit DevInts(const std::vector<int32_t>& v)
      : buf_(*DeviceBuffer<int32_t>::Allocate(v.size(), "test ints")) {
    EXPECT_EQ(cudaMemcpy(buf_.get(), v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  int32_t* get() const { return buf_.get(); }

 private:
  DeviceBuffer<int32_t> buf_;
};
#endif

// 0.1 · rms(want): the scale below which elements are judged absolutely.
inline float Floor(const Vec& want) {
  double sq = 0;
  for (float w : want) sq += double{w} * w;
  return 0.1f * static_cast<float>(std::sqrt(sq / std::max<size_t>(1, want.size())));
}

// `abs` (default 0) is added to the bound, for references that are themselves approximate
// (the CPU engine's tanh is good to about 2e-7 absolute).
inline void ExpectClose(const Vec& got, const Vec& want, float tol, const char* what,
                        float abs = 0.0f) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const float floor = Floor(want);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float err = std::abs(got[i] - want[i]);
    if (!(err <= tol * (std::abs(want[i]) + floor) + abs) && ++bad <= 5) {
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

// Bit-for-bit equality (deterministic code run twice, or ranks that must agree); the first
// element that differs is named.
inline void ExpectSameBits(const Vec& got, const Vec& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": not the same bits; first at [" << i << "]: " << got[i]
                    << " vs " << want[i];
      return;
    }
  }
}

// `v` after `offset` entries of `pad`: to put a test's arrays off a 16-byte boundary.
inline Vec AfterPadding(size_t offset, const Vec& v, float pad = 5.0f) {
  Vec out(offset, pad);
  out.insert(out.end(), v.begin(), v.end());
  return out;
}

// The first `cols` elements of each of `rows` rows `ld` apart, packed; fails the test where
// the padding past `cols` no longer holds `pad` (the kernel wrote it), naming the first such
// element.
inline Vec UnpadRows(const Vec& pitched, int rows, int cols, int ld, float pad) {
  Vec out(size_t{1} * rows * cols);
  bool reported = false;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < ld; ++j) {
      const float x = pitched[size_t{1} * r * ld + j];
      if (j < cols) {
        out[size_t{1} * r * cols + j] = x;
      } else if (x != pad && !reported) {
        ADD_FAILURE() << "padding of row " << r << " written: [" << j << "] = " << x;
        reported = true;
      }
    }
  }
  return out;
}

}  // namespace forge::cuda::testing

#endif  // FORGE_WORKER_CUDA_TEST_UTIL_H_
