// The flash-attention kernels' bodies (flash_attention.h), written once against a small
// execution context so that the same code runs on the GPU (flash_attention.cu: WMMA tensor-core
// fragments, __syncthreads, warp shuffles) and, for tests on machines without a GPU, on CPU
// threads (flash_attention_emulation_test.cc: one std::thread per CUDA thread, barriers for the
// syncs, 16 x 16 tiles for the fragments). What the emulation checks: the tiling, the indexing,
// the causal and length masks, the online softmax, the recomputation in the backward and the
// placement of every sync. What it cannot: the WMMA fragments' hardware behaviour (it models
// their documented semantics: whole-tile loads, products and stores) and timing.
//
// A Ctx provides:
//   int tid(), block_x(), block_y(), grid_x() thread and block indices, blocks along x
//                                             (128 threads per block)
//   void sync()                              __syncthreads
//   void syncwarp()                          __syncwarp
//   float shfl_xor(float v, int mask)        __shfl_xor_sync over the warp
//   char* smem()                             the block's dynamic shared memory
//   types FragA (16x16 bf16, row-major), FragBCol / FragBRow (16x16 bf16 of B stored
//   column- or row-major), Acc (16x16 fp32) and their load_* / mma / fill / store functions.
//
// Layouts are the fused kernels' (kernels.h): qkv [B, T, 3C], y and dy [B, T, C], lse and delta
// [B, H, T]; head size D. Blocks of 64 rows (4 warps of 16), key or query tiles of 64.
#ifndef FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_
#define FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstring>

#ifdef __CUDACC__
#define FORGE_FLASH_FN __device__ __forceinline__
#else
#define FORGE_FLASH_FN inline
#endif

namespace forge::cuda::flash {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarpRows = 16;  // rows (queries, or keys in the dk/dv kernel) per warp
constexpr int kBlockRows = 64;
constexpr int kTile = 64;  // keys (or queries) per tile

// Row pitches in shared memory, padded against bank conflicts; multiples of 8 bf16 or 4 floats
// (16 bytes), as WMMA needs.
template <int D>
struct Pitch {
  static constexpr int kX = D + 8;      // bf16 tiles of 64 rows x D (q, k, v, dy)
  static constexpr int kS = kTile + 4;  // fp32 score tiles, 16 x 64 per warp
  static constexpr int kP = kTile + 8;  // bf16 probability tiles, 16 x 64 per warp
  static constexpr int kO = D + 4;      // fp32 output staging, 16 x D per warp
};

constexpr size_t Round128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// One head size's kernels over a grid of (ceil(T / 64), B·H) blocks. Defined by
// flash_attention.cu (the GPU) and flash_attention_emulated.cc (CPU fibers) for D = 16, 32,
// 64 and 128; flash_attention.cc checks the arguments and picks D for both.
template <int D>
cudaError_t LaunchForward(bf16* y, float* lse, const bf16* qkv, int B, int Tq, int C, int H,
                          float scale, cudaStream_t stream);
template <int D>
cudaError_t LaunchBackward(bf16* dqkv, const float* delta, const bf16* dy, const bf16* qkv,
                           const float* lse, int B, int Tq, int C, int H, float scale,
                           cudaStream_t stream);

#define FORGE_FLASH_INSTANTIATE(D)                                                             \
  template cudaError_t LaunchForward<D>(bf16*, float*, const bf16*, int, int, int, int, float, \
                                        cudaStream_t);                                         \
  template cudaError_t LaunchBackward<D>(bf16*, const float*, const bf16*, const bf16*,        \
                                         const float*, int, int, int, int, float, cudaStream_t);

// Shared-memory regions, as byte offsets from smem().
template <int D>
struct ForwardSmem {
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + Round128(sizeof(bf16) * kBlockRows * Pitch<D>::kX);
  static constexpr size_t kV = kK + Round128(sizeof(bf16) * kTile * Pitch<D>::kX);
  static constexpr size_t kS = kV + Round128(sizeof(bf16) * kTile * Pitch<D>::kX);
  static constexpr size_t kP = kS + Round128(sizeof(float) * 4 * kWarpRows * Pitch<D>::kS);
  static constexpr size_t kO = kP + Round128(sizeof(bf16) * 4 * kWarpRows * Pitch<D>::kP);
  static constexpr size_t kBytes = kO + Round128(sizeof(float) * 4 * kWarpRows * Pitch<D>::kO);
};

// Both backward kernels: two 64-row bf16 tiles that stay (the block's own rows: q and dy, or
// k and v), two that stream (k and v, or q and dy), per-warp fp32 tiles for scores and their
// gradient, bf16 tiles for two products' left operands, staging, and 64 per-row floats twice
// (lse and delta).
template <int D>
struct BackwardSmem {
  static constexpr size_t kOwn0 = 0;
  static constexpr size_t kOwn1 = kOwn0 + Round128(sizeof(bf16) * kBlockRows * Pitch<D>::kX);
  static constexpr size_t kTile0 = kOwn1 + Round128(sizeof(bf16) * kBlockRows * Pitch<D>::kX);
  static constexpr size_t kTile1 = kTile0 + Round128(sizeof(bf16) * kTile * Pitch<D>::kX);
  static constexpr size_t kS = kTile1 + Round128(sizeof(bf16) * kTile * Pitch<D>::kX);
  static constexpr size_t kDp = kS + Round128(sizeof(float) * 4 * kWarpRows * Pitch<D>::kS);
  static constexpr size_t kP0 = kDp + Round128(sizeof(float) * 4 * kWarpRows * Pitch<D>::kS);
  static constexpr size_t kP1 = kP0 + Round128(sizeof(bf16) * 4 * kWarpRows * Pitch<D>::kP);
  static constexpr size_t kO = kP1 + Round128(sizeof(bf16) * 4 * kWarpRows * Pitch<D>::kP);
  static constexpr size_t kRow0 = kO + Round128(sizeof(float) * 4 * kWarpRows * Pitch<D>::kO);
  static constexpr size_t kRow1 = kRow0 + Round128(sizeof(float) * kTile);
  static constexpr size_t kBytes = kRow1 + Round128(sizeof(float) * kTile);
};

// Sixteen bytes (8 bf16) from `from` to `to`, both 16-byte aligned.
FORGE_FLASH_FN void Copy8(bf16* to, const bf16* from) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(to) = *reinterpret_cast<const uint4*>(from);
#else
  std::memcpy(to, from, 16);
#endif
}

