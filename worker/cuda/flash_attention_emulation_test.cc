// The flash-attention kernel bodies (flash_attention_body.h) on the CUDA emulation's fibers
// (flash_attention_emulation.h: one fiber per CUDA thread, barriers for __syncthreads and
// __syncwarp, the warp's slots for the shuffles and for mma.sync's fragments, shared memory
// that starts as NaNs). Compared with the CPU engine on shapes that are not
// multiples of the tiles, at the bf16 attention rule of test_util.h (1e-2 in relative L2 norm,
// no element off by more than 30 %). Needs no GPU (CTest label unit); the GPU tests run the
// same bodies on the tensor cores.
#include "worker/cuda/flash_attention_emulation.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/flash_attention.h"
#include "worker/cuda/test_util.h"
#include "worker/engine/attention.h"
#include "worker/engine/thread_pool.h"

namespace forge::cuda::flash {
namespace {

using testing::ExpectCloseInNorm;
using testing::Rounded;
using testing::Vec;

// bf16 inputs.
Vec Random(size_t n, uint32_t seed) { return Rounded<bf16>(testing::Random(n, seed)); }

std::vector<bf16> ToBf16(const Vec& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16(v[i]);
  return out;
}

Vec ToFloat(const std::vector<bf16>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

struct Shape {
  int B, T, C, H;
};

template <int D>
void CheckAgainstTheCpuEngine(const Shape& s) {
  SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " H=" << s.H);
  ASSERT_EQ(s.C / s.H, D);
  engine::ThreadPool pool(1);
  const size_t n3 = size_t{1} * s.B * s.T * 3 * s.C, n = size_t{1} * s.B * s.T * s.C;
  const size_t rows = size_t{1} * s.B * s.H * s.T;
  const Vec qkv = Random(n3, 8), dy = Random(n, 9);
  Vec want_y(n), att(rows * s.T), want_dqkv(n3), scratch(att.size());
  engine::AttentionForward<float>(want_y.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.H, pool);
  engine::AttentionBackward<float>(want_dqkv.data(), scratch.data(), dy.data(), qkv.data(),
                                   att.data(), s.B, s.T, s.C, s.H, pool);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int blocks = (s.T + kBlockRows - 1) / kBlockRows;

  const std::vector<bf16> gqkv = ToBf16(qkv), gdy = ToBf16(dy);
  std::vector<bf16> y(n, __float2bfloat16(-7.0f));
  Vec lse(rows, -7.0f);
  RunFlash(blocks, s.B * s.H, ForwardSmem<D>::kBytes, [&](FiberCtx& ctx) {
    ForwardBody<D>(ctx, y.data(), lse.data(), gqkv.data(), s.T, s.C, s.H, scale);
  });
  ExpectCloseInNorm(ToFloat(y), want_y, 1e-2, 0.3, "y");
  // lse against the engine's probabilities: log p_ii = scale q_i·k_i − lse_i.
  for (int bh = 0; bh < s.B * s.H; ++bh) {
    const int b = bh / s.H, h = bh % s.H;
    for (int i = 0; i < s.T; ++i) {
      double dot = 0;
      for (int d = 0; d < D; ++d) {
        const size_t off = (size_t{1} * b * s.T + i) * 3 * s.C + h * D + d;
        dot += double{qkv[off]} * qkv[off + s.C];
      }
      const double want = scale * dot - std::log(double{att[(size_t{1} * bh * s.T + i) * s.T + i]});
      ASSERT_NEAR(lse[size_t{1} * bh * s.T + i], want, 1e-3 * (1 + std::abs(want)))
          << "lse of row " << i << " of head " << bh;
    }
  }

  // The backward, on the engine's y (rounded to bf16), as the GPU tests do.
  const std::vector<bf16> cpu_y = ToBf16(want_y);
  Vec delta(rows);
  for (int bh = 0; bh < s.B * s.H; ++bh) {
    const int b = bh / s.H, h = bh % s.H;
    for (int i = 0; i < s.T; ++i) {
      float acc = 0;
      for (int d = 0; d < D; ++d) {
        const size_t off = (size_t{1} * b * s.T + i) * s.C + h * D + d;
        acc += __bfloat162float(gdy[off]) * __bfloat162float(cpu_y[off]);
      }
      delta[size_t{1} * bh * s.T + i] = acc;
    }
  }
  std::vector<bf16> dqkv(n3, __float2bfloat16(-7.0f));
  RunFlash(blocks, s.B * s.H, BackwardSmem<D>::kBytes, [&](FiberCtx& ctx) {
    BackwardQueryBody<D>(ctx, dqkv.data(), delta.data(), gdy.data(), gqkv.data(), lse.data(), s.T,
                         s.C, s.H, scale);
  });
  RunFlash(blocks, s.B * s.H, BackwardSmem<D>::kBytes, [&](FiberCtx& ctx) {
    BackwardKeyBody<D>(ctx, dqkv.data(), delta.data(), gdy.data(), gqkv.data(), lse.data(), s.T,
                       s.C, s.H, scale);
  });
  ExpectCloseInNorm(ToFloat(dqkv), want_dqkv, 1e-2, 0.3, "dqkv");
}

// The emulated mma.sync against a plain product, with each lane's registers filled element by
// element from the PTX ISA's formulas for m16n8k16 (groupID = lane >> 2, threadID_in_group =
// lane % 4; A element i: row groupID (+8 for i in {2, 3, 6, 7}), column 2·threadID_in_group +
// (i & 1) (+8 for i >= 4); B element i: row 2·threadID_in_group + (i & 1) (+8 for i >= 2),
// column groupID; C element i: row groupID (+8 for i >= 2), column 2·threadID_in_group +
// (i & 1)), a second spelling of the table FiberCtx and the kernel bodies use. Element 2r of
// a register is its low half.
TEST(FlashAttentionEmulationTest, MmaFollowsThePtxFragmentLayout) {
  const Vec a = Random(16 * 16, 3), b = Random(16 * 8, 4), c = Random(16 * 8, 5);
  std::vector<float> got(16 * 8, NAN);
  auto bits = [](float x) {
    const bf16 h = __float2bfloat16(x);
    uint16_t v;
    std::memcpy(&v, &h, 2);
    return uint32_t{v};
  };
  RunFlash(1, 1, 0, [&](FiberCtx& ctx) {
    if (ctx.tid() >= 32) return;  // one warp
    const int lane = ctx.tid(), group = lane >> 2, tig = lane % 4;
    uint32_t ra[4] = {0, 0, 0, 0}, rb[2] = {0, 0};
    float d[4];
    for (int i = 0; i < 8; ++i) {
      const bool low_row = i < 2 || (i >= 4 && i < 6);
      const int row = group + (low_row ? 0 : 8), col = 2 * tig + (i & 1) + (i >= 4 ? 8 : 0);
      ra[i / 2] |= bits(a[row * 16 + col]) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i) {
      const int row = 2 * tig + (i & 1) + (i >= 2 ? 8 : 0), col = group;
      rb[i / 2] |= bits(b[row * 8 + col]) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i) d[i] = c[(group + (i >= 2 ? 8 : 0)) * 8 + 2 * tig + (i & 1)];
    ctx.mma(d, ra, rb);
    for (int i = 0; i < 4; ++i) got[(group + (i >= 2 ? 8 : 0)) * 8 + 2 * tig + (i & 1)] = d[i];
  });
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double want = c[m * 8 + n];
      for (int k = 0; k < 16; ++k) want += double{a[m * 16 + k]} * b[k * 8 + n];
      EXPECT_NEAR(got[m * 8 + n], want, 1e-5 * (1 + std::abs(want)))
          << "D(" << m << ", " << n << ")";
    }
  }
}

