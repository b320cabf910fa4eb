// The flash-attention kernels' bodies (flash_attention.h), written once against a small
// execution context so that the same code runs on the GPU (flash_attention.cu: mma.sync tensor-
// core instructions, __syncthreads, warp shuffles) and, for tests on machines without a GPU, on
// the CUDA emulation's fibers (flash_attention_emulation.h: a fiber per CUDA thread, barriers
// for the syncs, and mma.sync computed from its documented fragment layout). What the
// emulation checks: the tiling, the indexing, the fragment layouts, the causal and length
// masks, the online softmax, the recomputation in the backward and the placement of every
// sync. What it cannot: timing, register and shared-memory limits, and the hardware itself.
//
// FlashAttention-2's structure: each warp owns 16 rows (queries, or keys in the dk/dv kernel);
// its scores, probabilities and output accumulators live in registers as mma.m16n8k16
// fragments, and a score fragment (fp32, 16 x 8 accumulator layout) becomes the left operand
// of the next product (bf16, 16 x 16 A layout) without leaving the thread. Shared memory holds
// only bf16 tiles of q, k, v and dy; the streamed ones are double-buffered (cp.async copies
// the next tile while this one is computed), and row-major B operands are read with
// ldmatrix.trans.
//
// A Ctx provides:
//   int tid(), block_x(), block_y(), grid_x() thread and block indices, blocks along x
//                                             (128 threads per block)
//   void sync()                              __syncthreads
//   float shfl_xor(float v, int mask)        __shfl_xor_sync over the warp
//   char* smem()                             the block's dynamic shared memory
//   void ldmatrix_x4(uint32_t (&r)[4], const bf16* row)
//       ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8 x 8 bf16 matrices of shared memory;
//       lanes 8i..8i+7 give the addresses of matrix i's rows 0..7 (16 bytes each, 16-byte
//       aligned), and lane l receives in r[i] the elements (l / 4, 2 (l % 4)) and
//       (l / 4, 2 (l % 4) + 1) of matrix i, the first in the low half: one instruction for
//       what four 32-bit shared loads a lane would otherwise take.
//   void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* row)
//       ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: the same addresses; lane l receives
//       the elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4) of matrix i (the
//       transpose's), the first in the low half.
//   void copy16_async(bf16* smem_dst, const bf16* global_src, bool valid)
//       cp.async.cg.shared.global of 16 bytes (both 16-byte aligned), zero-filled when !valid
//   void async_commit()        cp.async.commit_group
//   void async_wait_prior()    cp.async.wait_group 1: all but the latest group have landed
//   void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
//       d += A · B, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: A 16 x 16 and B 16 x 8
//       bf16 (two per 32-bit register, the lower column or row in the low half), d 16 x 8 fp32.
//       Lane l holds, with g = l / 4 and c = 2 (l % 4):
// clang-format off
//         a[0] = A(g, c..c+1)     a[1] = A(g+8, c..c+1)
//         a[2] = A(g, c+8..c+9)   a[3] = A(g+8, c+8..c+9)
//         b[0] = B(c..c+1, g)     b[1] = B(c+8..c+9, g)
//         d[0..1] = D(g, c..c+1)  d[2..3] = D(g+8, c..c+1)
// clang-format on
//
// Layouts are the fused kernels' (kernels.h): qkv [B, T, 3C], y and dy [B, T, C], lse and delta
// [B, H, T]; head size D. Blocks of 64 rows (4 warps of 16), key or query tiles of 64.
#ifndef FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_
#define FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define FORGE_FLASH_FN __device__ __forceinline__
#define FORGE_UNROLL _Pragma("unroll")
#else
#define FORGE_FLASH_FN inline
#define FORGE_UNROLL
#endif

