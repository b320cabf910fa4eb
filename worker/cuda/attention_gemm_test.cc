// The tensor-core attention (attention_gemm.h) against the CPU engine on fresh random inputs:
// fp32 at kernels_test.cc's 1e-5 relative per element (gradients 2e-5); bf16, whose
// probabilities are rounded before the products, at 1e-2 in relative L2 norm with no element
// off by more than 30 % of (|want| + 0.1 rms) (test_util.h: ExpectCloseInNorm);
// its log-sum-exp against one computed here in double, agreement with the fused kernels, and
// the same bits on a second run. Skips without a CUDA device.
#include "worker/cuda/attention_gemm.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cuda/kernels.h"
#include "worker/cuda/test_util.h"
#include "worker/engine/attention.h"
#include "worker/engine/thread_pool.h"

namespace forge::cuda {
namespace {

using testing::Dev;
using testing::ExpectClose;
using testing::ExpectCloseInNorm;
using testing::ExpectSameBits;
using testing::Random;
using testing::Rounded;
using testing::Vec;

// lse[b, h, i] = log sum_{j <= i} exp(q_i · k_j / sqrt(hs)), in double.
Vec HostLse(const Vec& qkv, int B, int Tq, int C, int H) {
  const int hs = C / H;
  Vec lse(size_t{1} * B * H * Tq);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < Tq; ++i) {
        std::vector<double> s(i + 1);
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < hs; ++d) {
            dot += double{qkv[(size_t{1} * b * Tq + i) * 3 * C + h * hs + d]} *
                   qkv[(size_t{1} * b * Tq + j) * 3 * C + C + h * hs + d];
          }
          s[j] = dot / std::sqrt(double(hs));
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double x : s) sum += std::exp(x - m);
        lse[(size_t{1} * b * H + h) * Tq + i] = static_cast<float>(m + std::log(sum));
      }
    }
  }
  return lse;
}

template <typename T>
class GemmAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device answers: skipped";
    absl::StatusOr<std::unique_ptr<Matmul>> m = Matmul::Create();
    ASSERT_TRUE(m.ok()) << m.status();
    matmul_ = *std::move(m);
  }
  std::unique_ptr<Matmul> matmul_;
  engine::ThreadPool pool_{1};
};

using Types = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(GemmAttentionTest, Types);

struct Shape {
  int B, T, C, H;
};

TYPED_TEST(GemmAttentionTest, MatchesTheCpuEngine) {
  using T = TypeParam;
  constexpr bool kExact = std::is_same_v<T, float>;
  // Odd lengths (no multiple of any tile), head sizes 64, 32 and 24 (the GEMM path has no
  // head-size list), one sequence shorter than the scratch was built for.
  for (const Shape& s :
       {Shape{2, 77, 128, 2}, Shape{1, 130, 128, 4}, Shape{3, 5, 72, 3}, Shape{2, 40, 128, 2}}) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << s.B << " T=" << s.T << " C=" << s.C << " H=" << s.H);
    absl::StatusOr<std::unique_ptr<GemmAttention<T>>> attn =
        GemmAttention<T>::Create(this->matmul_.get(), s.H, std::max(s.T, 64));
    ASSERT_TRUE(attn.ok()) << attn.status();
    const size_t n3 = size_t{1} * s.B * s.T * 3 * s.C, n = size_t{1} * s.B * s.T * s.C;
    const Vec qkv = Rounded<T>(Random(n3, 8)), dy = Rounded<T>(Random(n, 9));
    Vec y(n), att(size_t{1} * s.B * s.H * s.T * s.T), dqkv(n3), scratch(att.size());
    engine::AttentionForward<float>(y.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.H,
                                    this->pool_);
    engine::AttentionBackward<float>(dqkv.data(), scratch.data(), dy.data(), qkv.data(), att.data(),
                                     s.B, s.T, s.C, s.H, this->pool_);
    Dev<T> gqkv(qkv), gy(n), gdy(dy), gdqkv(n3);
    Dev<float> lse(size_t{1} * s.B * s.H * s.T), delta(size_t{1} * s.B * s.H * s.T);
    ASSERT_TRUE(
        (*attn)->Forward(gy.get(), lse.get(), gqkv.get(), s.B, s.T, s.C, s.H, nullptr).ok());
    // The backward reads y: give it the CPU's, so dqkv is compared on equal inputs.
    Dev<T> cpu_y(Rounded<T>(y));
    ASSERT_TRUE((*attn)
                    ->Backward(gdqkv.get(), delta.get(), gdy.get(), gqkv.get(), cpu_y.get(),
                               lse.get(), s.B, s.T, s.C, s.H, nullptr)
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    // lse is fp32 from fp32 scores in both modes.
    ExpectClose(lse.Download(), HostLse(qkv, s.B, s.T, s.C, s.H), 1e-5f, "lse");
    if (kExact) {
      ExpectClose(gy.Download(), y, 1e-5f, "y");
      ExpectClose(gdqkv.Download(), dqkv, 2e-5f, "dqkv");
    } else {  // bf16 probabilities (test_util.h)
      ExpectCloseInNorm(gy.Download(), y, 1e-2, 0.3, "y");
      ExpectCloseInNorm(gdqkv.Download(), dqkv, 1e-2, 0.3, "dqkv");
    }
  }
}