// The entry points (flash_attention.cc) refuse buffers the kernels' 16- and 4-byte accesses
// cannot use, before anything is launched (so this needs no device).
TEST(FlashAttentionEmulationTest, MisalignedBuffersAreRefusedBeforeAnyLaunch) {
  alignas(16) static bf16 qkv[3 * 64 + 16], y[64 + 16], dqkv[3 * 64 + 16], dy[64 + 16];
  alignas(16) static float lse[8], delta[8];
  EXPECT_EQ(FlashAttentionForward(y, lse, qkv + 1, 1, 1, 64, 1, nullptr),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(FlashAttentionForward(y + 1, lse, qkv, 1, 1, 64, 1, nullptr),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(FlashAttentionBackward(dqkv, delta, dy + 4, qkv, y, lse, 1, 1, 64, 1, nullptr),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(FlashAttentionBackward(dqkv + 1, delta, dy, qkv, y, lse, 1, 1, 64, 1, nullptr),
            cudaErrorMisalignedAddress);
}

// Lengths below, at and across the 64-row tiles (the causal diagonal, the padding rows).
TEST(FlashAttentionEmulationTest, HeadSize64MatchesTheCpuEngine) {
  CheckAgainstTheCpuEngine<64>({1, 77, 128, 2});
  CheckAgainstTheCpuEngine<64>({2, 64, 64, 1});
  CheckAgainstTheCpuEngine<64>({1, 5, 64, 1});
  // Long enough for key tiles away from the diagonal and the end, where the forward skips
  // the mask.
  CheckAgainstTheCpuEngine<64>({1, 200, 64, 1});
}

TEST(FlashAttentionEmulationTest, HeadSizes16And32And128MatchTheCpuEngine) {
  CheckAgainstTheCpuEngine<16>({1, 130, 32, 2});
  CheckAgainstTheCpuEngine<32>({2, 40, 64, 2});
  CheckAgainstTheCpuEngine<128>({1, 70, 128, 1});
}

}  // namespace
}  // namespace forge::cuda::flash