// Rows [r0, r0 + 64) of the head slice at column `col` of a [Tq, ld] bf16 matrix into
// tile[64][pitch]; zeros past Tq. Eight elements per load: the head size, the columns and
// the row pitches are multiples of 8 (C = H·D, D >= 16), so every load is 16-byte aligned.
template <int D, class Ctx>
FORGE_FLASH_FN void LoadTile(Ctx& ctx, bf16* tile, const bf16* base, size_t ld, int col, int r0,
                             int Tq) {
  constexpr int kChunks = D / 8;  // per row
  const bf16 zero = __float2bfloat16(0.0f);
  for (int e = ctx.tid(); e < kTile * kChunks; e += kThreads) {
    const int r = e / kChunks, d = (e % kChunks) * 8, row = r0 + r;
    bf16* to = tile + r * Pitch<D>::kX + d;
    if (row < Tq) {
      Copy8(to, base + static_cast<size_t>(row) * ld + col + d);
    } else {
      for (int i = 0; i < 8; ++i) to[i] = zero;
    }
  }
}

// out[16 x 64] (fp32, pitch kS) = A[16 x D] (rows of a bf16 tile) · B^T, B the 64 x D rows of a
// bf16 tile (so B^T is B read column-major).
template <int D, class Ctx>
FORGE_FLASH_FN void RowsTimesTileT(Ctx& ctx, float* out, const bf16* a, const bf16* b) {
  for (int n = 0; n < kTile / 16; ++n) {
    typename Ctx::Acc acc;
    ctx.fill(acc, 0.0f);
    for (int k = 0; k < D / 16; ++k) {
      typename Ctx::FragA fa;
      typename Ctx::FragBCol fb;
      ctx.load_a(fa, a + k * 16, Pitch<D>::kX);
      ctx.load_b_col(fb, b + n * 16 * Pitch<D>::kX + k * 16, Pitch<D>::kX);
      ctx.mma(acc, fa, fb);
    }
    ctx.store(out + n * 16, acc, Pitch<D>::kS);
  }
}

// acc[n] += P[16 x 64] (bf16, pitch kP) · X[64 x D] (a bf16 tile), for the D/16 column tiles.
template <int D, class Ctx>
FORGE_FLASH_FN void ProbsTimesTile(Ctx& ctx, typename Ctx::Acc* acc, const bf16* p, const bf16* x) {
  for (int n = 0; n < D / 16; ++n) {
    for (int k = 0; k < kTile / 16; ++k) {
      typename Ctx::FragA fa;
      typename Ctx::FragBRow fb;
      ctx.load_a(fa, p + k * 16, Pitch<D>::kP);
      ctx.load_b_row(fb, x + k * 16 * Pitch<D>::kX + n * 16, Pitch<D>::kX);
      ctx.mma(acc[n], fa, fb);
    }
  }
}

