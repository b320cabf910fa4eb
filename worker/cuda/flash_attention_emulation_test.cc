// The flash-attention kernel bodies (flash_attention_body.h) run on CPU threads: one
// std::thread per CUDA thread of a block, std::barrier for __syncthreads and __syncwarp, a
// per-warp exchange for the shuffles, and 16 x 16 tiles for the WMMA fragments (every lane
// holds the whole tile, as the fragments' documented semantics allow; lane 0 stores). Compared
// with the CPU engine on shapes that are not multiples of the tiles, at the bf16 attention
// rule of test_util.h (1e-2 in relative L2 norm, no element off by more than 30 %). Needs no
// GPU (CTest label unit); the GPU tests run the same bodies on the tensor cores.
#include <barrier>
#include <cmath>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/flash_attention_body.h"
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

// Shared by the threads of one emulated block.
struct HostBlock {
  // Shared memory starts as NaNs (all bits set), as garbage would on a GPU: a read of
  // anything the body did not write shows.
  explicit HostBlock(size_t smem_bytes) : block(kThreads), smem(smem_bytes + 128, '\xff') {
    for (int w = 0; w < kThreads / 32; ++w) {
      warp.push_back(std::make_unique<std::barrier<>>(32));
      exchange.emplace_back(32, 0.0f);
    }
  }
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<std::vector<float>> exchange;
  std::vector<char> smem;
  int x = 0, y = 0, grid_x = 1;
  char* aligned_smem() {
    const uintptr_t p = reinterpret_cast<uintptr_t>(smem.data());
    return reinterpret_cast<char*>((p + 127) / 128 * 128);
  }
};

struct Tile {
  float v[256];  // 16 x 16, [row][col] of the logical matrix (A: m x k, B: k x n, Acc: m x n)
};

// The body's execution context on a CPU thread.
class HostCtx {
 public:
  using FragA = Tile;
  using FragBCol = Tile;
  using FragBRow = Tile;
  using Acc = Tile;

  HostCtx(HostBlock* blk, int tid) : blk_(blk), tid_(tid) {}
  int tid() const { return tid_; }
  int block_x() const { return blk_->x; }
  int block_y() const { return blk_->y; }
  int grid_x() const { return blk_->grid_x; }
  void sync() { blk_->block.arrive_and_wait(); }
  void syncwarp() { blk_->warp[tid_ / 32]->arrive_and_wait(); }
  float shfl_xor(float v, int mask) {
    std::vector<float>& x = blk_->exchange[tid_ / 32];
    x[tid_ % 32] = v;
    syncwarp();
    const float got = x[(tid_ % 32) ^ mask];
    syncwarp();
    return got;
  }
  char* smem() { return blk_->aligned_smem(); }

  void fill(Acc& a, float x) {
    for (float& e : a.v) e = x;
  }
  void load_a(FragA& f, const bf16* p, int ld) {
    for (int m = 0; m < 16; ++m) {
      for (int k = 0; k < 16; ++k) f.v[m * 16 + k] = __bfloat162float(p[m * ld + k]);
    }
  }
  void load_b_col(FragBCol& f, const bf16* p, int ld) {  // element (k, n) at p[n * ld + k]
    for (int k = 0; k < 16; ++k) {
      for (int n = 0; n < 16; ++n) f.v[k * 16 + n] = __bfloat162float(p[n * ld + k]);
    }
  }
  void load_b_row(FragBRow& f, const bf16* p, int ld) {  // element (k, n) at p[k * ld + n]
    for (int k = 0; k < 16; ++k) {
      for (int n = 0; n < 16; ++n) f.v[k * 16 + n] = __bfloat162float(p[k * ld + n]);
    }
  }
  void load_acc(Acc& f, const float* p, int ld) {
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) f.v[m * 16 + n] = p[m * ld + n];
    }
  }
  void mma(Acc& d, const Tile& a, const Tile& b) {
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) {
        float acc = d.v[m * 16 + n];
        for (int k = 0; k < 16; ++k) acc += a.v[m * 16 + k] * b.v[k * 16 + n];
        d.v[m * 16 + n] = acc;
      }
    }
  }
  // A warp-collective store: every lane holds the same tile; lane 0 writes it (the body
  // syncs the warp before any lane reads it, as on the GPU).
  void store(float* p, const Acc& f, int ld) {
    if (tid_ % 32 != 0) return;
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) p[m * ld + n] = f.v[m * 16 + n];
    }
  }

 private:
  HostBlock* blk_;
  int tid_;
};

// Runs body(ctx) for every thread of every block of the grid (blocks one after another).
template <typename Body>
void RunGrid(int grid_x, int grid_y, size_t smem_bytes, const Body& body) {
  for (int y = 0; y < grid_y; ++y) {
    for (int x = 0; x < grid_x; ++x) {
      HostBlock blk(smem_bytes);
      blk.x = x;
      blk.y = y;
      blk.grid_x = grid_x;
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&blk, &body, t] {
          HostCtx ctx(&blk, t);
          body(ctx);
        });
      }
      for (std::thread& t : threads) t.join();
    }
  }
}

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
  RunGrid(blocks, s.B * s.H, ForwardSmem<D>::kBytes, [&](HostCtx& ctx) {
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
  RunGrid(blocks, s.B * s.H, BackwardSmem<D>::kBytes, [&](HostCtx& ctx) {
    BackwardQueryBody<D>(ctx, dqkv.data(), delta.data(), gdy.data(), gqkv.data(), lse.data(), s.T,
                         s.C, s.H, scale);
  });
  RunGrid(blocks, s.B * s.H, BackwardSmem<D>::kBytes, [&](HostCtx& ctx) {
    BackwardKeyBody<D>(ctx, dqkv.data(), delta.data(), gdy.data(), gqkv.data(), lse.data(), s.T,
                       s.C, s.H, scale);
  });
  ExpectCloseInNorm(ToFloat(dqkv), want_dqkv, 1e-2, 0.3, "dqkv");
}

// Lengths below, at and across the 64-row tiles (the causal diagonal, the padding rows).
TEST(FlashAttentionEmulationTest, HeadSize64MatchesTheCpuEngine) {
  CheckAgainstTheCpuEngine<64>({1, 77, 128, 2});
  CheckAgainstTheCpuEngine<64>({2, 64, 64, 1});
  CheckAgainstTheCpuEngine<64>({1, 5, 64, 1});
}

TEST(FlashAttentionEmulationTest, HeadSizes16And32And128MatchTheCpuEngine) {
  CheckAgainstTheCpuEngine<16>({1, 130, 32, 2});
  CheckAgainstTheCpuEngine<32>({2, 40, 64, 2});
  CheckAgainstTheCpuEngine<128>({1, 70, 128, 1});
}

}  // namespace
}  // namespace forge::cuda::flash
