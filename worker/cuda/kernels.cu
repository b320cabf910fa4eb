#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "worker/cuda/gelu_math.h"
#include "worker/cuda/kernel_math.h"
#include "worker/cuda/kernels.h"
#include "worker/cuda/launch.h"

namespace forge::cuda {

// The decay spans of one AdamW launch, passed by value (kernel parameter space): span r is
// entries [begin[r], begin[r + 1]) with weight decay wd[r]. Outside the anonymous namespace:
// the launcher's lambda captures one.
struct LaunchSpans {
  int count;
  size_t begin[kMaxDecaySpansPerLaunch + 1];
  float wd[kMaxDecaySpansPerLaunch];
};

namespace {

using kmath::BlockMaxSum;
using kmath::BlockSum;
using kmath::FromF;
using kmath::kWarp;
using kmath::MaxSumAdd;
using kmath::ToF;
using kmath::WarpMaxSum;
using kmath::WarpSum;
using kmath::WriteNormAndFactor;

constexpr int kThreads = 256;
constexpr float kLayerNormEps = 1e-5f;
// Rows per partial sum of the two-stage column reductions (LayerNorm and bias gradients): 32,
// so that the fused LayerNorm backward (one block per partial) has 256 blocks at 8 x 1024 rows.
constexpr int kRowsPerPartial = 32;
// Attention: lanes per query (or key) row, each holding every kGroup-th element of the head;
// query rows per block; keys (or queries) per shared-memory tile.
constexpr int kGroup = 4;
constexpr int kRowTile = 64;
constexpr int kKeyTile = 32;
constexpr int kMaxNormBlocks = 512;

// The attention kernels put the (sequence, head) pairs on the grid's y dimension.
bool AttentionGridFits(int B, int H) { return B >= 1 && H >= 1 && int64_t{B} * H <= 65535; }

// Sum over the kGroup lanes of a row group (lanes 4r .. 4r+3 of a warp).
__device__ __forceinline__ float GroupSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// 16 bytes of T (8 bf16 or 4 floats): the unit of the vectorised loads and stores of the
// memory-bound kernels. The address must be 16-byte aligned; IsAligned16 checks a pointer.
template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <typename T>
__device__ __forceinline__ Pack16<T> LoadPack(const T* p) {
  Pack16<T> r;
#ifdef FORGE_CUDA_EMULATION
  for (int k = 0; k < Pack16<T>::kN; ++k) r.v[k] = p[k];  // host C++: no aliasing via uint4
#else
  const uint4 bits = *reinterpret_cast<const uint4*>(p);  // one 128-bit load
  memcpy(&r, &bits, sizeof bits);
#endif
  return r;
}

template <typename T>
__device__ __forceinline__ void StorePack(T* p, const Pack16<T>& r) {
#ifdef FORGE_CUDA_EMULATION
  for (int k = 0; k < Pack16<T>::kN; ++k) p[k] = r.v[k];
#else
  uint4 bits;
  memcpy(&bits, &r, sizeof bits);
  *reinterpret_cast<uint4*>(p) = bits;  // one 128-bit store
#endif
}

bool IsAligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Runs launch(std::true_type{}) where `packed` (the launcher found the pointers and pitches
// fit 16-byte packs), else launch(std::false_type{}): the lambda passes decltype(vec)::value
// as its kernel's kVec, so one launch statement serves both variants.
template <typename Launch>
void LaunchPacked(bool packed, Launch&& launch) {
  if (packed) {
    launch(std::true_type{});
  } else {
    launch(std::false_type{});
  }
}

// Entries c .. c + kN of a row of `size` entries as floats, entries past the row reading as
// `fill`. With kVec (the row 16-byte aligned, c a multiple of kN, kN a multiple of the pack) a
// chunk wholly inside the row is read in 16-byte packs; otherwise entry by entry.
template <int kN, bool kVec, typename T>
__device__ __forceinline__ void LoadChunk(float (&out)[kN], const T* row, int c, int size,
                                          float fill = 0.0f) {
  constexpr int kP = Pack16<T>::kN;
  static_assert(kN % kP == 0, "a chunk is whole packs");
  if (kVec && c + kN <= size) {
#pragma unroll
    for (int q = 0; q < kN; q += kP) {
      const Pack16<T> a = LoadPack(row + c + q);
#pragma unroll
      for (int k = 0; k < kP; ++k) out[q + k] = ToF(a.v[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kN; ++k) out[k] = c + k < size ? ToF(row[c + k]) : fill;
  }
}

// Stores the chunk's entries that lie inside the row, as LoadChunk reads them.
template <int kN, bool kVec, typename T>
__device__ __forceinline__ void StoreChunk(T* row, const float (&in)[kN], int c, int size) {
  constexpr int kP = Pack16<T>::kN;
  static_assert(kN % kP == 0, "a chunk is whole packs");
  if (kVec && c + kN <= size) {
#pragma unroll
    for (int q = 0; q < kN; q += kP) {
      Pack16<T> a;
#pragma unroll
      for (int k = 0; k < kP; ++k) a.v[k] = FromF<T>(in[q + k]);
      StorePack(row + c + q, a);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      if (c + k < size) row[c + k] = FromF<T>(in[k]);
    }
  }
}

// Entries per chunk of the kernels over flat arrays (embedding, GELU, AdamW, gradient norm):
// two 16-byte packs of fp32, one of bf16, so each thread has that many loads in flight.
constexpr int kFlatChunk = 8;

// The entries of the chunk at c of an array of n (all kFlatChunk but at the end).
__device__ __forceinline__ int ChunkSize(size_t c, size_t n) {
  return n - c < size_t{kFlatChunk} ? static_cast<int>(n - c) : kFlatChunk;
}

unsigned Blocks(size_t n, int threads = kThreads) {
  const size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b == 0 ? 1 : b) : 65535 * 16);
}

// Blocks for one thread per kFlatChunk entries of n.
unsigned FlatBlocks(size_t n) { return Blocks((n + kFlatChunk - 1) / kFlatChunk); }

// ---------------------------------------------------------------------------- embeddings

// Chunk q is entries (q % per_row) · kFlatChunk ... of row q / per_row.
template <typename T, bool kVec>
__global__ void EmbeddingForwardKernel(T* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int Tq, int C, size_t chunks) {
  const int per_row = (C + kFlatChunk - 1) / kFlatChunk;
  for (size_t q = blockIdx.x * size_t{blockDim.x} + threadIdx.x; q < chunks;
       q += size_t{gridDim.x} * blockDim.x) {
    const size_t n = q / per_row;
    const int c = static_cast<int>(q % per_row) * kFlatChunk, t = static_cast<int>(n % Tq);
    float e[kFlatChunk], p[kFlatChunk];
    LoadChunk<kFlatChunk, kVec>(e, wte + static_cast<size_t>(tokens[n]) * C, c, C);
    LoadChunk<kFlatChunk, kVec>(p, wpe + static_cast<size_t>(t) * C, c, C);
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) e[k] += p[k];
    StoreChunk<kFlatChunk, kVec>(out + n * C, e, c, C);
  }
}

template <typename T>
__global__ void EmbeddingBackwardWteKernel(float* dwte, const T* dx, const int32_t* order,
                                           const int32_t* start, const int32_t* bucket_token,
                                           int C) {
  const int bucket = blockIdx.x;
  const int p0 = start[bucket], p1 = start[bucket + 1];
  float* row = dwte + static_cast<size_t>(bucket_token[bucket]) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0;
    for (int p = p0; p < p1; ++p) acc += ToF(dx[static_cast<size_t>(order[p]) * C + c]);
    row[c] += acc;
  }
}

template <typename T>
__global__ void EmbeddingBackwardWpeKernel(float* dwpe, const T* dx, int B, int Tq, int C) {
  const int t = blockIdx.x;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0;
    for (int b = 0; b < B; ++b) acc += ToF(dx[(static_cast<size_t>(b) * Tq + t) * C + c]);
    dwpe[static_cast<size_t>(t) * C + c] += acc;
  }
}

// ---------------------------------------------------------------------------- LayerNorm