namespace forge::cuda::flash {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarpRows = 16;  // rows (queries, or keys in the dk/dv kernel) per warp
constexpr int kBlockRows = 64;
constexpr int kTile = 64;  // keys (or queries) per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Row pitch of the bf16 tiles in shared memory: D + 8 elements, so that the eight rows and
// four column pairs a fragment load touches fall in 32 different banks, and rows stay 16-byte
// aligned for the tile loads.
template <int D>
struct Pitch {
  static constexpr int kX = D + 8;
};

constexpr size_t Round128(size_t bytes) { return (bytes + 127) / 128 * 128; }

template <int D>
constexpr size_t TileBytes() {
  return Round128(sizeof(bf16) * kTile * Pitch<D>::kX);
}

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

// Shared memory, as byte offsets from smem(). The forward: the block's q, and two buffers each
// of the key tiles' k and v. Both backward kernels: two tiles that stay (the block's own rows:
// q and dy, or k and v), two buffers each of two that stream (k and v, or q and dy), and the
// streamed rows' lse and delta (used by the dk/dv kernel). At head size 64: 46 KB forward,
// 55 KB backward.
template <int D>
struct ForwardSmem {
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + TileBytes<D>();  // two k tiles, then two v tiles
  static constexpr size_t kV = kK + 2 * TileBytes<D>();
  static constexpr size_t kBytes = kV + 2 * TileBytes<D>();
};

template <int D>
struct BackwardSmem {
  static constexpr size_t kOwn0 = 0;
  static constexpr size_t kOwn1 = kOwn0 + TileBytes<D>();
  static constexpr size_t kTile0 = kOwn1 + TileBytes<D>();       // two buffers
  static constexpr size_t kTile1 = kTile0 + 2 * TileBytes<D>();  // two buffers
  static constexpr size_t kRow0 = kTile1 + 2 * TileBytes<D>();
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

FORGE_FLASH_FN uint32_t Bits(bf16 x) {
  uint16_t v;
  std::memcpy(&v, &x, 2);
  return v;
}

// Two bf16 in one register, `lo` in the low half.
FORGE_FLASH_FN uint32_t Pack(bf16 lo, bf16 hi) { return Bits(lo) | (Bits(hi) << 16); }

// Two floats rounded to bf16 (to nearest even) in one register, `lo` in the low half.
FORGE_FLASH_FN uint32_t Pack(float lo, float hi) {
#ifdef __CUDA_ARCH__
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
#else
  return Pack(__float2bfloat16(lo), __float2bfloat16(hi));
#endif
}

// 2^x by the special-function unit (ex2.approx.ftz: about 2 ulp, subnormal results flushed to
// zero, 2^-inf = 0). exp2f adds instructions around the same approximation for subnormals,
// which a softmax weight never needs.
FORGE_FLASH_FN float Exp2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

// Stores two floats as consecutive bf16 at p (4-byte aligned).
FORGE_FLASH_FN void Store2(bf16* p, float lo, float hi) {
  const uint32_t v = Pack(lo, hi);
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint32_t*>(p) = v;
#else
  std::memcpy(static_cast<void*>(p), &v, 4);
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

// LoadTile with asynchronous copies (cp.async, 16 bytes each; rows past Tq are zero-filled):
// the caller commits them as a group and waits for the group before a sync publishes the tile.
template <int D, class Ctx>
FORGE_FLASH_FN void LoadTileAsync(Ctx& ctx, bf16* tile, const bf16* base, size_t ld, int col,
                                  int r0, int Tq) {
  constexpr int kChunks = D / 8;
  for (int e = ctx.tid(); e < kTile * kChunks; e += kThreads) {
    const int r = e / kChunks, d = (e % kChunks) * 8, row = r0 + r;
    const bool valid = row < Tq;
    // A zero-filled copy reads nothing, but its source stays a valid address: row 0.
    ctx.copy16_async(tile + r * Pitch<D>::kX + d,
                     base + static_cast<size_t>(valid ? row : 0) * ld + col + d, valid);
  }
}

// Two streams of 64-row tiles (k and v, or q and dy) through shared memory, double-buffered
// with cp.async: tile t is in buffer t % 2 of each stream while tile t + 1 is copied into the
// other buffer. Per tile t the kernel calls Advance, computes on tile0(t) and tile1(t), then
// syncs, so that no warp still reads them when tile t + 2 is copied over them.
struct RowSource {  // a sequence's [Tq, ld] bf16 matrix, the head slice at column `col`
  const bf16* base;
  size_t ld;
  int col;
};

template <int D>
struct TileStreams {
  static constexpr int kBuf = static_cast<int>(TileBytes<D>() / sizeof(bf16));
  bf16* buf0;  // two tiles each
  bf16* buf1;
  RowSource src0, src1;
  int Tq;

  FORGE_FLASH_FN const bf16* tile0(int t) const { return buf0 + (t % 2) * kBuf; }
  FORGE_FLASH_FN const bf16* tile1(int t) const { return buf1 + (t % 2) * kBuf; }

  // Starts copying tile t (rows r0 .. r0 + 63 of both streams) into buffer t % 2, as one
  // cp.async group.
  template <class Ctx>
  FORGE_FLASH_FN void Start(Ctx& ctx, int t, int r0) const {
    LoadTileAsync<D>(ctx, buf0 + (t % 2) * kBuf, src0.base, src0.ld, src0.col, r0, Tq);
    LoadTileAsync<D>(ctx, buf1 + (t % 2) * kBuf, src1.base, src1.ld, src1.col, r0, Tq);
    ctx.async_commit();
  }

  // Before computing tile t: starts tile t + 1 (rows from next_r0) when `has_next`, into the
  // buffers tile t - 1 used, then waits until tile t is visible to every warp (along with
  // whatever the block stored before this call).
  template <class Ctx>
  FORGE_FLASH_FN void Advance(Ctx& ctx, int t, bool has_next, int next_r0) const {
    if (has_next) {
      Start(ctx, t + 1, next_r0);
    } else {
      ctx.async_commit();  // an empty group keeps wait_group's count the same
    }
    ctx.async_wait_prior();  // this thread's copies of tile t have landed...
    ctx.sync();              // ...and everyone's are visible
  }
};

// The four registers of an ldmatrix.x4 that loaded two B fragments: the first two are the
// first fragment's, the last two the second's.
FORGE_FLASH_FN void SplitPair(const uint32_t (&r)[4], uint32_t (&b0)[2], uint32_t (&b1)[2]) {
  b0[0] = r[0];
  b0[1] = r[1];
  b1[0] = r[2];
  b1[1] = r[3];
}

// The A fragment of columns [k0, k0 + 16) of 16 rows of a row-major bf16 tile in shared
// memory, with one ldmatrix.x4: matrix m (given by lanes 8m..8m+7) is rows 8 (m % 2).. and
// columns k0 + 8 (m / 2)..; the plain load hands lane l elements (l / 4, 2 (l % 4)) and
// (l / 4, 2 (l % 4) + 1) of each, so r[0..3] are A(g, c..), A(g + 8, c..), A(g, c + 8..) and
// A(g + 8, c + 8..): a[0..3]'s layout. Rows are 16-byte aligned (pitch and column offsets are
// multiples of 8 elements), and the pitch's padding puts a matrix's 8 rows in distinct banks.
template <class Ctx>
FORGE_FLASH_FN void LoadA(Ctx& ctx, uint32_t (&a)[4], const bf16* rows, int ld, int k0) {
  const int lane = ctx.tid() % 32, m = lane / 8;
  ctx.ldmatrix_x4(a, rows + ((m % 2) * 8 + lane % 8) * ld + k0 + (m / 2) * 8);
}

// The B fragments (k in [k0, k0 + 16)) of two adjacent groups of 8 columns n (n in [0, 8) and
// [8, 16)) of B(k, n) = nk[n * ld + k]: B is the transpose of 16 rows of a row-major tile
// (scores: q k^T takes k's rows as B's columns), with one ldmatrix.x4: matrix m is rows
// 8 (m / 2).. and columns k0 + 8 (m % 2)..; lane l gets elements (l / 4, 2 (l % 4)) and
// (l / 4, 2 (l % 4) + 1) of each, which are B(c.., g) and B(c + 8.., g) of the first group (r[0],
// r[1]) and of the second (r[2], r[3]): b's layout. Alignment and banks as LoadA.
template <class Ctx>
FORGE_FLASH_FN void LoadBTransposedPair(Ctx& ctx, uint32_t (&b0)[2], uint32_t (&b1)[2],
                                        const bf16* nk, int ld, int k0) {
  const int lane = ctx.tid() % 32, m = lane / 8;
  uint32_t r[4];
  ctx.ldmatrix_x4(r, nk + ((m / 2) * 8 + lane % 8) * ld + k0 + (m % 2) * 8);
  SplitPair(r, b0, b1);
}

// The B fragments of two adjacent groups of 8 columns (n in [0, 8) and [8, 16); k in [k0,
// k0 + 16)) of B(k, n) = kn[k * ld + n], 16 rows of a row-major tile (p v takes v as it is
// stored), with one ldmatrix.x4.trans: lane l gives the address of row l % 8 of 8 x 8 matrix
// l / 8, where matrices 0 and 1 are rows k0.. and k0 + 8.. of columns 0..7, and 2 and 3 the
// same rows of columns 8..15; the transposing load hands lane l elements (2 (l % 4), l / 4)
// and (2 (l % 4) + 1, l / 4) of each, which is B's fragment layout. Rows are 16-byte aligned
// (pitch and column offsets are multiples of 8 elements) and the pitch's padding puts a
// matrix's 8 rows in distinct banks.
template <class Ctx>
FORGE_FLASH_FN void LoadBPair(Ctx& ctx, uint32_t (&b0)[2], uint32_t (&b1)[2], const bf16* kn,
                              int ld, int k0) {
  const int lane = ctx.tid() % 32, m = lane / 8;
  uint32_t r[4];
  ctx.ldmatrix_x4_trans(r, kn + (k0 + (m % 2) * 8 + lane % 8) * ld + (m / 2) * 8);
  SplitPair(r, b0, b1);
}

// The A fragments of 16 rows x K columns of a row-major tile, kept in registers by the caller
// for FragsTimesRowsT.
template <int K, class Ctx>
FORGE_FLASH_FN void LoadRows(Ctx& ctx, uint32_t (*fa)[4], const bf16* a, int ld) {
  FORGE_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) LoadA(ctx, fa[kk], a, ld, 16 * kk);
}

// acc[j] (16 x 8, j < NJ) += A · B_j with A's fragments already loaded (LoadRows), B_j the
// transpose of rows [8j, 8j + 8) of a row-major tile (K columns).
template <int NJ, int K, class Ctx>
FORGE_FLASH_FN void FragsTimesRowsT(Ctx& ctx, float (*acc)[4], const uint32_t (*fa)[4],
                                    const bf16* x, int ld) {
  static_assert(NJ % 2 == 0, "B fragments are loaded two groups of 8 columns at a time");
  FORGE_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) {
    FORGE_UNROLL
    for (int j = 0; j < NJ; j += 2) {
      uint32_t fb0[2], fb1[2];
      LoadBTransposedPair(ctx, fb0, fb1, x + 8 * j * ld, ld, 16 * kk);
      ctx.mma(acc[j], fa[kk], fb0);
      ctx.mma(acc[j + 1], fa[kk], fb1);
    }
  }
}

// acc[j] (16 x 8, j < NJ) += A · B_j: A is 16 rows x K columns of a row-major tile, and B_j
// the transpose of rows [8j, 8j + 8) of another (K columns): a 16 x 8·NJ block of A · X^T.
// A's fragments are loaded one 16-column slice at a time, so only one is live.
template <int NJ, int K, class Ctx>
FORGE_FLASH_FN void RowsTimesRowsT(Ctx& ctx, float (*acc)[4], const bf16* a, const bf16* x,
                                   int ld) {
  FORGE_UNROLL
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t fa[1][4];
    LoadA(ctx, fa[0], a, ld, k0);
    FragsTimesRowsT<NJ, 16>(ctx, acc, fa, x + k0, ld);
  }
}

