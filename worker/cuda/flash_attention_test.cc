// The flash attention on the GPU (flash_attention.h) against the CPU engine on fresh random
// inputs, at the bf16 attention rule of test_util.h (1e-2 in relative L2 norm, no element off
// by more than 30 %), its log-sum-exp against the GEMM attention's (fp32 scores), the same
// bits on a second run, and refusals. Skips without a CUDA device; the same kernel bodies run
// on CPU threads in flash_attention_emulation_test.cc.
#include "worker/cuda/flash_attention.h"

#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/attention_gemm.h"
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

class FlashAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device answers: skipped";
  }
  engine::ThreadPool pool_{1};
};

struct Shape {
  int B, T, C, H;
};

TEST_F(FlashAttentionTest, MatchesTheCpuEngine) {
  // Lengths below, at and across the 64-row tiles; head sizes 16, 32, 64 and 128.
  for (const Shape& s : {Shape{2, 77, 128, 2}, Shape{1, 130, 128, 4}, Shape{3, 5, 64, 1},
                         Shape{2, 64, 64, 4}, Shape{1, 200, 128, 1}, Shape{2, 33, 64, 4}}) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << s.B << " T=" << s.T << " C=" << s.C << " H=" << s.H);
    const size_t n3 = size_t{1} * s.B * s.T * 3 * s.C, n = size_t{1} * s.B * s.T * s.C;
    const size_t rows = size_t{1} * s.B * s.H * s.T;
    const Vec qkv = Rounded<bf16>(Random(n3, 8)), dy = Rounded<bf16>(Random(n, 9));
    Vec y(n), att(rows * s.T), dqkv(n3), scratch(att.size());
    engine::AttentionForward<float>(y.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.H, pool_);
    engine::AttentionBackward<float>(dqkv.data(), scratch.data(), dy.data(), qkv.data(), att.data(),
                                     s.B, s.T, s.C, s.H, pool_);
    Dev<bf16> gqkv(qkv), gy(n), gdy(dy), gdqkv(n3), cpu_y(Rounded<bf16>(y));
    Dev<float> lse(rows), delta(rows);
    ASSERT_EQ(FlashAttentionForward(gy.get(), lse.get(), gqkv.get(), s.B, s.T, s.C, s.H, nullptr),
              cudaSuccess);
    // The backward on the CPU's y, so dqkv is compared on equal inputs.
    ASSERT_EQ(FlashAttentionBackward(gdqkv.get(), delta.get(), gdy.get(), gqkv.get(), cpu_y.get(),
                                     lse.get(), s.B, s.T, s.C, s.H, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ExpectCloseInNorm(gy.Download(), y, 1e-2, 0.3, "y");
    ExpectCloseInNorm(gdqkv.Download(), dqkv, 1e-2, 0.3, "dqkv");
  }
}

TEST_F(FlashAttentionTest, LogSumExpMatchesTheGemmAttentionsAndBitsRepeat) {
  const int B = 2, Tq = 200, C = 256, H = 4;
  const size_t n3 = size_t{1} * B * Tq * 3 * C, n = size_t{1} * B * Tq * C;
  const size_t rows = size_t{1} * B * H * Tq;
  absl::StatusOr<std::unique_ptr<Matmul>> matmul = Matmul::Create();
  ASSERT_TRUE(matmul.ok()) << matmul.status();
  absl::StatusOr<std::unique_ptr<GemmAttention<bf16>>> gemm =
      GemmAttention<bf16>::Create(matmul->get(), H, Tq);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  Dev<bf16> qkv(Random(n3, 30)), dy(Random(n, 31)), y(n), gemm_y(n), dqkv(n3);
  Dev<float> lse(rows), gemm_lse(rows), delta(rows);
  ASSERT_TRUE((*gemm)->Forward(gemm_y.get(), gemm_lse.get(), qkv.get(), B, Tq, C, H, nullptr).ok());
  Vec first_y, first_dqkv;
  for (int run = 0; run < 2; ++run) {
    ASSERT_EQ(FlashAttentionForward(y.get(), lse.get(), qkv.get(), B, Tq, C, H, nullptr),
              cudaSuccess);
    ASSERT_EQ(FlashAttentionBackward(dqkv.get(), delta.get(), dy.get(), qkv.get(), y.get(),
                                     lse.get(), B, Tq, C, H, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const Vec got_y = y.Download(), got_dqkv = dqkv.Download();
    if (run == 0) {
      first_y = got_y;
      first_dqkv = got_dqkv;
      // Both from fp32 scores of the same bf16 inputs.
      ExpectClose(lse.Download(), gemm_lse.Download(), 1e-5f, "lse vs gemm");
      ExpectCloseInNorm(got_y, gemm_y.Download(), 1e-2, 0.3, "y vs gemm");
    } else {
      ExpectSameBits(got_y, first_y, "y, second run");
      ExpectSameBits(got_dqkv, first_dqkv, "dqkv, second run");
    }
  }
}

TEST_F(FlashAttentionTest, UnsupportedShapesAreRefused) {
  Dev<bf16> qkv(size_t{3} * 8 * 96), y(size_t{8} * 96);
  Dev<float> lse(size_t{4} * 8);
  EXPECT_FALSE(FlashAttentionHeadSizeSupported(24));
  EXPECT_EQ(FlashAttentionForward(y.get(), lse.get(), qkv.get(), 1, 8, 96, 4, nullptr),
            cudaErrorInvalidValue);  // head size 24
  EXPECT_EQ(FlashAttentionForward(y.get(), lse.get(), qkv.get(), 1, 8, 96, 5, nullptr),
            cudaErrorInvalidValue);  // heads do not divide the width
  EXPECT_EQ(FlashAttentionForward(y.get(), lse.get(), qkv.get(), 0, 8, 96, 6, nullptr),
            cudaErrorInvalidValue);  // no sequences
  EXPECT_EQ(FlashAttentionForward(y.get(), lse.get(), qkv.get(), 1, 0, 96, 6, nullptr),
            cudaErrorInvalidValue);  // no positions (an empty grid)
  Dev<bf16> dqkv(size_t{3} * 8 * 96), dy(size_t{8} * 96);
  Dev<float> delta(size_t{6} * 8);
  for (const auto& [B, Tq] : {std::pair{0, 8}, std::pair{1, 0}}) {
    EXPECT_EQ(FlashAttentionBackward(dqkv.get(), delta.get(), dy.get(), qkv.get(), y.get(),
                                     lse.get(), B, Tq, 96, 6, nullptr),
              cudaErrorInvalidValue)
        << "B " << B << ", Tq " << Tq;
  }
}

}  // namespace
}  // namespace forge::cuda