// Causal attention forward for the 64 queries of block (grid_x − 1 − block_x, b·H + h): y and
// lse (the log-sum-exp of the scaled scores, as kernels.h's AttentionForward).
template <int D, class Ctx>
FORGE_FLASH_FN void ForwardBody(Ctx& ctx, bf16* y, float* lse, const bf16* qkv, int Tq, int C,
                                int H, float scale) {
  using S = ForwardSmem<D>;
  constexpr int kX = Pitch<D>::kX, kS = Pitch<D>::kS, kP = Pitch<D>::kP, kO = Pitch<D>::kO;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  // The last query blocks have the most keys to visit: they go first (block 0 takes them).
  const int q0 = (ctx.grid_x() - 1 - ctx.block_x()) * kBlockRows;
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int r = lane / 2, half = lane % 2;  // this lane's row of the warp, and half of it
  const int qi = q0 + warp * kWarpRows + r;
  char* smem = ctx.smem();
  bf16* q = reinterpret_cast<bf16*>(smem + S::kQ);
  bf16* k = reinterpret_cast<bf16*>(smem + S::kK);
  bf16* v = reinterpret_cast<bf16*>(smem + S::kV);
  float* s = reinterpret_cast<float*>(smem + S::kS) + warp * kWarpRows * kS;
  bf16* p = reinterpret_cast<bf16*>(smem + S::kP) + warp * kWarpRows * kP;
  float* o = reinterpret_cast<float*>(smem + S::kO) + warp * kWarpRows * kO;
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;

  LoadTile<D>(ctx, q, base, C3, h * D, q0, Tq);
  for (int e = lane; e < kWarpRows * D; e += 32) o[(e / D) * kO + e % D] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int last_key = (Tq - 1 < q0 + kBlockRows - 1) ? Tq - 1 : q0 + kBlockRows - 1;
  for (int k0 = 0; k0 <= last_key; k0 += kTile) {
    ctx.sync();  // every warp is done with the previous k and v
    LoadTile<D>(ctx, k, base, C3, C + h * D, k0, Tq);
    LoadTile<D>(ctx, v, base, C3, 2 * C + h * D, k0, Tq);
    ctx.sync();
    RowsTimesTileT<D>(ctx, s, q + warp * kWarpRows * kX, k);
    ctx.syncwarp();
    // Online softmax over this row's half of the tile (two lanes per row).
    const float* srow = s + r * kS;
    float tile_max = -INFINITY;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const int key = k0 + c;
      if (key <= qi && key < Tq) tile_max = fmaxf(tile_max, srow[c] * scale);
    }
    tile_max = fmaxf(tile_max, ctx.shfl_xor(tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    // Every row has a key in every tile it visits (key k0 <= its query), so m_new is finite;
    // the guard keeps a row with none (a future padding mask) at zero instead of NaN.
    const float alpha = (m == -INFINITY || m_new == -INFINITY) ? 0.0f : expf(m - m_new);
    float sum = 0.0f;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const int key = k0 + c;
      const float e =
          (key <= qi && key < Tq && m_new != -INFINITY) ? expf(srow[c] * scale - m_new) : 0.0f;
      p[r * kP + c] = __float2bfloat16(e);
      sum += e;
    }
    sum += ctx.shfl_xor(sum, 1);
    l = l * alpha + sum;
    m = m_new;
    for (int d = half * (D / 2); d < half * (D / 2) + D / 2; ++d) o[r * kO + d] *= alpha;
    ctx.syncwarp();
    typename Ctx::Acc acc[D / 16];
    for (int n = 0; n < D / 16; ++n) ctx.load_acc(acc[n], o + n * 16, kO);
    ProbsTimesTile<D>(ctx, acc, p, v);
    for (int n = 0; n < D / 16; ++n) ctx.store(o + n * 16, acc[n], kO);
    ctx.syncwarp();
  }
  if (qi >= Tq) return;
  bf16* out = y + (static_cast<size_t>(b) * Tq + qi) * C + h * D;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int d = half * (D / 2); d < half * (D / 2) + D / 2; ++d) {
    out[d] = __float2bfloat16(o[r * kO + d] * inv);
  }
  if (half == 0) lse[static_cast<size_t>(bh) * Tq + qi] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// Writes the warp's 16 x D accumulators (staged through `o`) as bf16 rows of dqkv at column