// acc[n] (16 x 8, n < D/8) += P · X: P is 16 x K, held as K/8 accumulator fragments p (fp32,
// rounded to bf16 here), X is K rows x D columns of a row-major tile. An accumulator pair
// (columns 8j.. and 8j + 8..) is exactly an A fragment's registers, so P never leaves the
// thread.
template <int K, int D, class Ctx>
FORGE_FLASH_FN void RegsTimesRows(Ctx& ctx, float (*acc)[4], const float (*p)[4], const bf16* x,
                                  int ld) {
  FORGE_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) {
    const uint32_t fa[4] = {Pack(p[2 * kk][0], p[2 * kk][1]), Pack(p[2 * kk][2], p[2 * kk][3]),
                            Pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            Pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
    FORGE_UNROLL
    for (int n = 0; n < D / 8; n += 2) {  // D / 8 is even (D >= 16)
      uint32_t fb0[2], fb1[2];
      LoadBPair(ctx, fb0, fb1, x + 8 * n, ld, 16 * kk);
      ctx.mma(acc[n], fa, fb0);
      ctx.mma(acc[n + 1], fa, fb1);
    }
  }
}

template <int N>
FORGE_FLASH_FN void Zero(float (*acc)[4]) {
  FORGE_UNROLL
  for (int j = 0; j < N; ++j) {
    FORGE_UNROLL
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
  }
}