// One warp per row; lane l owns the row's chunks of kN entries (one 16-byte pack of T) l,
// l + 32, ... With kVec (C a multiple of kN, rows, weight and bias 16-byte aligned) the chunks
// are read and written in packs.
template <typename T, bool kVec>
__global__ void LayerNormForwardKernel(T* out, float* mean, float* rstd, const T* inp,
                                       const float* weight, const float* bias, int N, int C) {
  constexpr int kN = Pack16<T>::kN;
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= N) return;
  const T* x = inp + static_cast<size_t>(row) * C;
  float s = 0;
  for (int c = lane * kN; c < C; c += kWarp * kN) {
    float xv[kN];
    LoadChunk<kN, kVec>(xv, x, c, C);
#pragma unroll
    for (int k = 0; k < kN; ++k) s += xv[k];
  }
  const float m = WarpSum(s) / C;
  float v = 0;
  for (int c = lane * kN; c < C; c += kWarp * kN) {
    float xv[kN];
    LoadChunk<kN, kVec>(xv, x, c, C, m);  // entries past the row add nothing
#pragma unroll
    for (int k = 0; k < kN; ++k) v += (xv[k] - m) * (xv[k] - m);
  }
  const float r = 1.0f / sqrtf(WarpSum(v) / C + kLayerNormEps);
  T* o = out + static_cast<size_t>(row) * C;
  for (int c = lane * kN; c < C; c += kWarp * kN) {
    float xv[kN], w[kN], b[kN];
    LoadChunk<kN, kVec>(xv, x, c, C);
    LoadChunk<kN, kVec>(w, weight, c, C);
    LoadChunk<kN, kVec>(b, bias, c, C);
#pragma unroll
    for (int k = 0; k < kN; ++k) xv[k] = (xv[k] - m) * r * w[k] + b[k];
    StoreChunk<kN, kVec>(o, xv, c, C);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// The LayerNorm backward's arithmetic on one chunk of kN entries of a row with mean m and
// rstd r, written once for LayerNormBackwardInputKernel and LayerNormBackwardFusedKernel so
// that both give the same bits: the chunk's dy, x and weight; the sums of g = dy · w and
// g · xhat (the first pass over the row); and d += the input gradient (the second).
template <int kN, bool kVec, typename T>
__device__ __forceinline__ void LoadGradientChunk(float (&dy)[kN], float (&xv)[kN], float (&w)[kN],
                                                  const T* dout_row, const T* inp_row,
                                                  const float* weight, int c, int C) {
  LoadChunk<kN, kVec>(dy, dout_row, c, C);
  LoadChunk<kN, kVec>(xv, inp_row, c, C);
  LoadChunk<kN, kVec>(w, weight, c, C);
}

template <int kN>
__device__ __forceinline__ void AddGradientSums(float& sg, float& sgx, const float (&dy)[kN],
                                                const float (&xv)[kN], const float (&w)[kN],
                                                float m, float r) {
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    const float g = dy[k] * w[k];
    sg += g;
    sgx += g * (xv[k] - m) * r;
  }
}

template <int kN>
__device__ __forceinline__ void AddInputGradient(float (&d)[kN], const float (&dy)[kN],
                                                 const float (&xv)[kN], const float (&w)[kN],
                                                 float m, float r, float g_mean, float gx_mean) {
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    const float g = dy[k] * w[k], xhat = (xv[k] - m) * r;
    d[k] += (g - g_mean - xhat * gx_mean) * r;
  }
}

// dinp += the LayerNorm's input gradient; rows and chunks as in the forward.
template <typename T, bool kVec>
__global__ void LayerNormBackwardInputKernel(T* dinp, const T* dout, const T* inp,
                                             const float* weight, const float* mean,
                                             const float* rstd, int N, int C) {
  constexpr int kN = Pack16<T>::kN;
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  const float m = mean[row], r = rstd[row];
  float sg = 0, sgx = 0;
  for (int c = lane * kN; c < C; c += kWarp * kN) {
    float dy[kN], xv[kN], w[kN];
    LoadGradientChunk<kN, kVec>(dy, xv, w, dout + off, inp + off, weight, c, C);
    AddGradientSums(sg, sgx, dy, xv, w, m, r);
  }
  const float g_mean = WarpSum(sg) / C, gx_mean = WarpSum(sgx) / C;
  for (int c = lane * kN; c < C; c += kWarp * kN) {
    float dy[kN], xv[kN], w[kN], d[kN];
    LoadGradientChunk<kN, kVec>(dy, xv, w, dout + off, inp + off, weight, c, C);
    LoadChunk<kN, kVec>(d, dinp + off, c, C);
    AddInputGradient(d, dy, xv, w, m, r, g_mean, gx_mean);
    StoreChunk<kN, kVec>(dinp + off, d, c, C);
  }
}

// Stage 1 of a column reduction: block (x, p) sums rows [p·R, (p+1)·R) of its kColPacks
// chunks of kN columns (one 16-byte pack of T each). Thread (lane, x) owns one chunk and rows
// p·R + lane, + kColLanes, ...; the lanes' sums are then added in lane order through shared
// memory. With inp == nullptr it sums dout (bias gradient); otherwise also dout · xhat
// (LayerNorm weight gradient) into the second half of `partial`.
constexpr int kColLanes = 8;
constexpr int kColPacks = kThreads / kColLanes;

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    ColumnPartialKernel(float* partial, const T* dout, const T* inp, const float* mean,
                        const float* rstd, int N, int C) {
  constexpr int kN = Pack16<T>::kN;
  // Entry k of chunk x at x·(kN + 1) + k: the odd stride puts a warp's stores (one lane and
  // k, 32 chunks) and its reads (32 consecutive columns) on distinct banks, or nearly.
  constexpr int kStride = kN + 1;
  __shared__ float sdb[kColLanes][kColPacks * kStride], sdw[kColLanes][kColPacks * kStride];
  const int x = threadIdx.x % kColPacks, lane = threadIdx.x / kColPacks;
  const int tile = blockIdx.x * kColPacks * kN, c = tile + x * kN;
  const int p = blockIdx.y, parts = gridDim.y;
  const int r0 = p * kRowsPerPartial, r1 = min(N, r0 + kRowsPerPartial);
  float db[kN] = {}, dw[kN] = {};
  if (c < C) {
    for (int n = r0 + lane; n < r1; n += kColLanes) {
      float dy[kN];
      LoadChunk<kN, kVec>(dy, dout + static_cast<size_t>(n) * C, c, C);
#pragma unroll
      for (int k = 0; k < kN; ++k) db[k] += dy[k];
      if (inp != nullptr) {
        float xv[kN];
        LoadChunk<kN, kVec>(xv, inp + static_cast<size_t>(n) * C, c, C);
        const float m = mean[n], r = rstd[n];
#pragma unroll
        for (int k = 0; k < kN; ++k) dw[k] += dy[k] * ((xv[k] - m) * r);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    sdb[lane][x * kStride + k] = db[k];
    sdw[lane][x * kStride + k] = dw[k];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kColPacks * kN && tile + e < C; e += blockDim.x) {
    float b = 0, w = 0;
    for (int l = 0; l < kColLanes; ++l) {
      b += sdb[l][(e / kN) * kStride + e % kN];
      w += sdw[l][(e / kN) * kStride + e % kN];
    }
    partial[static_cast<size_t>(p) * C + tile + e] = b;
    if (inp != nullptr) partial[static_cast<size_t>(parts + p) * C + tile + e] = w;
  }
}

// Stage 2: block b finishes columns b·32 .. b·32 + 31. Thread (lane, x) adds the partials
// lane, lane + kColLanes, ... of its column in order; the lanes' sums are then added in lane
// order. A warp (one lane) reads 32 consecutive columns of a partial.
constexpr int kFinishColumns = kThreads / kColLanes;

__global__ void __launch_bounds__(kThreads)
    ColumnFinishKernel(float* dbias, float* dweight, const float* partial, int parts, int C) {
  __shared__ float sdb[kColLanes][kFinishColumns], sdw[kColLanes][kFinishColumns];
  const int x = threadIdx.x % kFinishColumns, lane = threadIdx.x / kFinishColumns;
  const int c = blockIdx.x * kFinishColumns + x;
  float db = 0, dw = 0;
  if (c < C) {
    for (int p = lane; p < parts; p += kColLanes) {
      db += partial[static_cast<size_t>(p) * C + c];
      if (dweight != nullptr) dw += partial[static_cast<size_t>(parts + p) * C + c];
    }
  }
  sdb[lane][x] = db;
  sdw[lane][x] = dw;
  __syncthreads();
  if (lane != 0 || c >= C) return;
  for (int l = 1; l < kColLanes; ++l) {
    db += sdb[l][x];
    dw += sdw[l][x];
  }
  dbias[c] += db;
  if (dweight != nullptr) dweight[c] += dw;
}

// The LayerNorm backward in one pass over dout and inp: the input gradient as
// LayerNormBackwardInputKernel computes it, and the first stage of the weight and bias
// gradients as ColumnPartialKernel does (warp w of block p takes the rows p·R + w,
// + kColLanes, ... that ColumnPartialKernel's lane w sums, and the warps' sums are added in
// warp order), so dout and inp are read once instead of twice. Lane l keeps the column sums
// of its chunks l, l + 32, ... (kChunks of them: C <= kChunks · 32 · kN) in registers, and
// ColumnFinishKernel completes them. Rows, weight and dinp in 16-byte packs (RowsInPacks).
constexpr int kFusedMaxChunks = 4;

// The column sums of a block's warps (each lane's acc holds its chunks l, l + 32, ...: the
// fused kernel's layout), added over the warps in order into out[0..C), through `sacc`
// (ColumnPartialKernel's bank-spreading layout, entry k of chunk x at x·(kN + 1) + k). Every
// thread of the block calls it; it leaves `sacc` free for the next call.
template <int kChunks, int kN>
__device__ __forceinline__ void WriteWarpColumnSums(float* out, const float (&acc)[kChunks][kN],
                                                    float (*sacc)[kChunks * kWarp * (kN + 1)],
                                                    int C) {
  constexpr int kStride = kN + 1;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
#pragma unroll
    for (int k = 0; k < kN; ++k) sacc[warp][(j * kWarp + lane) * kStride + k] = acc[j][k];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < C; e += blockDim.x) {
    float sum = 0;
    for (int l = 0; l < kColLanes; ++l) sum += sacc[l][(e / kN) * kStride + e % kN];
    out[e] = sum;
  }
  __syncthreads();
}

template <typename T, int kChunks>
__global__ void __launch_bounds__(kThreads)
    LayerNormBackwardFusedKernel(T* dinp, float* partial, const T* dout, const T* inp,
                                 const float* weight, const float* mean, const float* rstd, int N,
                                 int C) {
  static_assert(kThreads / kWarp == kColLanes, "a warp for each of ColumnPartialKernel's lanes");
  constexpr int kN = Pack16<T>::kN;
  __shared__ float sacc[kColLanes][kChunks * kWarp * (kN + 1)];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int p = blockIdx.x, parts = gridDim.x;
  const int r0 = p * kRowsPerPartial, r1 = min(N, r0 + kRowsPerPartial);
  float db[kChunks][kN] = {}, dw[kChunks][kN] = {};
  for (int n = r0 + warp; n < r1; n += kColLanes) {
    const size_t off = static_cast<size_t>(n) * C;
    const float m = mean[n], r = rstd[n];
    float sg = 0, sgx = 0;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = (j * kWarp + lane) * kN;
      if (c >= C) break;
      float dy[kN], xv[kN], w[kN];
      LoadGradientChunk<kN, true>(dy, xv, w, dout + off, inp + off, weight, c, C);
      AddGradientSums(sg, sgx, dy, xv, w, m, r);
    }
    const float g_mean = WarpSum(sg) / C, gx_mean = WarpSum(sgx) / C;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = (j * kWarp + lane) * kN;
      if (c >= C) break;
      float dy[kN], xv[kN], w[kN], d[kN];
      LoadGradientChunk<kN, true>(dy, xv, w, dout + off, inp + off, weight, c, C);
      LoadChunk<kN, true>(d, dinp + off, c, C);
#pragma unroll
      for (int k = 0; k < kN; ++k) {  // ColumnPartialKernel's sums
        db[j][k] += dy[k];
        dw[j][k] += dy[k] * ((xv[k] - m) * r);
      }
      AddInputGradient(d, dy, xv, w, m, r, g_mean, gx_mean);
      StoreChunk<kN, true>(dinp + off, d, c, C);
    }
  }
  WriteWarpColumnSums(partial + static_cast<size_t>(p) * C, db, sacc, C);
  WriteWarpColumnSums(partial + static_cast<size_t>(parts + p) * C, dw, sacc, C);
}