// `col`, for the rows below Tq.
template <int D, class Ctx>
FORGE_FLASH_FN void WriteRows(Ctx& ctx, bf16* dqkv, const typename Ctx::Acc* acc, float* o,
                              int row0, int Tq, size_t ld, int col) {
  constexpr int kO = Pitch<D>::kO;
  for (int n = 0; n < D / 16; ++n) ctx.store(o + n * 16, acc[n], kO);
  ctx.syncwarp();
  const int lane = ctx.tid() % 32;
  for (int e = lane; e < kWarpRows * D; e += 32) {
    const int r = e / D, d = e % D, row = row0 + r;
    if (row < Tq) dqkv[static_cast<size_t>(row) * ld + col + d] = __float2bfloat16(o[r * kO + d]);
  }
}

// dq for the 64 queries of block (grid_x − 1 − block_x, b·H + h): dq_i = sum_j dS_ij k_j, with
// dS = P ∘ (dP − delta) · scale, P = exp(scale · q k^T − lse), dP = dy v^T, over keys j <= i.
template <int D, class Ctx>
FORGE_FLASH_FN void BackwardQueryBody(Ctx& ctx, bf16* dqkv, const float* delta, const bf16* dy,
                                      const bf16* qkv, const float* lse, int Tq, int C, int H,
                                      float scale) {
  using S = BackwardSmem<D>;
  constexpr int kX = Pitch<D>::kX, kS = Pitch<D>::kS, kP = Pitch<D>::kP, kO = Pitch<D>::kO;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  const int q0 = (ctx.grid_x() - 1 - ctx.block_x()) * kBlockRows;  // the longest rows first
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int r = lane / 2, half = lane % 2;
  const int row = warp * kWarpRows + r, qi = q0 + row;
  char* smem = ctx.smem();
  bf16* q = reinterpret_cast<bf16*>(smem + S::kOwn0);
  bf16* g = reinterpret_cast<bf16*>(smem + S::kOwn1);  // dy rows
  bf16* k = reinterpret_cast<bf16*>(smem + S::kTile0);
  bf16* v = reinterpret_cast<bf16*>(smem + S::kTile1);
  float* s = reinterpret_cast<float*>(smem + S::kS) + warp * kWarpRows * kS;
  float* dp = reinterpret_cast<float*>(smem + S::kDp) + warp * kWarpRows * kS;
  bf16* ds = reinterpret_cast<bf16*>(smem + S::kP0) + warp * kWarpRows * kP;
  float* o = reinterpret_cast<float*>(smem + S::kO) + warp * kWarpRows * kO;
  float* row_lse = reinterpret_cast<float*>(smem + S::kRow0);
  float* row_delta = reinterpret_cast<float*>(smem + S::kRow1);
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;

  LoadTile<D>(ctx, q, base, C3, h * D, q0, Tq);
  LoadTile<D>(ctx, g, dy + static_cast<size_t>(b) * Tq * C, C, h * D, q0, Tq);
  for (int e = ctx.tid(); e < kBlockRows; e += kThreads) {
    const int i = q0 + e;
    row_lse[e] = i < Tq ? lse[static_cast<size_t>(bh) * Tq + i] : 0.0f;
    row_delta[e] = i < Tq ? delta[static_cast<size_t>(bh) * Tq + i] : 0.0f;
  }
  typename Ctx::Acc dq[D / 16];
  for (int n = 0; n < D / 16; ++n) ctx.fill(dq[n], 0.0f);
  const int last_key = (Tq - 1 < q0 + kBlockRows - 1) ? Tq - 1 : q0 + kBlockRows - 1;
  for (int k0 = 0; k0 <= last_key; k0 += kTile) {
    ctx.sync();
    LoadTile<D>(ctx, k, base, C3, C + h * D, k0, Tq);
    LoadTile<D>(ctx, v, base, C3, 2 * C + h * D, k0, Tq);
    ctx.sync();  // also publishes q, dy, lse and delta on the first pass
    RowsTimesTileT<D>(ctx, s, q + warp * kWarpRows * kX, k);
    RowsTimesTileT<D>(ctx, dp, g + warp * kWarpRows * kX, v);
    ctx.syncwarp();
    const float li = row_lse[row], di = row_delta[row];
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const int key = k0 + c;
      float d = 0.0f;
      if (key <= qi && key < Tq && qi < Tq) {
        const float pe = expf(s[r * kS + c] * scale - li);
        d = pe * (dp[r * kS + c] - di) * scale;
      }
      ds[r * kP + c] = __float2bfloat16(d);
    }
    ctx.syncwarp();
    ProbsTimesTile<D>(ctx, dq, ds, k);
  }
  WriteRows<D>(ctx, dqkv + static_cast<size_t>(b) * Tq * C3, dq, o, q0 + warp * kWarpRows, Tq, C3,
               h * D);
}