// Writes a warp's 16 x D accumulators, row r scaled by row_scale[r >= 8], as bf16 into rows
// row0.. (those below Tq) of a [Tq, ld] matrix at column `col`.
template <int D, class Ctx>
FORGE_FLASH_FN void WriteRows(Ctx& ctx, bf16* out, const float (*acc)[4],
                              const float (&row_scale)[2], int row0, int Tq, size_t ld, int col) {
  const int lane = ctx.tid() % 32;
  FORGE_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + lane / 4 + 8 * half;
    if (row >= Tq) continue;
    bf16* p = out + static_cast<size_t>(row) * ld + col + 2 * (lane % 4);
    FORGE_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      Store2(p + 8 * n, acc[n][2 * half] * row_scale[half], acc[n][2 * half + 1] * row_scale[half]);
    }
  }
}

// Causal attention forward for the 64 queries of block (grid_x − 1 − block_x, b·H + h): y and
// lse (the natural log-sum-exp of the scaled scores, as kernels.h's AttentionForward). Scores
// are kept in base 2 (scaled by log2 e) so that each exponential is one exp2.
template <int D, class Ctx>
FORGE_FLASH_FN void ForwardBody(Ctx& ctx, bf16* y, float* lse, const bf16* qkv, int Tq, int C,
                                int H, float scale) {
  using S = ForwardSmem<D>;
  constexpr int kX = Pitch<D>::kX;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  // The last query blocks have the most keys to visit: they go first (block 0 takes them).
  const int q0 = (ctx.grid_x() - 1 - ctx.block_x()) * kBlockRows;
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int row0 = q0 + warp * kWarpRows;  // the warp's first query
  char* smem = ctx.smem();
  bf16* q = reinterpret_cast<bf16*>(smem + S::kQ);
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const float scale2 = scale * kLog2e;
  const int last_key = (Tq - 1 < q0 + kBlockRows - 1) ? Tq - 1 : q0 + kBlockRows - 1;
  const int tiles = last_key / kTile + 1;
  const TileStreams<D> kv{reinterpret_cast<bf16*>(smem + S::kK),
                          reinterpret_cast<bf16*>(smem + S::kV),
                          {base, C3, C + h * D},
                          {base, C3, 2 * C + h * D},
                          Tq};

  kv.Start(ctx, 0, 0);
  LoadTile<D>(ctx, q, base, C3, h * D, q0, Tq);
  ctx.sync();
  uint32_t qf[D / 16][4];  // the warp's 16 queries, for every key tile
  LoadRows<D>(ctx, qf, q + warp * kWarpRows * kX, kX);
  float o[D / 8][4];
  Zero<D / 8>(o);
  // Per row half (rows lane/4 and lane/4 + 8): the running maximum (base 2), and this lane's
  // part of the running sum of exponentials (its quad's four parts add up at the end).
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int t = 0; t < tiles; ++t) {
    const int k0 = t * kTile;
    kv.Advance(ctx, t, t + 1 < tiles, k0 + kTile);
    const bf16* k = kv.tile0(t);
    const bf16* v = kv.tile1(t);
    float s[kTile / 8][4];
    Zero<kTile / 8>(s);
    FragsTimesRowsT<kTile / 8, D>(ctx, s, qf, k, kX);
    // Only a tile with keys past the warp's first query, or past Tq, needs the causal and
    // length mask (the same for the whole warp).
    const bool masked = k0 + kTile - 1 > row0 || k0 + kTile > Tq;
    float tile_max[2] = {-INFINITY, -INFINITY};
    FORGE_UNROLL
    for (int j = 0; j < kTile / 8; ++j) {
      FORGE_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int qi = row0 + lane / 4 + 8 * (e / 2), key = k0 + 8 * j + 2 * (lane % 4) + e % 2;
        s[j][e] = !masked || (key <= qi && key < Tq) ? s[j][e] * scale2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
    }
    float alpha[2];
    FORGE_UNROLL
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], ctx.shfl_xor(tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], ctx.shfl_xor(tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      // Every row has a key in every tile it visits (key k0 <= its query), so m_new is finite;
      // the guards keep a row with none (a future padding mask) at zero instead of NaN.
      alpha[r] = m_new == -INFINITY ? 0.0f : Exp2(m[r] - m_new);
      m[r] = m_new;
    }
    FORGE_UNROLL
    for (int j = 0; j < kTile / 8; ++j) {
      FORGE_UNROLL
      for (int e = 0; e < 4; ++e) {
        const float mr = m[e / 2];
        s[j][e] = mr == -INFINITY ? 0.0f : Exp2(s[j][e] - mr);  // exp2(-inf) = 0: masked
      }
    }
    FORGE_UNROLL
    for (int r = 0; r < 2; ++r) {
      float sum = 0.0f;
      FORGE_UNROLL
      for (int j = 0; j < kTile / 8; ++j) sum += s[j][2 * r] + s[j][2 * r + 1];
      l[r] = l[r] * alpha[r] + sum;
    }
    FORGE_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      FORGE_UNROLL
      for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e / 2];
    }
    RegsTimesRows<kTile, D>(ctx, o, s, v, kX);
    ctx.sync();  // every warp is done with k and v before tile t + 2 is loaded over them
  }
  float inv[2];
  FORGE_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += ctx.shfl_xor(l[r], 1);
    l[r] += ctx.shfl_xor(l[r], 2);
    inv[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
  }
  WriteRows<D>(ctx, y + static_cast<size_t>(b) * Tq * C, o, inv, row0, Tq, C, h * D);
  if (lane % 4 == 0) {
    FORGE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int qi = row0 + lane / 4 + 8 * r;
      if (qi < Tq) {
        lse[static_cast<size_t>(bh) * Tq + qi] =
            l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
      }
    }
  }
}