int Parts(int N) { return (N + kRowsPerPartial - 1) / kRowsPerPartial; }
constexpr int kMaxParts = 65535;  // the column reduction's parts go on the grid's y dimension

// Whether rows of C entries of T, at every pointer given, can be read in 16-byte packs.
template <typename T>
bool RowsInPacks(int C, std::initializer_list<const void*> rows) {
  if (C % Pack16<T>::kN != 0) return false;
  for (const void* p : rows) {
    if (!IsAligned16(p)) return false;
  }
  return true;
}

// The second stage of a column reduction, from `parts` partials.
void ColumnFinish(float* dbias, float* dweight, const float* scratch, int parts, int C,
                  cudaStream_t stream) {
  FORGE_LAUNCH(ColumnFinishKernel, (C + kFinishColumns - 1) / kFinishColumns, kThreads, 0, stream,
               dbias, dweight, scratch, parts, C);
}

// Both stages of a column reduction (bias gradient; with inp, also the LayerNorm weight's).
template <typename T>
void ColumnReduce(float* dbias, float* dweight, float* scratch, const T* dout, const T* inp,
                  const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  const int parts = Parts(N);
  const dim3 grid((C + kColPacks * Pack16<T>::kN - 1) / (kColPacks * Pack16<T>::kN), parts);
  LaunchPacked(RowsInPacks<T>(C, {dout, inp == nullptr ? dout : inp}), [&](auto vec) {
    FORGE_LAUNCH((ColumnPartialKernel<T, decltype(vec)::value>), grid, kThreads, 0, stream, scratch,
                 dout, inp, mean, rstd, N, C);
  });
  ColumnFinish(dbias, dweight, scratch, parts, C, stream);
}

// ---------------------------------------------------------------------------- GELU

template <typename T, bool kVec>
__global__ void GeluForwardKernel(T* out, const T* inp, size_t n) {
  for (size_t c = (blockIdx.x * size_t{blockDim.x} + threadIdx.x) * kFlatChunk; c < n;
       c += size_t{gridDim.x} * blockDim.x * kFlatChunk) {
    const int size = ChunkSize(c, n);
    float x[kFlatChunk];
    LoadChunk<kFlatChunk, kVec>(x, inp + c, 0, size);
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) x[k] = GeluOf(x[k]);
    StoreChunk<kFlatChunk, kVec>(out + c, x, 0, size);
  }
}

template <typename T, bool kVec>
__global__ void GeluBackwardKernel(T* dinp, const T* inp, const T* dout, size_t n) {
  for (size_t c = (blockIdx.x * size_t{blockDim.x} + threadIdx.x) * kFlatChunk; c < n;
       c += size_t{gridDim.x} * blockDim.x * kFlatChunk) {
    const int size = ChunkSize(c, n);
    float x[kFlatChunk], d[kFlatChunk];
    LoadChunk<kFlatChunk, kVec>(x, inp + c, 0, size);
    LoadChunk<kFlatChunk, kVec>(d, dout + c, 0, size);
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) d[k] *= GeluGradOf(x[k]);
    StoreChunk<kFlatChunk, kVec>(dinp + c, d, 0, size);
  }
}

// ---------------------------------------------------------------------------- attention
//
// Each query (forward, dq) or key (dk, dv) is owned by a group of kGroup consecutive lanes;
// lane `part` of the group holds elements part, part + kGroup, ... of the head (D of them, so
// the head size is D · kGroup). Dot products are a per-lane partial sum plus two shuffles.
// Shared-memory tiles hold kKeyTile rows of the head in fp32. All lanes run every loop
// iteration (shuffles need the whole warp); masking happens after the shuffles.