// dk and dv for the 64 keys of block (block_x, b·H + h): dv_j = sum_i P_ij dy_i and
// dk_j = sum_i dS_ij q_i over queries i >= j (the transposed products of BackwardQueryBody).
template <int D, class Ctx>
FORGE_FLASH_FN void BackwardKeyBody(Ctx& ctx, bf16* dqkv, const float* delta, const bf16* dy,
                                    const bf16* qkv, const float* lse, int Tq, int C, int H,
                                    float scale) {
  using S = BackwardSmem<D>;
  constexpr int kX = Pitch<D>::kX, kS = Pitch<D>::kS, kP = Pitch<D>::kP, kO = Pitch<D>::kO;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  const int j0 = ctx.block_x() * kBlockRows;
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int r = lane / 2, half = lane % 2;
  const int kj = j0 + warp * kWarpRows + r;  // this lane's key
  char* smem = ctx.smem();
  bf16* k = reinterpret_cast<bf16*>(smem + S::kOwn0);
  bf16* v = reinterpret_cast<bf16*>(smem + S::kOwn1);
  bf16* q = reinterpret_cast<bf16*>(smem + S::kTile0);
  bf16* g = reinterpret_cast<bf16*>(smem + S::kTile1);  // dy rows
  float* st = reinterpret_cast<float*>(smem + S::kS) + warp * kWarpRows * kS;
  float* dpt = reinterpret_cast<float*>(smem + S::kDp) + warp * kWarpRows * kS;
  bf16* pt = reinterpret_cast<bf16*>(smem + S::kP0) + warp * kWarpRows * kP;
  bf16* dst = reinterpret_cast<bf16*>(smem + S::kP1) + warp * kWarpRows * kP;
  float* o = reinterpret_cast<float*>(smem + S::kO) + warp * kWarpRows * kO;
  float* col_lse = reinterpret_cast<float*>(smem + S::kRow0);
  float* col_delta = reinterpret_cast<float*>(smem + S::kRow1);
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const bf16* dyb = dy + static_cast<size_t>(b) * Tq * C;

  LoadTile<D>(ctx, k, base, C3, C + h * D, j0, Tq);
  LoadTile<D>(ctx, v, base, C3, 2 * C + h * D, j0, Tq);
  typename Ctx::Acc dk[D / 16], dv[D / 16];
  for (int n = 0; n < D / 16; ++n) {
    ctx.fill(dk[n], 0.0f);
    ctx.fill(dv[n], 0.0f);
  }
  for (int i0 = j0; i0 < Tq; i0 += kTile) {
    ctx.sync();
    LoadTile<D>(ctx, q, base, C3, h * D, i0, Tq);
    LoadTile<D>(ctx, g, dyb, C, h * D, i0, Tq);
    for (int e = ctx.tid(); e < kTile; e += kThreads) {
      const int i = i0 + e;
      col_lse[e] = i < Tq ? lse[static_cast<size_t>(bh) * Tq + i] : 0.0f;
      col_delta[e] = i < Tq ? delta[static_cast<size_t>(bh) * Tq + i] : 0.0f;
    }
    ctx.sync();
    RowsTimesTileT<D>(ctx, st, k + warp * kWarpRows * kX, q);   // S^T: keys x queries
    RowsTimesTileT<D>(ctx, dpt, v + warp * kWarpRows * kX, g);  // dP^T
    ctx.syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const int qi = i0 + c;
      float pe = 0.0f, d = 0.0f;
      if (qi >= kj && qi < Tq && kj < Tq) {
        pe = expf(st[r * kS + c] * scale - col_lse[c]);
        d = pe * (dpt[r * kS + c] - col_delta[c]) * scale;
      }
      pt[r * kP + c] = __float2bfloat16(pe);
      dst[r * kP + c] = __float2bfloat16(d);
    }
    ctx.syncwarp();
    ProbsTimesTile<D>(ctx, dv, pt, g);
    ProbsTimesTile<D>(ctx, dk, dst, q);
  }
  bf16* out = dqkv + static_cast<size_t>(b) * Tq * C3;
  WriteRows<D>(ctx, out, dk, o, j0 + warp * kWarpRows, Tq, C3, C + h * D);
  ctx.syncwarp();  // the staging is reused
  WriteRows<D>(ctx, out, dv, o, j0 + warp * kWarpRows, Tq, C3, 2 * C + h * D);
}

}  // namespace forge::cuda::flash

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_