// dq for the 64 queries of block (grid_x − 1 − block_x, b·H + h): dq_i = sum_j dS_ij k_j, with
// dS = P ∘ (dP − delta) · scale, P = exp(scale · q k^T − lse), dP = dy v^T, over keys j <= i.
template <int D, class Ctx>
FORGE_FLASH_FN void BackwardQueryBody(Ctx& ctx, bf16* dqkv, const float* delta, const bf16* dy,
                                      const bf16* qkv, const float* lse, int Tq, int C, int H,
                                      float scale) {
  using S = BackwardSmem<D>;
  constexpr int kX = Pitch<D>::kX;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  const int q0 = (ctx.grid_x() - 1 - ctx.block_x()) * kBlockRows;  // the longest rows first
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int row0 = q0 + warp * kWarpRows;
  char* smem = ctx.smem();
  bf16* q = reinterpret_cast<bf16*>(smem + S::kOwn0);
  bf16* g = reinterpret_cast<bf16*>(smem + S::kOwn1);  // dy rows
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const float scale2 = scale * kLog2e;
  const int last_key = (Tq - 1 < q0 + kBlockRows - 1) ? Tq - 1 : q0 + kBlockRows - 1;
  const int tiles = last_key / kTile + 1;
  const TileStreams<D> kv{reinterpret_cast<bf16*>(smem + S::kTile0),
                          reinterpret_cast<bf16*>(smem + S::kTile1),
                          {base, C3, C + h * D},
                          {base, C3, 2 * C + h * D},
                          Tq};

  kv.Start(ctx, 0, 0);
  LoadTile<D>(ctx, q, base, C3, h * D, q0, Tq);
  LoadTile<D>(ctx, g, dy + static_cast<size_t>(b) * Tq * C, C, h * D, q0, Tq);
  float row_lse[2], row_delta[2];  // base 2
  FORGE_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int qi = row0 + lane / 4 + 8 * r;
    row_lse[r] = qi < Tq ? lse[static_cast<size_t>(bh) * Tq + qi] * kLog2e : 0.0f;
    row_delta[r] = qi < Tq ? delta[static_cast<size_t>(bh) * Tq + qi] : 0.0f;
  }
  float dq[D / 8][4];
  Zero<D / 8>(dq);
  for (int t = 0; t < tiles; ++t) {
    const int k0 = t * kTile;
    kv.Advance(ctx, t, t + 1 < tiles, k0 + kTile);  // on the first pass also publishes q, dy
    const bf16* k = kv.tile0(t);
    const bf16* v = kv.tile1(t);
    float s[kTile / 8][4], dp[kTile / 8][4];
    Zero<kTile / 8>(s);
    Zero<kTile / 8>(dp);
    RowsTimesRowsT<kTile / 8, D>(ctx, s, q + warp * kWarpRows * kX, k, kX);
    RowsTimesRowsT<kTile / 8, D>(ctx, dp, g + warp * kWarpRows * kX, v, kX);
    // As in the forward, only a tile with keys past the warp's first query, or past Tq, needs
    // the mask (the same for the whole warp). Rows past Tq are never written, and a row's
    // dq depends on its own dS row alone.
    const bool masked = k0 + kTile - 1 > row0 || k0 + kTile > Tq;
    FORGE_UNROLL
    for (int j = 0; j < kTile / 8; ++j) {
      FORGE_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2, qi = row0 + lane / 4 + 8 * r;
        const int key = k0 + 8 * j + 2 * (lane % 4) + e % 2;
        float d = 0.0f;
        if (!masked || (key <= qi && key < Tq && qi < Tq)) {
          d = Exp2(s[j][e] * scale2 - row_lse[r]) * (dp[j][e] - row_delta[r]) * scale;
        }
        s[j][e] = d;  // dS
      }
    }
    RegsTimesRows<kTile, D>(ctx, dq, s, k, kX);
    ctx.sync();  // every warp is done with tile t's buffers before tile t + 2 is loaded
  }
  const float one[2] = {1.0f, 1.0f};
  WriteRows<D>(ctx, dqkv + static_cast<size_t>(b) * Tq * C3, dq, one, row0, Tq, C3, h * D);
}