// Loads rows r0 .. r0 + kKeyTile of the head slice at column `col` of a [Tq, ld] matrix into
// tile[kKeyTile][hs] (zeros past Tq).
template <typename T>
__device__ __forceinline__ void LoadRows(float* tile, const T* base, size_t ld, int col, int r0,
                                         int Tq, int hs) {
  for (int e = threadIdx.x; e < kKeyTile * hs; e += blockDim.x) {
    const int j = e / hs, d = e % hs, r = r0 + j;
    tile[e] = r < Tq ? ToF(base[static_cast<size_t>(r) * ld + col + d]) : 0.0f;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kRowTile* kGroup)
    AttentionForwardKernel(T* y, float* lse, const T* qkv, int Tq, int C, int H, float scale) {
  constexpr int hs = D * kGroup;
  __shared__ float ks[kKeyTile * hs];
  __shared__ float vs[kKeyTile * hs];
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kRowTile;
  const int part = threadIdx.x % kGroup;
  const int i = q0 + static_cast<int>(threadIdx.x) / kGroup;
  const size_t C3 = static_cast<size_t>(3) * C;
  const T* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const bool active = i < Tq;
  float q[D], o[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = active ? ToF(base[static_cast<size_t>(i) * C3 + h * hs + d * kGroup + part]) * scale
                  : 0.0f;
    o[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int last_key = min(Tq - 1, q0 + kRowTile - 1);
  for (int k0 = 0; k0 <= last_key; k0 += kKeyTile) {
    __syncthreads();
    LoadRows(ks, base, C3, C + h * hs, k0, Tq, hs);
    LoadRows(vs, base, C3, 2 * C + h * hs, k0, Tq, hs);
    __syncthreads();
    const int kend = min(kKeyTile, last_key + 1 - k0);
    for (int j = 0; j < kend; ++j) {
      const float* kr = ks + j * hs;
      float s = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) s += q[d] * kr[d * kGroup + part];
      s = GroupSum(s);
      if (active && k0 + j <= i) {
        if (s > m) {
          const float a = expf(m - s);
          l *= a;
#pragma unroll
          for (int d = 0; d < D; ++d) o[d] *= a;
          m = s;
        }
        const float p = expf(s - m);
        l += p;
        const float* vr = vs + j * hs;
#pragma unroll
        for (int d = 0; d < D; ++d) o[d] += p * vr[d * kGroup + part];
      }
    }
  }
  if (!active) return;
  T* out = y + (static_cast<size_t>(b) * Tq + i) * C + h * hs;
  const float inv = 1.0f / l;
#pragma unroll
  for (int d = 0; d < D; ++d) out[d * kGroup + part] = FromF<T>(o[d] * inv);
  if (part == 0) lse[static_cast<size_t>(bh) * Tq + i] = m + logf(l);
}

// delta[bh, i] = sum over the head of dy · y (rowsum of P ∘ dP). kDeltaLanes consecutive lanes
// share a row, so a warp reads whole runs of the head's contiguous entries, a chunk of kN per
// lane per step: with kVec (the head size a multiple of kN, every row aligned) in 16-byte
// packs.
constexpr int kDeltaLanes = 8;

template <typename T, bool kVec>
__global__ void AttentionDeltaKernel(float* delta, const T* dy, const T* y, int B, int Tq, int C,
                                     int H) {
  constexpr int kN = Pack16<T>::kN;
  const int hs = C / H;
  const size_t rows = static_cast<size_t>(B) * H * Tq;
  const int part = threadIdx.x % kDeltaLanes;
  const size_t group = (blockIdx.x * size_t{blockDim.x} + threadIdx.x) / kDeltaLanes;
  const size_t groups = size_t{gridDim.x} * blockDim.x / kDeltaLanes;
  // The warp's groups run the loop together (the shuffles need every lane): it goes on while
  // the warp's first group has a row; a group past the last row computes and drops a zero.
  const size_t warp_first = group - group % (kWarp / kDeltaLanes);
  for (size_t w = warp_first; w < rows; w += groups) {
    const size_t idx = w + (group - warp_first);
    float acc = 0.0f;
    if (idx < rows) {
      const int i = static_cast<int>(idx % Tq);
      const int bh = static_cast<int>(idx / Tq), b = bh / H, h = bh % H;
      const size_t off = (static_cast<size_t>(b) * Tq + i) * C + h * hs;
      for (int d = part * kN; d < hs; d += kDeltaLanes * kN) {
        float a[kN], c[kN];
        LoadChunk<kN, kVec>(a, dy + off, d, hs);
        LoadChunk<kN, kVec>(c, y + off, d, hs);
#pragma unroll
        for (int k = 0; k < kN; ++k) acc += a[k] * c[k];
      }
    }
    // Sum over the row's lanes, in a fixed tree.
    for (int o = kDeltaLanes / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (idx < rows && part == 0) delta[idx] = acc;
  }
}

// dq for the queries of one row tile: dq_i = scale · sum_j dS_ij k_j.
template <typename T, int D>
__global__ void __launch_bounds__(kRowTile* kGroup)
    AttentionBackwardQueryKernel(T* dqkv, const float* delta, const T* dy, const T* qkv,
                                 const float* lse, int Tq, int C, int H, float scale) {
  constexpr int hs = D * kGroup;
  __shared__ float ks[kKeyTile * hs];
  __shared__ float vs[kKeyTile * hs];
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kRowTile;
  const int part = threadIdx.x % kGroup;
  const int i = q0 + static_cast<int>(threadIdx.x) / kGroup;
  const size_t C3 = static_cast<size_t>(3) * C;
  const T* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const bool active = i < Tq;
  float q[D], g[D], dq[D];
  const size_t yoff = (static_cast<size_t>(b) * Tq + i) * C + h * hs;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = active ? ToF(base[static_cast<size_t>(i) * C3 + h * hs + d * kGroup + part]) : 0.0f;
    g[d] = active ? ToF(dy[yoff + d * kGroup + part]) : 0.0f;
    dq[d] = 0.0f;
  }
  const float li = active ? lse[static_cast<size_t>(bh) * Tq + i] : 0.0f;
  const float di = active ? delta[static_cast<size_t>(bh) * Tq + i] : 0.0f;
  const int last_key = min(Tq - 1, q0 + kRowTile - 1);
  for (int k0 = 0; k0 <= last_key; k0 += kKeyTile) {
    __syncthreads();
    LoadRows(ks, base, C3, C + h * hs, k0, Tq, hs);
    LoadRows(vs, base, C3, 2 * C + h * hs, k0, Tq, hs);
    __syncthreads();
    const int kend = min(kKeyTile, last_key + 1 - k0);
    for (int j = 0; j < kend; ++j) {
      const float* kr = ks + j * hs;
      const float* vr = vs + j * hs;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        s += q[d] * kr[d * kGroup + part];
        dp += g[d] * vr[d * kGroup + part];
      }
      s = GroupSum(s);
      dp = GroupSum(dp);
      if (active && k0 + j <= i) {
        const float p = expf(s * scale - li);
        const float ds = p * (dp - di) * scale;
#pragma unroll
        for (int d = 0; d < D; ++d) dq[d] += ds * kr[d * kGroup + part];
      }
    }
  }
  if (!active) return;
  T* out = dqkv + (static_cast<size_t>(b) * Tq + i) * C3 + h * hs;
#pragma unroll
  for (int d = 0; d < D; ++d) out[d * kGroup + part] = FromF<T>(dq[d]);
}

// dk and dv for the keys of one row tile: dv_j = sum_i P_ij dy_i, dk_j = scale · sum_i dS_ij q_i,
// over the queries i >= j.
template <typename T, int D>
__global__ void __launch_bounds__(kRowTile* kGroup)
    AttentionBackwardKeyKernel(T* dqkv, const float* delta, const T* dy, const T* qkv,
                               const float* lse, int Tq, int C, int H, float scale) {
  constexpr int hs = D * kGroup;
  __shared__ float qs[kKeyTile * hs];
  __shared__ float gs[kKeyTile * hs];
  __shared__ float ls[kKeyTile];
  __shared__ float ds_[kKeyTile];
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int j0 = blockIdx.x * kRowTile;
  const int part = threadIdx.x % kGroup;
  const int j = j0 + static_cast<int>(threadIdx.x) / kGroup;
  const size_t C3 = static_cast<size_t>(3) * C;
  const T* base = qkv + static_cast<size_t>(b) * Tq * C3;
  const T* dyb = dy + static_cast<size_t>(b) * Tq * C;
  const bool active = j < Tq;
  float k[D], v[D], dk[D], dv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const size_t off = static_cast<size_t>(j) * C3 + h * hs + d * kGroup + part;
    k[d] = active ? ToF(base[off + C]) : 0.0f;
    v[d] = active ? ToF(base[off + 2 * C]) : 0.0f;
    dk[d] = 0.0f;
    dv[d] = 0.0f;
  }
  for (int i0 = j0; i0 < Tq; i0 += kKeyTile) {
    __syncthreads();
    LoadRows(qs, base, C3, h * hs, i0, Tq, hs);
    LoadRows(gs, dyb, C, h * hs, i0, Tq, hs);
    for (int e = threadIdx.x; e < kKeyTile; e += blockDim.x) {
      const int i = i0 + e;
      ls[e] = i < Tq ? lse[static_cast<size_t>(bh) * Tq + i] : 0.0f;
      ds_[e] = i < Tq ? delta[static_cast<size_t>(bh) * Tq + i] : 0.0f;
    }
    __syncthreads();
    const int iend = min(kKeyTile, Tq - i0);
    for (int e = 0; e < iend; ++e) {
      const float* qr = qs + e * hs;
      const float* gr = gs + e * hs;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        s += qr[d * kGroup + part] * k[d];
        dp += gr[d * kGroup + part] * v[d];
      }
      s = GroupSum(s);
      dp = GroupSum(dp);
      if (active && i0 + e >= j) {
        const float p = expf(s * scale - ls[e]);
        const float dsv = p * (dp - ds_[e]) * scale;
#pragma unroll
        for (int d = 0; d < D; ++d) {
          dv[d] += p * gr[d * kGroup + part];
          dk[d] += dsv * qr[d * kGroup + part];
        }
      }
    }
  }
  if (!active) return;
  T* out = dqkv + (static_cast<size_t>(b) * Tq + j) * C3 + h * hs;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    out[C + d * kGroup + part] = FromF<T>(dk[d]);
    out[2 * C + d * kGroup + part] = FromF<T>(dv[d]);
  }
}