TYPED_TEST(GemmAttentionTest, AgreesWithTheFusedKernelsAndRepeatsItsBits) {
  using T = TypeParam;
  const int B = 2, Tq = 200, C = 256, H = 4;
  const size_t n3 = size_t{1} * B * Tq * 3 * C, n = size_t{1} * B * Tq * C;
  absl::StatusOr<std::unique_ptr<GemmAttention<T>>> attn =
      GemmAttention<T>::Create(this->matmul_.get(), H, Tq);
  ASSERT_TRUE(attn.ok()) << attn.status();
  Dev<T> qkv(Random(n3, 30)), dy(Random(n, 31)), y(n), fused_y(n), dqkv(n3), fused_dqkv(n3);
  Dev<float> lse(size_t{1} * B * H * Tq), fused_lse(size_t{1} * B * H * Tq),
      delta(size_t{1} * B * H * Tq);
  ASSERT_EQ(AttentionForward<T>(fused_y.get(), fused_lse.get(), qkv.get(), B, Tq, C, H, nullptr),
            cudaSuccess);
  ASSERT_EQ(AttentionBackward<T>(fused_dqkv.get(), delta.get(), dy.get(), qkv.get(), fused_y.get(),
                                 fused_lse.get(), B, Tq, C, H, nullptr),
            cudaSuccess);
  Vec first_y, first_dqkv;
  for (int run = 0; run < 2; ++run) {
    ASSERT_TRUE((*attn)->Forward(y.get(), lse.get(), qkv.get(), B, Tq, C, H, nullptr).ok());
    ASSERT_TRUE((*attn)
                    ->Backward(dqkv.get(), delta.get(), dy.get(), qkv.get(), y.get(), lse.get(), B,
                               Tq, C, H, nullptr)
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const Vec got_y = y.Download(), got_dqkv = dqkv.Download();
    if (run == 0) {
      first_y = got_y;
      first_dqkv = got_dqkv;
      ExpectClose(lse.Download(), fused_lse.Download(), 1e-5f, "lse vs fused");
      if (std::is_same_v<T, float>) {
        ExpectClose(got_y, fused_y.Download(), 2e-5f, "y vs fused");
        ExpectClose(got_dqkv, fused_dqkv.Download(), 2e-5f, "dqkv vs fused");
      } else {  // the fused kernels keep fp32 probabilities; these round them to bf16
        ExpectCloseInNorm(got_y, fused_y.Download(), 1e-2, 0.3, "y vs fused");
        ExpectCloseInNorm(got_dqkv, fused_dqkv.Download(), 1e-2, 0.3, "dqkv vs fused");
      }
    } else {
      ExpectSameBits(got_y, first_y, "y, second run");
      ExpectSameBits(got_dqkv, first_dqkv, "dqkv, second run");
    }
  }
}

TYPED_TEST(GemmAttentionTest, ShapesOutsideWhatItWasBuiltForAreRefused) {
  using T = TypeParam;
  absl::StatusOr<std::unique_ptr<GemmAttention<T>>> attn =
      GemmAttention<T>::Create(this->matmul_.get(), 2, 16);
  ASSERT_TRUE(attn.ok()) << attn.status();
  Dev<T> qkv(size_t{3} * 17 * 64), y(size_t{17} * 64);
  Dev<float> lse(size_t{2} * 17);
  const absl::Status too_long =
      (*attn)->Forward(y.get(), lse.get(), qkv.get(), 1, 17, 64, 2, nullptr);
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.message(), ::testing::HasSubstr("up to 16 tokens"));
  const absl::Status heads = (*attn)->Forward(y.get(), lse.get(), qkv.get(), 1, 8, 64, 4, nullptr);
  EXPECT_EQ(heads.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace forge::cuda