// dk and dv for the 64 keys of block (block_x, b·H + h): dv_j = sum_i P_ij dy_i and
// dk_j = sum_i dS_ij q_i over queries i >= j (the transposed products of BackwardQueryBody).
// Queries go in sub-tiles of kSub, which bounds the registers the scores take next to dk
// and dv.
template <int D, class Ctx>
FORGE_FLASH_FN void BackwardKeyBody(Ctx& ctx, bf16* dqkv, const float* delta, const bf16* dy,
                                    const bf16* qkv, const float* lse, int Tq, int C, int H,
                                    float scale) {
  using S = BackwardSmem<D>;
  constexpr int kX = Pitch<D>::kX;
  constexpr int kSub = D <= 64 ? kTile : kTile / 4;
  const int bh = ctx.block_y(), b = bh / H, h = bh % H;
  const int j0 = ctx.block_x() * kBlockRows;
  const int warp = ctx.tid() / 32, lane = ctx.tid() % 32;
  const int row0 = j0 + warp * kWarpRows;  // the warp's first key
  char* smem = ctx.smem();
  bf16* k = reinterpret_cast<bf16*>(smem + S::kOwn0);
  bf16* v = reinterpret_cast<bf16*>(smem + S::kOwn1);
  float* col_lse = reinterpret_cast<float*>(smem + S::kRow0);  // base 2
  float* col_delta = reinterpret_cast<float*>(smem + S::kRow1);
  const size_t C3 = static_cast<size_t>(3) * C;
  const bf16* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const bf16* dyb = dy + static_cast<size_t>(b) * Tq * C;
  const float scale2 = scale * kLog2e;

  const TileStreams<D> qg{reinterpret_cast<bf16*>(smem + S::kTile0),
                          reinterpret_cast<bf16*>(smem + S::kTile1),
                          {base, C3, h * D},
                          {dyb, static_cast<size_t>(C), h * D},
                          Tq};  // q and dy rows

  qg.Start(ctx, 0, j0);
  LoadTile<D>(ctx, k, base, C3, C + h * D, j0, Tq);
  LoadTile<D>(ctx, v, base, C3, 2 * C + h * D, j0, Tq);
  float dk[D / 8][4], dv[D / 8][4];
  Zero<D / 8>(dk);
  Zero<D / 8>(dv);
  for (int i0 = j0, t = 0; i0 < Tq; i0 += kTile, ++t) {
    // lse and delta of tile t: single-buffered, written after every warp left tile t - 1, and
    // published (with k and v on the first pass) by Advance's sync.
    for (int e = ctx.tid(); e < kTile; e += kThreads) {
      const int i = i0 + e;
      col_lse[e] = i < Tq ? lse[static_cast<size_t>(bh) * Tq + i] * kLog2e : 0.0f;
      col_delta[e] = i < Tq ? delta[static_cast<size_t>(bh) * Tq + i] : 0.0f;
    }
    qg.Advance(ctx, t, i0 + kTile < Tq, i0 + kTile);
    const bf16* q = qg.tile0(t);
    const bf16* g = qg.tile1(t);
    FORGE_UNROLL
    for (int c0 = 0; c0 < kTile; c0 += kSub) {
      float st[kSub / 8][4], dst[kSub / 8][4];  // S^T and dP^T, then P^T and dS^T: keys x queries
      Zero<kSub / 8>(st);
      Zero<kSub / 8>(dst);
      RowsTimesRowsT<kSub / 8, D>(ctx, st, k + warp * kWarpRows * kX, q + c0 * kX, kX);
      RowsTimesRowsT<kSub / 8, D>(ctx, dst, v + warp * kWarpRows * kX, g + c0 * kX, kX);
      FORGE_UNROLL
      for (int j = 0; j < kSub / 8; ++j) {
        FORGE_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int kj = row0 + lane / 4 + 8 * (e / 2);
          const int c = c0 + 8 * j + 2 * (lane % 4) + e % 2, qi = i0 + c;
          float pe = 0.0f, d = 0.0f;
          if (qi >= kj && qi < Tq && kj < Tq) {
            pe = Exp2(st[j][e] * scale2 - col_lse[c]);
            d = pe * (dst[j][e] - col_delta[c]) * scale;
          }
          st[j][e] = pe;
          dst[j][e] = d;
        }
      }
      RegsTimesRows<kSub, D>(ctx, dv, st, g + c0 * kX, kX);
      RegsTimesRows<kSub, D>(ctx, dk, dst, q + c0 * kX, kX);
    }
    ctx.sync();  // every warp is done with tile t before tile t + 2 and its lse are loaded
  }
  bf16* out = dqkv + static_cast<size_t>(b) * Tq * C3;
  const float one[2] = {1.0f, 1.0f};
  WriteRows<D>(ctx, out, dk, one, row0, Tq, C3, C + h * D);
  WriteRows<D>(ctx, out, dv, one, row0, Tq, C3, 2 * C + h * D);
}

}  // namespace forge::cuda::flash

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_BODY_H_