template <typename T>
cudaError_t LaunchAttentionForward(T* y, float* lse, const T* qkv, int B, int Tq, int C, int H,
                                   cudaStream_t stream) {
  if (!AttentionGridFits(B, H)) return cudaErrorInvalidValue;
  const int hs = C / H;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const dim3 grid((Tq + kRowTile - 1) / kRowTile, B * H);
  const dim3 block(kRowTile * kGroup);
  switch (hs) {
    case 16:
      FORGE_LAUNCH((AttentionForwardKernel<T, 4>), grid, block, 0, stream, y, lse, qkv, Tq, C, H,
                   scale);
      break;
    case 32:
      FORGE_LAUNCH((AttentionForwardKernel<T, 8>), grid, block, 0, stream, y, lse, qkv, Tq, C, H,
                   scale);
      break;
    case 64:
      FORGE_LAUNCH((AttentionForwardKernel<T, 16>), grid, block, 0, stream, y, lse, qkv, Tq, C, H,
                   scale);
      break;
    case 128:
      FORGE_LAUNCH((AttentionForwardKernel<T, 32>), grid, block, 0, stream, y, lse, qkv, Tq, C, H,
                   scale);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T, int D>
void LaunchAttentionBackwardKernels(T* dqkv, const float* delta, const T* dy, const T* qkv,
                                    const float* lse, int B, int Tq, int C, int H, float scale,
                                    cudaStream_t stream) {
  const dim3 grid((Tq + kRowTile - 1) / kRowTile, B * H);
  const dim3 block(kRowTile * kGroup);
  FORGE_LAUNCH((AttentionBackwardQueryKernel<T, D>), grid, block, 0, stream, dqkv, delta, dy, qkv,
               lse, Tq, C, H, scale);
  FORGE_LAUNCH((AttentionBackwardKeyKernel<T, D>), grid, block, 0, stream, dqkv, delta, dy, qkv,
               lse, Tq, C, H, scale);
}

// --------------------------------------------------- attention on GEMMs: the softmax steps
// Rows of one sequence's [H, T, T] score matrices (row r is query r % T of head r / T).

// One warp per row: lse = log sum_{j <= i} exp(scale · s_j); p_j = exp(scale · s_j − lse) for
// j <= i and 0 for the masked rest of the row (the P·V product reads the whole row).
template <typename T>
__global__ void AttentionSoftmaxKernel(T* probs, float* lse, const float* scores, int rows,
                                       int Tq, int ld, float scale) {
  const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;  // the whole warp shares the row
  const int i = row % Tq;
  const float* s = scores + static_cast<size_t>(row) * ld;
  float m = -INFINITY, l = 0.0f;
  for (int j = lane; j <= i; j += kWarp) MaxSumAdd(m, l, s[j] * scale);
  WarpMaxSum(m, l);
  const float row_lse = m + logf(l);
  T* p = probs + static_cast<size_t>(row) * ld;
  for (int j = lane; j < Tq; j += kWarp) {
    p[j] = FromF<T>(j <= i ? expf(s[j] * scale - row_lse) : 0.0f);
  }
  if (lane == 0) lse[row] = row_lse;
}

// Elementwise over the rows: p = exp(scale · s − lse) (recomputed, masked as above) and
// ds = p · (dp − delta) · scale.
template <typename T>
__global__ void AttentionSoftmaxBackwardKernel(T* probs, T* dscores, const float* scores,
                                               const float* dprobs, const float* lse,
                                               const float* delta, size_t n, int Tq, int ld,
                                               float scale) {
  for (size_t idx = blockIdx.x * size_t{blockDim.x} + threadIdx.x; idx < n;
       idx += size_t{gridDim.x} * blockDim.x) {
    const size_t row = idx / Tq;
    const int j = static_cast<int>(idx % Tq), i = static_cast<int>(row % Tq);
    const size_t e = row * ld + j;
    float p = 0.0f, ds = 0.0f;
    if (j <= i) {
      p = expf(scores[e] * scale - lse[row]);
      ds = p * (dprobs[e] - delta[row]) * scale;
    }
    probs[e] = FromF<T>(p);
    dscores[e] = FromF<T>(ds);
  }
}

// ---------------------------------------------------------------------------- cross-entropy

// The streaming kernel, for rows too long to hold (below) or unaligned: one block per row, an
// online (max, sum of exp) per thread, combined in a fixed tree, then a second read of the row
// for the gradient. Thread t owns the row's chunks of kN entries t, t + blockDim, ...; with
// kVec (the row pitch a multiple of 16 bytes, the pointers aligned) a chunk wholly inside the
// row is read and written as one 16-byte pack. The padding past V is neither read nor written.
template <typename T, bool kVec>
__global__ void CrossEntropyKernel(float* losses, T* dlogits, const T* logits,
                                   const int32_t* targets, float scale, int V, int ld) {
  constexpr int kN = Pack16<T>::kN;
  const int n = blockIdx.x;
  const int target = targets[n];
  const T* x = logits + static_cast<size_t>(n) * ld;
  // Read before anything may overwrite it (dlogits may alias logits).
  const float x_target = target >= 0 ? ToF(x[target]) : 0.0f;
  float m = -INFINITY, s = 0.0f;
  for (int c = threadIdx.x * kN; c < V; c += blockDim.x * kN) {
    float xv[kN];
    LoadChunk<kN, kVec>(xv, x, c, V, -INFINITY);  // entries past the row add nothing
#pragma unroll
    for (int k = 0; k < kN; ++k) MaxSumAdd(m, s, xv[k]);
  }
  BlockMaxSum(m, s);  // every thread has read its entries: dlogits may be written after this
  if (threadIdx.x == 0) losses[n] = target >= 0 ? logf(s) + m - x_target : 0.0f;
  if (dlogits == nullptr) return;
  T* d = dlogits + static_cast<size_t>(n) * ld;
  const float M = m, inv = 1.0f / s;
  for (int c = threadIdx.x * kN; c < V; c += blockDim.x * kN) {
    float g[kN] = {};  // an ignored target's row is all zeros
    if (target >= 0) {
      LoadChunk<kN, kVec>(g, x, c, V);
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        g[k] = scale * (expf(g[k] - M) * inv - (c + k == target ? 1.0f : 0.0f));
      }
    }
    StoreChunk<kN, kVec>(d, g, c, V);
  }
}

// The row held in registers: where the launcher finds the row fits (V <= blockDim · kN ·
// kHeldPacks) and the pointers and pitch take 16-byte packs, each thread loads its packs
// t, t + blockDim, ... once, as T, and computes the gradient from them, so the logits are read
// from memory once instead of twice (at GPT-2's shape a row is 100 KB, and by count the ~1000
// rows the streaming kernel has in flight between its two reads fill twice an H100's 50 MB L2,
// so its second read mostly comes from memory again). A pack that
// straddles V is loaded whole (the pitch, a multiple of the pack, keeps it inside the row's
// padding) and its entries past V are skipped; the padding is never written. Each thread
// takes its entries' max, then their sum of exp, and the block merges them as the streaming
// kernel does.
constexpr int kHeldPacks = 8;
constexpr int kHeldMaxThreads = 1024;

// A pack held as its raw 16 bytes (four 32-bit registers; a Pack16<bf16> of eight bf16 would
// take eight), and its entry k as a float: fp32 entry k is word k; bf16 entry k is the low
// (even k) or high (odd k) half of word k / 2, little-endian, and a bf16 is a float's top half.
__device__ __forceinline__ uint4 LoadBits(const void* p) {
  uint4 r;
#ifdef FORGE_CUDA_EMULATION
  memcpy(&r, p, sizeof r);
#else
  r = *reinterpret_cast<const uint4*>(p);  // one 128-bit load
#endif
  return r;
}

__device__ __forceinline__ float FloatOfBits(uint32_t bits) {
#ifdef FORGE_CUDA_EMULATION
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
#else
  return __uint_as_float(bits);
#endif
}

template <typename T>
__device__ __forceinline__ float BitsEntry(const uint4& w, int k) {
  const int word_index = std::is_same_v<T, float> ? k : k / 2;
  const uint32_t word = word_index == 0 ? w.x : word_index == 1 ? w.y : word_index == 2 ? w.z : w.w;
  if (std::is_same_v<T, float>) return FloatOfBits(word);
  return FloatOfBits(k % 2 == 0 ? word << 16 : word & 0xffff0000u);
}

template <typename T>
__global__ void __launch_bounds__(kHeldMaxThreads)
    CrossEntropyHeldKernel(float* losses, T* dlogits, const T* logits, const int32_t* targets,
                           float scale, int V, int ld) {
  constexpr int kN = Pack16<T>::kN;
  const int n = blockIdx.x;
  const int target = targets[n];
  const T* x = logits + static_cast<size_t>(n) * ld;
  const float x_target = target >= 0 ? ToF(x[target]) : 0.0f;
  // Pack p of this thread starts at entry c0 + p · stride.
  const int c0 = static_cast<int>(threadIdx.x) * kN, stride = static_cast<int>(blockDim.x) * kN;
  uint4 held[kHeldPacks];
#pragma unroll
  for (int p = 0; p < kHeldPacks; ++p) {
    const int c = c0 + p * stride;
    if (c < V) held[p] = LoadBits(x + c);  // all loads issued before any is used
  }
  // The values are at hand, so no online rescaling: the thread's max, then its sum of exp.
  float m = -INFINITY, s = 0.0f;
#pragma unroll
  for (int p = 0; p < kHeldPacks; ++p) {
    const int c = c0 + p * stride;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      if (c + k < V) m = fmaxf(m, BitsEntry<T>(held[p], k));
    }
  }
  if (m != -INFINITY) {  // a NaN entry makes the sum NaN
#pragma unroll
    for (int p = 0; p < kHeldPacks; ++p) {
      const int c = c0 + p * stride;
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        if (c + k < V) s += expf(BitsEntry<T>(held[p], k) - m);
      }
    }
  } else {
    // Every entry is -inf or NaN (fmaxf skips NaNs), or the thread has none. A NaN makes
    // (m, s) = (+inf, NaN), which the block's merge keeps, as MaxSumAdd does; else the sum
    // stays 0 and the merge drops this thread.
#pragma unroll
    for (int p = 0; p < kHeldPacks; ++p) {
      const int c = c0 + p * stride;
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        const float x = BitsEntry<T>(held[p], k);
        if (c + k < V && x != x) {
          m = INFINITY;
          s = NAN;
        }
      }
    }
  }
  BlockMaxSum(m, s);  // every thread has read its entries: dlogits may be written after this
  if (threadIdx.x == 0) losses[n] = target >= 0 ? logf(s) + m - x_target : 0.0f;
  if (dlogits == nullptr) return;
  T* d = dlogits + static_cast<size_t>(n) * ld;
  const float M = m, inv = 1.0f / s;
#pragma unroll
  for (int p = 0; p < kHeldPacks; ++p) {
    const int c = c0 + p * stride;
    if (c + kN > V) continue;  // past the row, or the straddling pack (below)
    float g[kN] = {};          // an ignored target's row is all zeros
    if (target >= 0) {
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        g[k] = scale * (expf(BitsEntry<T>(held[p], k) - M) * inv - (c + k == target ? 1.0f : 0.0f));
      }
    }
    StoreChunk<kN, true>(d, g, c, V);
  }
  // The straddling pack's entries inside the row, by its owner, from memory: nothing has
  // written them (an entry-by-entry store in the loop above made the kernel spill registers).
  const int tail = V / kN * kN;
  if (tail < V && static_cast<int>(threadIdx.x) == (tail / kN) % static_cast<int>(blockDim.x)) {
    for (int c = tail; c < V; ++c) {
      d[c] = FromF<T>(
          target < 0 ? 0.0f : scale * (expf(ToF(x[c]) - M) * inv - (c == target ? 1.0f : 0.0f)));
    }
  }
}

// ---------------------------------------------------------------------------- optimizer

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    SumSquaresKernel(double* partial, const float* g, size_t n) {
  double acc = 0;
  for (size_t c = (blockIdx.x * size_t{blockDim.x} + threadIdx.x) * kFlatChunk; c < n;
       c += size_t{gridDim.x} * blockDim.x * kFlatChunk) {
    float x[kFlatChunk];
    LoadChunk<kFlatChunk, kVec>(x, g + c, 0, ChunkSize(c, n));
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) acc += double{x[k]} * x[k];
  }
  const double sum = BlockSum<kThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block: thread t sums partials t, t + blockDim, ... in order, then a fixed tree.
__global__ void __launch_bounds__(kThreads)
    NormFinishKernel(float* norm_out, const double* partial, int parts, float grad_scale,
                     float max_norm) {
  double acc = 0;
  for (int p = threadIdx.x; p < parts; p += blockDim.x) acc += partial[p];
  const double sum = BlockSum<kThreads>(acc);
  if (threadIdx.x == 0) WriteNormAndFactor(norm_out, sum, grad_scale, max_norm);
}

unsigned NormBlocks(size_t n) {
  const size_t b = (n + size_t{kThreads} * kFlatChunk - 1) / (size_t{kThreads} * kFlatChunk);
  return static_cast<unsigned>(b < kMaxNormBlocks ? (b == 0 ? 1 : b) : kMaxNormBlocks);
}

template <typename T, bool kVec>
__global__ void AdamWKernel(float* params, T* lowp, float* grads, float* m, float* v,
                            LaunchSpans spans, const float* grad_factor, float lr, float b1,
                            float b2, float eps, float c1, float c2) {
  const float f = *grad_factor;
  const size_t first = spans.begin[0], n = spans.begin[spans.count];
  for (size_t c = first + (blockIdx.x * size_t{blockDim.x} + threadIdx.x) * kFlatChunk; c < n;
       c += size_t{gridDim.x} * blockDim.x * kFlatChunk) {
    const int size = ChunkSize(c, n);
    // The span of entry c (the last that begins at or before it), then each entry's decay.
    int lo = 0, hi = spans.count - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (spans.begin[mid] <= c) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    int r = lo;
    float wd[kFlatChunk];
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) {
      while (k < size && c + k >= spans.begin[r + 1]) ++r;
      wd[k] = spans.wd[r];
    }
    float p[kFlatChunk], g[kFlatChunk], mi[kFlatChunk], vi[kFlatChunk];
    LoadChunk<kFlatChunk, kVec>(p, params + c, 0, size);
    LoadChunk<kFlatChunk, kVec>(g, grads + c, 0, size);
    LoadChunk<kFlatChunk, kVec>(mi, m + c, 0, size);
    LoadChunk<kFlatChunk, kVec>(vi, v + c, 0, size);
#pragma unroll
    for (int k = 0; k < kFlatChunk; ++k) {
      g[k] *= f;  // the step's gradient, as the CPU engine leaves it (scaled and clipped)
      mi[k] = b1 * mi[k] + (1.0f - b1) * g[k];
      vi[k] = b2 * vi[k] + (1.0f - b2) * g[k] * g[k];
      const float update = (mi[k] * c1) / (sqrtf(vi[k] * c2) + eps);
      p[k] = p[k] - lr * (update + wd[k] * p[k]);
    }
    StoreChunk<kFlatChunk, kVec>(params + c, p, 0, size);
    StoreChunk<kFlatChunk, kVec>(grads + c, g, 0, size);
    StoreChunk<kFlatChunk, kVec>(m + c, mi, 0, size);
    StoreChunk<kFlatChunk, kVec>(v + c, vi, 0, size);
    if (lowp != nullptr) StoreChunk<kFlatChunk, kVec>(lowp + c, p, 0, size);
  }
}

template <typename T>
__global__ void CastKernel(T* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = FromF<T>(in[i]);
  }
}

}  // namespace

// ---------------------------------------------------------------------------- launchers

template <typename T>
cudaError_t EmbeddingForward(T* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int Tq, int C, cudaStream_t stream) {
  const size_t chunks = static_cast<size_t>(B) * Tq * ((C + kFlatChunk - 1) / kFlatChunk);
  LaunchPacked(C % kFlatChunk == 0 && IsAligned16(out) && IsAligned16(wte) && IsAligned16(wpe),
               [&](auto vec) {
                 FORGE_LAUNCH((EmbeddingForwardKernel<T, decltype(vec)::value>), Blocks(chunks),
                              kThreads, 0, stream, out, tokens, wte, wpe, Tq, C, chunks);
               });
  return cudaGetLastError();
}

template <typename T>
cudaError_t EmbeddingBackwardWte(float* dwte, const T* dx, const int32_t* order,
                                 const int32_t* start, const int32_t* bucket_token, int buckets,
                                 int C, cudaStream_t stream) {
  if (buckets == 0) return cudaSuccess;
  FORGE_LAUNCH(EmbeddingBackwardWteKernel<T>, buckets, kThreads, 0, stream, dwte, dx, order, start,
               bucket_token, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t EmbeddingBackwardWpe(float* dwpe, const T* dx, int B, int Tq, int C,
                                 cudaStream_t stream) {
  FORGE_LAUNCH(EmbeddingBackwardWpeKernel<T>, Tq, kThreads, 0, stream, dwpe, dx, B, Tq, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LayerNormForward(T* out, float* mean, float* rstd, const T* inp, const float* weight,
                             const float* bias, int N, int C, cudaStream_t stream) {
  const int rows_per_block = kThreads / kWarp;
  const unsigned blocks = (N + rows_per_block - 1) / rows_per_block;
  LaunchPacked(RowsInPacks<T>(C, {out, inp, weight, bias}), [&](auto vec) {
    FORGE_LAUNCH((LayerNormForwardKernel<T, decltype(vec)::value>), blocks, kThreads, 0, stream,
                 out, mean, rstd, inp, weight, bias, N, C);
  });
  return cudaGetLastError();
}

size_t ColumnReduceScratchFloats(int N, int C) {
  return size_t{2} * Parts(N) * static_cast<size_t>(C);
}

template <typename T>
cudaError_t LayerNormBackward(T* dinp, float* dweight, float* dbias, float* scratch,
                              const T* dout, const T* inp, const float* weight, const float* mean,
                              const float* rstd, int N, int C, cudaStream_t stream) {
  if (Parts(N) > kMaxParts) return cudaErrorInvalidValue;
  const bool packed = RowsInPacks<T>(C, {dinp, dout, inp, weight});
  constexpr int kChunkCols = kWarp * Pack16<T>::kN;
  const int chunks = (C + kChunkCols - 1) / kChunkCols;
  if (packed && chunks <= kFusedMaxChunks) {
    const int parts = Parts(N);
    auto launch = [&](auto k_chunks) {
      FORGE_LAUNCH((LayerNormBackwardFusedKernel<T, decltype(k_chunks)::value>), parts, kThreads, 0,
                   stream, dinp, scratch, dout, inp, weight, mean, rstd, N, C);
    };
    static_assert(kFusedMaxChunks == 4, "one case per chunk count");
    switch (chunks) {
      case 1:
        launch(std::integral_constant<int, 1>{});
        break;
      case 2:
        launch(std::integral_constant<int, 2>{});
        break;
      case 3:
        launch(std::integral_constant<int, 3>{});
        break;
      default:
        launch(std::integral_constant<int, 4>{});
        break;
    }
    ColumnFinish(dbias, dweight, scratch, parts, C, stream);
    return cudaGetLastError();
  }
  const int rows_per_block = kThreads / kWarp;
  const unsigned blocks = (N + rows_per_block - 1) / rows_per_block;
  LaunchPacked(packed, [&](auto vec) {
    FORGE_LAUNCH((LayerNormBackwardInputKernel<T, decltype(vec)::value>), blocks, kThreads, 0,
                 stream, dinp, dout, inp, weight, mean, rstd, N, C);
  });
  ColumnReduce<T>(dbias, dweight, scratch, dout, inp, mean, rstd, N, C, stream);
  return cudaGetLastError();
}

template <typename T>
cudaError_t BiasGrad(float* dbias, float* scratch, const T* dout, int N, int C,
                     cudaStream_t stream) {
  if (Parts(N) > kMaxParts) return cudaErrorInvalidValue;
  ColumnReduce<T>(dbias, nullptr, scratch, dout, nullptr, nullptr, nullptr, N, C, stream);
  return cudaGetLastError();
}

template <typename T>
cudaError_t GeluForward(T* out, const T* inp, size_t n, cudaStream_t stream) {
  const unsigned blocks = FlatBlocks(n);
  LaunchPacked(IsAligned16(out) && IsAligned16(inp), [&](auto vec) {
    FORGE_LAUNCH((GeluForwardKernel<T, decltype(vec)::value>), blocks, kThreads, 0, stream, out,
                 inp, n);
  });
  return cudaGetLastError();
}

template <typename T>
cudaError_t GeluBackward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t stream) {
  const unsigned blocks = FlatBlocks(n);
  LaunchPacked(IsAligned16(dinp) && IsAligned16(inp) && IsAligned16(dout), [&](auto vec) {
    FORGE_LAUNCH((GeluBackwardKernel<T, decltype(vec)::value>), blocks, kThreads, 0, stream, dinp,
                 inp, dout, n);
  });
  return cudaGetLastError();
}

bool AttentionHeadSizeSupported(int head_size) {
  return head_size == 16 || head_size == 32 || head_size == 64 || head_size == 128;
}

template <typename T>
cudaError_t AttentionForward(T* y, float* lse, const T* qkv, int B, int Tq, int C, int H,
                             cudaStream_t stream) {
  return LaunchAttentionForward(y, lse, qkv, B, Tq, C, H, stream);
}

template <typename T>
cudaError_t AttentionDelta(float* delta, const T* dy, const T* y, int B, int Tq, int C, int H,
                           cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * H * Tq;
  const unsigned blocks = Blocks(rows * kDeltaLanes);
  // C = H · head size, so rows start on packs when the head size is whole packs.
  LaunchPacked((C / H) % Pack16<T>::kN == 0 && IsAligned16(dy) && IsAligned16(y), [&](auto vec) {
    FORGE_LAUNCH((AttentionDeltaKernel<T, decltype(vec)::value>), blocks, kThreads, 0, stream,
                 delta, dy, y, B, Tq, C, H);
  });
  return cudaGetLastError();
}

template <typename T>
cudaError_t AttentionSoftmax(T* probs, float* lse, const float* scores, int rows, int Tq,
                             int ld, float scale, cudaStream_t stream) {
  const int rows_per_block = kThreads / kWarp;
  FORGE_LAUNCH(AttentionSoftmaxKernel<T>, (rows + rows_per_block - 1) / rows_per_block, kThreads, 0,
               stream, probs, lse, scores, rows, Tq, ld, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t AttentionSoftmaxBackward(T* probs, T* dscores, const float* scores,
                                     const float* dprobs, const float* lse, const float* delta,
                                     int rows, int Tq, int ld, float scale,
                                     cudaStream_t stream) {
  const size_t n = static_cast<size_t>(rows) * Tq;
  FORGE_LAUNCH(AttentionSoftmaxBackwardKernel<T>, Blocks(n), kThreads, 0, stream, probs, dscores,
               scores, dprobs, lse, delta, n, Tq, ld, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t AttentionBackward(T* dqkv, float* delta, const T* dy, const T* qkv, const T* y,
                              const float* lse, int B, int Tq, int C, int H, cudaStream_t stream) {
  if (!AttentionGridFits(B, H)) return cudaErrorInvalidValue;
  const int hs = C / H;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  if (const cudaError_t e = AttentionDelta<T>(delta, dy, y, B, Tq, C, H, stream); e != cudaSuccess) {
    return e;
  }
  switch (hs) {
    case 16: LaunchAttentionBackwardKernels<T, 4>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, scale, stream); break;
    case 32: LaunchAttentionBackwardKernels<T, 8>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, scale, stream); break;
    case 64: LaunchAttentionBackwardKernels<T, 16>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, scale, stream); break;
    case 128: LaunchAttentionBackwardKernels<T, 32>(dqkv, delta, dy, qkv, lse, B, Tq, C, H, scale, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// Threads for the held kernel on rows of V entries: enough warps that kHeldPacks packs each
// cover the row, or 0 where kHeldMaxThreads cannot.
template <typename T>
int HeldThreads(int V) {
  constexpr int kN = Pack16<T>::kN;
  const int64_t packs = (int64_t{V} + kN - 1) / kN;
  const int64_t warps = (packs + int64_t{kHeldPacks} * kWarp - 1) / (int64_t{kHeldPacks} * kWarp);
  return warps * kWarp <= kHeldMaxThreads ? static_cast<int>(warps * kWarp) : 0;
}

template <typename T>
bool CrossEntropyPacked(const T* dlogits, const T* logits, int ld) {
  return ld % Pack16<T>::kN == 0 && IsAligned16(logits) &&
         (dlogits == nullptr || IsAligned16(dlogits));
}

template <typename T>
cudaError_t CrossEntropyStreaming(float* losses, T* dlogits, const T* logits,
                                  const int32_t* targets, float scale, int N, int V, int ld,
                                  cudaStream_t stream) {
  if (ld < V) return cudaErrorInvalidValue;
  LaunchPacked(CrossEntropyPacked(dlogits, logits, ld), [&](auto vec) {
    FORGE_LAUNCH((CrossEntropyKernel<T, decltype(vec)::value>), N, kThreads, 0, stream, losses,
                 dlogits, logits, targets, scale, V, ld);
  });
  return cudaGetLastError();
}

template <typename T>
cudaError_t CrossEntropy(float* losses, T* dlogits, const T* logits, const int32_t* targets,
                         float scale, int N, int V, int ld, cudaStream_t stream) {
  if (ld < V) return cudaErrorInvalidValue;
  const int held_threads = CrossEntropyPacked(dlogits, logits, ld) ? HeldThreads<T>(V) : 0;
  if (held_threads == 0) {
    return CrossEntropyStreaming<T>(losses, dlogits, logits, targets, scale, N, V, ld, stream);
  }
  FORGE_LAUNCH(CrossEntropyHeldKernel<T>, N, held_threads, 0, stream, losses, dlogits, logits,
               targets, scale, V, ld);
  return cudaGetLastError();
}

size_t GradNormScratchDoubles(size_t n) { return NormBlocks(n); }

cudaError_t GradNorm(float* norm_out, double* scratch, const float* grads, size_t n,
                     float grad_scale, float max_norm, cudaStream_t stream) {
  const unsigned parts = NormBlocks(n);
  LaunchPacked(IsAligned16(grads), [&](auto vec) {
    FORGE_LAUNCH((SumSquaresKernel<decltype(vec)::value>), parts, kThreads, 0, stream, scratch,
                 grads, n);
  });
  FORGE_LAUNCH(NormFinishKernel, 1, kThreads, 0, stream, norm_out, scratch, static_cast<int>(parts),
               grad_scale, max_norm);
  return cudaGetLastError();
}

template <typename T>
cudaError_t AdamWUpdateSpans(float* params, T* lowp, float* grads, float* m, float* v, size_t n,
                             const DecaySpan* spans, int num_spans, const float* grad_factor,
                             float lr, float b1, float b2, float eps, float c1, float c2,
                             cudaStream_t stream) {
  if (num_spans < 1 || spans[0].begin != 0) return cudaErrorInvalidValue;
  for (int r = 0; r < num_spans; ++r) {
    if (spans[r].begin > n || (r > 0 && spans[r].begin < spans[r - 1].begin)) {
      return cudaErrorInvalidValue;
    }
  }
  for (int s0 = 0; s0 < num_spans; s0 += kMaxDecaySpansPerLaunch) {
    LaunchSpans ls{};
    ls.count = std::min(kMaxDecaySpansPerLaunch, num_spans - s0);
    for (int r = 0; r < ls.count; ++r) {
      ls.begin[r] = spans[s0 + r].begin;
      ls.wd[r] = spans[s0 + r].weight_decay;
    }
    ls.begin[ls.count] = s0 + ls.count < num_spans ? spans[s0 + ls.count].begin : n;
    const size_t first = ls.begin[0], len = ls.begin[ls.count] - first;
    if (len == 0) continue;
    const bool packed = IsAligned16(params + first) && IsAligned16(grads + first) &&
                        IsAligned16(m + first) && IsAligned16(v + first) &&
                        (lowp == nullptr || IsAligned16(lowp + first));
    LaunchPacked(packed, [&](auto vec) {
      FORGE_LAUNCH((AdamWKernel<T, decltype(vec)::value>), FlatBlocks(len), kThreads, 0, stream,
                   params, lowp, grads, m, v, ls, grad_factor, lr, b1, b2, eps, c1, c2);
    });
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t AdamWUpdate(float* params, T* lowp, float* grads, float* m, float* v, size_t n,
                        const float* grad_factor, float lr, float b1, float b2, float eps, float wd,
                        float c1, float c2, cudaStream_t stream) {
  const DecaySpan all{0, wd};
  return AdamWUpdateSpans(params, lowp, grads, m, v, n, &all, 1, grad_factor, lr, b1, b2, eps, c1,
                          c2, stream);
}

template <typename T>
cudaError_t CastFromFloat(T* out, const float* in, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  FORGE_LAUNCH(CastKernel<T>, Blocks(n), kThreads, 0, stream, out, in, n);
  return cudaGetLastError();
}

#define FORGE_INSTANTIATE(T)                                                                       \
  template cudaError_t EmbeddingForward<T>(T*, const int32_t*, const float*, const float*, int,    \
                                           int, int, cudaStream_t);                                \
  template cudaError_t EmbeddingBackwardWte<T>(float*, const T*, const int32_t*, const int32_t*,   \
                                               const int32_t*, int, int, cudaStream_t);            \
  template cudaError_t EmbeddingBackwardWpe<T>(float*, const T*, int, int, int, cudaStream_t);     \
  template cudaError_t LayerNormForward<T>(T*, float*, float*, const T*, const float*,             \
                                           const float*, int, int, cudaStream_t);                  \
  template cudaError_t LayerNormBackward<T>(T*, float*, float*, float*, const T*, const T*,        \
                                            const float*, const float*, const float*, int, int,    \
                                            cudaStream_t);                                         \
  template cudaError_t BiasGrad<T>(float*, float*, const T*, int, int, cudaStream_t);              \
  template cudaError_t GeluForward<T>(T*, const T*, size_t, cudaStream_t);                         \
  template cudaError_t GeluBackward<T>(T*, const T*, const T*, size_t, cudaStream_t);              \
  template cudaError_t AttentionForward<T>(T*, float*, const T*, int, int, int, int,               \
                                           cudaStream_t);                                          \
  template cudaError_t AttentionBackward<T>(T*, float*, const T*, const T*, const T*,              \
                                            const float*, int, int, int, int, cudaStream_t);       \
  template cudaError_t AttentionDelta<T>(float*, const T*, const T*, int, int, int, int,           \
                                         cudaStream_t);                                            \
  template cudaError_t AttentionSoftmax<T>(T*, float*, const float*, int, int, int, float,         \
                                           cudaStream_t);                                          \
  template cudaError_t AttentionSoftmaxBackward<T>(T*, T*, const float*, const float*,             \
                                                   const float*, const float*, int, int, int,      \
                                                   float, cudaStream_t);                           \
  template cudaError_t CrossEntropy<T>(float*, T*, const T*, const int32_t*, float, int, int, int, \
                                       cudaStream_t);                                              \
  template cudaError_t CrossEntropyStreaming<T>(float*, T*, const T*, const int32_t*, float, int,  \
                                                int, int, cudaStream_t);                           \
  template cudaError_t AdamWUpdate<T>(float*, T*, float*, float*, float*, size_t, const float*,    \
                                      float, float, float, float, float, float, float,             \
                                      cudaStream_t);                                               \
  template cudaError_t AdamWUpdateSpans<T>(float*, T*, float*, float*, float*, size_t,             \
                                           const DecaySpan*, int, const float*, float, float,      \
                                           float, float, float, float, cudaStream_t);              \
  template cudaError_t CastFromFloat<T>(T*, const float*, size_t, cudaStream_t);

FORGE_INSTANTIATE(float)
FORGE_INSTANTIATE(bf16)

}  // namespace forge::cuda
