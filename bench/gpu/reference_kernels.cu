// The memory-bound kernels as they were at fb02d94, before they read and wrote 16-byte packs
// (element-wise loads, one thread per row for the attention delta, a 1-D column reduction),
// kept so forge-bench-gpu-kernels can time them beside today's on the same GPU. Their loads
// and stores are as they were; the block reductions (cross-entropy's, the gradient norm's)
// call the helpers today's kernels share (kernel_math.h), which do the same sums. Not
// used by the trainer. Also: fill kernels for the benchmark's inputs. Launches go through
// FORGE_LAUNCH so reference_kernels_emulated.cc can run them on the emulation (a smoke test of
// the benchmark in CI).
#include <cmath>

#include "bench/gpu/reference_kernels.h"
#include "worker/cuda/gelu_math.h"
#include "worker/cuda/kernel_math.h"
#include "worker/cuda/launch.h"

namespace forge::bench::before {
namespace {

using cuda::GeluGradOf;
using cuda::GeluOf;
using cuda::kmath::BlockMaxSum;
using cuda::kmath::BlockSum;
using cuda::kmath::FromF;
using cuda::kmath::kWarp;
using cuda::kmath::MaxSumAdd;
using cuda::kmath::ToF;
using cuda::kmath::WarpSum;
using cuda::kmath::WriteNormAndFactor;

constexpr int kThreads = 256;
constexpr float kLayerNormEps = 1e-5f;
constexpr int kRowsPerPartial = 64;
constexpr int kMaxNormBlocks = 512;

unsigned Blocks(size_t n, int threads = kThreads) {
  const size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b == 0 ? 1 : b) : 65535 * 16);
}

template <typename T>
__global__ void EmbeddingForwardKernel(T* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int Tq, int C, size_t total) {
  for (size_t idx = blockIdx.x * size_t{blockDim.x} + threadIdx.x; idx < total;
       idx += size_t{gridDim.x} * blockDim.x) {
    const size_t n = idx / C;
    const int c = static_cast<int>(idx % C);
    const int t = static_cast<int>(n % Tq);
    out[idx] = FromF<T>(wte[static_cast<size_t>(tokens[n]) * C + c] + wpe[size_t{1} * t * C + c]);
  }
}

// One warp per row.
template <typename T>
__global__ void LayerNormForwardKernel(T* out, float* mean, float* rstd, const T* inp,
                                       const float* weight, const float* bias, int N, int C) {
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= N) return;
  const T* x = inp + static_cast<size_t>(row) * C;
  float s = 0;
  for (int c = lane; c < C; c += kWarp) s += ToF(x[c]);
  const float m = WarpSum(s) / C;
  float v = 0;
  for (int c = lane; c < C; c += kWarp) {
    const float d = ToF(x[c]) - m;
    v += d * d;
  }
  const float r = 1.0f / sqrtf(WarpSum(v) / C + kLayerNormEps);
  T* o = out + static_cast<size_t>(row) * C;
  for (int c = lane; c < C; c += kWarp) o[c] = FromF<T>((ToF(x[c]) - m) * r * weight[c] + bias[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

template <typename T>
__global__ void LayerNormBackwardInputKernel(T* dinp, const T* dout, const T* inp,
                                             const float* weight, const float* mean,
                                             const float* rstd, int N, int C) {
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  const float m = mean[row], r = rstd[row];
  float sg = 0, sgx = 0;
  for (int c = lane; c < C; c += kWarp) {
    const float g = ToF(dout[off + c]) * weight[c];
    sg += g;
    sgx += g * (ToF(inp[off + c]) - m) * r;
  }
  const float g_mean = WarpSum(sg) / C, gx_mean = WarpSum(sgx) / C;
  for (int c = lane; c < C; c += kWarp) {
    const float g = ToF(dout[off + c]) * weight[c];
    const float xhat = (ToF(inp[off + c]) - m) * r;
    dinp[off + c] = FromF<T>(ToF(dinp[off + c]) + (g - g_mean - xhat * gx_mean) * r);
  }
}

// Stage 1 of a column reduction: block p sums rows [p·R, (p+1)·R) of each column, in order.
// With inp == nullptr it sums dout (bias gradient); otherwise also dout · xhat (LayerNorm
// weight gradient) into the second half of `partial`.
template <typename T>
__global__ void ColumnPartialKernel(float* partial, const T* dout, const T* inp, const float* mean,
                                    const float* rstd, int N, int C) {
  const int p = blockIdx.x, parts = gridDim.x;
  const int r0 = p * kRowsPerPartial, r1 = min(N, r0 + kRowsPerPartial);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float db = 0, dw = 0;
    for (int n = r0; n < r1; ++n) {
      const float dy = ToF(dout[static_cast<size_t>(n) * C + c]);
      db += dy;
      if (inp != nullptr)
        dw += dy * ((ToF(inp[static_cast<size_t>(n) * C + c]) - mean[n]) * rstd[n]);
    }
    partial[static_cast<size_t>(p) * C + c] = db;
    if (inp != nullptr) partial[static_cast<size_t>(parts + p) * C + c] = dw;
  }
}

// Stage 2: each column's partials in order.
__global__ void ColumnFinishKernel(float* dbias, float* dweight, const float* partial, int parts,
                                   int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float db = 0, dw = 0;
  for (int p = 0; p < parts; ++p) {
    db += partial[static_cast<size_t>(p) * C + c];
    if (dweight != nullptr) dw += partial[static_cast<size_t>(parts + p) * C + c];
  }
  dbias[c] += db;
  if (dweight != nullptr) dweight[c] += dw;
}

int Parts(int N) { return (N + kRowsPerPartial - 1) / kRowsPerPartial; }

template <typename T>
__global__ void GeluForwardKernel(T* out, const T* inp, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = FromF<T>(GeluOf(ToF(inp[i])));
  }
}

template <typename T>
__global__ void GeluBackwardKernel(T* dinp, const T* inp, const T* dout, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    dinp[i] = FromF<T>(GeluGradOf(ToF(inp[i])) * ToF(dout[i]));
  }
}

// delta[bh, i] = sum over the head of dy · y (rowsum of P ∘ dP).
template <typename T>
__global__ void AttentionDeltaKernel(float* delta, const T* dy, const T* y, int B, int Tq, int C,
                                     int H) {
  const int hs = C / H;
  const size_t total = static_cast<size_t>(B) * H * Tq;
  for (size_t idx = blockIdx.x * size_t{blockDim.x} + threadIdx.x; idx < total;
       idx += size_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(idx % Tq);
    const int bh = static_cast<int>(idx / Tq), b = bh / H, h = bh % H;
    const size_t off = (static_cast<size_t>(b) * Tq + i) * C + h * hs;
    float acc = 0.0f;
    for (int d = 0; d < hs; ++d) acc += ToF(dy[off + d]) * ToF(y[off + d]);
    delta[idx] = acc;
  }
}

// One block per row: an online (max, sum of exp) per thread, combined in a fixed tree.
template <typename T>
__global__ void CrossEntropyKernel(float* losses, T* dlogits, const T* logits,
                                   const int32_t* targets, float scale, int V, int ld) {
  const int n = blockIdx.x;
  const int target = targets[n];
  const T* x = logits + static_cast<size_t>(n) * ld;
  // Read before anything may overwrite it (dlogits may alias logits).
  const float x_target = target >= 0 ? ToF(x[target]) : 0.0f;
  float m = -INFINITY, s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) MaxSumAdd(m, s, ToF(x[j]));
  BlockMaxSum(m, s);
  if (threadIdx.x == 0) losses[n] = target >= 0 ? logf(s) + m - x_target : 0.0f;
  if (dlogits == nullptr) return;
  T* d = dlogits + static_cast<size_t>(n) * ld;
  const float M = m, inv = 1.0f / s;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    if (target < 0) {
      d[j] = FromF<T>(0.0f);
      continue;
    }
    const float p = expf(ToF(x[j]) - M) * inv;
    d[j] = FromF<T>(scale * (p - (j == target ? 1.0f : 0.0f)));
  }
}

__global__ void SumSquaresKernel(double* partial, const float* g, size_t n) {
  double acc = 0;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    const double x = g[i];
    acc += x * x;
  }
  const double sum = BlockSum<kThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void NormFinishKernel(float* norm_out, const double* partial, int parts,
                                 float grad_scale, float max_norm) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double sum = 0;
  for (int p = 0; p < parts; ++p) sum += partial[p];
  WriteNormAndFactor(norm_out, sum, grad_scale, max_norm);
}

unsigned NormBlocks(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxNormBlocks ? (b == 0 ? 1 : b) : kMaxNormBlocks);
}

template <typename T>
__global__ void AdamWKernel(float* params, T* lowp, float* grads, float* m, float* v, size_t n,
                            const float* grad_factor, float lr, float b1, float b2, float eps,
                            float wd, float c1, float c2) {
  const float f = *grad_factor;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    const float g = grads[i] * f;
    grads[i] = g;  // the step's gradient, as the CPU engine leaves it (scaled and clipped)
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * c1) / (sqrtf(vi * c2) + eps);
    const float p = params[i] - lr * (update + wd * params[i]);
    params[i] = p;
    if (lowp != nullptr) lowp[i] = FromF<T>(p);
  }
}

// A hash of (seed, i) mapped to [lo, hi): inputs without a host round trip.
__device__ __forceinline__ float Uniform(uint32_t seed, size_t i, float lo, float hi) {
  uint64_t x = (static_cast<uint64_t>(seed) << 40) ^ i;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return lo + (hi - lo) * static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
}

template <typename T>
__global__ void FillKernel(T* x, size_t n, uint32_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    x[i] = FromF<T>(Uniform(seed, i, lo, hi));
  }
}

__global__ void FillTokensKernel(int32_t* x, size_t n, uint32_t seed, int V) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    x[i] = static_cast<int32_t>(Uniform(seed, i, 0.0f, 1.0f) * V) % V;
  }
}

}  // namespace

cudaError_t EmbeddingForward(bf16* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int Tq, int C, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(B) * Tq * C;
  FORGE_LAUNCH((EmbeddingForwardKernel<bf16>), Blocks(total), kThreads, 0, stream, out, tokens, wte,
               wpe, Tq, C, total);
  return cudaGetLastError();
}

cudaError_t LayerNormForward(bf16* out, float* mean, float* rstd, const bf16* inp,
                             const float* weight, const float* bias, int N, int C,
                             cudaStream_t stream) {
  const int rows_per_block = kThreads / kWarp;
  FORGE_LAUNCH((LayerNormForwardKernel<bf16>), (N + rows_per_block - 1) / rows_per_block, kThreads,
               0, stream, out, mean, rstd, inp, weight, bias, N, C);
  return cudaGetLastError();
}

size_t ColumnReduceScratchFloats(int N, int C) { return size_t{2} * Parts(N) * C; }

cudaError_t LayerNormBackward(bf16* dinp, float* dweight, float* dbias, float* scratch,
                              const bf16* dout, const bf16* inp, const float* weight,
                              const float* mean, const float* rstd, int N, int C,
                              cudaStream_t stream) {
  const int rows_per_block = kThreads / kWarp;
  FORGE_LAUNCH((LayerNormBackwardInputKernel<bf16>), (N + rows_per_block - 1) / rows_per_block,
               kThreads, 0, stream, dinp, dout, inp, weight, mean, rstd, N, C);
  const int parts = Parts(N);
  FORGE_LAUNCH((ColumnPartialKernel<bf16>), parts, kThreads, 0, stream, scratch, dout, inp, mean,
               rstd, N, C);
  FORGE_LAUNCH((ColumnFinishKernel), (C + kThreads - 1) / kThreads, kThreads, 0, stream, dbias,
               dweight, scratch, parts, C);
  return cudaGetLastError();
}

cudaError_t BiasGrad(float* dbias, float* scratch, const bf16* dout, int N, int C,
                     cudaStream_t stream) {
  const int parts = Parts(N);
  FORGE_LAUNCH((ColumnPartialKernel<bf16>), parts, kThreads, 0, stream, scratch, dout, nullptr,
               nullptr, nullptr, N, C);
  FORGE_LAUNCH((ColumnFinishKernel), (C + kThreads - 1) / kThreads, kThreads, 0, stream, dbias,
               nullptr, scratch, parts, C);
  return cudaGetLastError();
}

cudaError_t GeluForward(bf16* out, const bf16* inp, size_t n, cudaStream_t stream) {
  FORGE_LAUNCH((GeluForwardKernel<bf16>), Blocks(n), kThreads, 0, stream, out, inp, n);
  return cudaGetLastError();
}

cudaError_t GeluBackward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n,
                         cudaStream_t stream) {
  FORGE_LAUNCH((GeluBackwardKernel<bf16>), Blocks(n), kThreads, 0, stream, dinp, inp, dout, n);
  return cudaGetLastError();
}

cudaError_t AttentionDelta(float* delta, const bf16* dy, const bf16* y, int B, int Tq, int C, int H,
                           cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * H * Tq;
  FORGE_LAUNCH((AttentionDeltaKernel<bf16>), Blocks(rows), kThreads, 0, stream, delta, dy, y, B, Tq,
               C, H);
  return cudaGetLastError();
}

cudaError_t CrossEntropy(float* losses, bf16* dlogits, const bf16* logits, const int32_t* targets,
                         float scale, int N, int V, int ld, cudaStream_t stream) {
  FORGE_LAUNCH((CrossEntropyKernel<bf16>), N, kThreads, 0, stream, losses, dlogits, logits, targets,
               scale, V, ld);
  return cudaGetLastError();
}

size_t GradNormScratchDoubles(size_t n) { return NormBlocks(n); }

cudaError_t GradNorm(float* norm_out, double* scratch, const float* grads, size_t n,
                     float grad_scale, float max_norm, cudaStream_t stream) {
  const unsigned parts = NormBlocks(n);
  FORGE_LAUNCH((SumSquaresKernel), parts, kThreads, 0, stream, scratch, grads, n);
  FORGE_LAUNCH((NormFinishKernel), 1, 1, 0, stream, norm_out, scratch, static_cast<int>(parts),
               grad_scale, max_norm);
  return cudaGetLastError();
}

cudaError_t AdamWUpdate(float* params, bf16* lowp, float* grads, float* m, float* v, size_t n,
                        const float* grad_factor, float lr, float b1, float b2, float eps, float wd,
                        float c1, float c2, cudaStream_t stream) {
  FORGE_LAUNCH((AdamWKernel<bf16>), Blocks(n), kThreads, 0, stream, params, lowp, grads, m, v, n,
               grad_factor, lr, b1, b2, eps, wd, c1, c2);
  return cudaGetLastError();
}

cudaError_t Fill(float* x, size_t n, uint32_t seed, float lo, float hi, cudaStream_t stream) {
  FORGE_LAUNCH((FillKernel<float>), Blocks(n), kThreads, 0, stream, x, n, seed, lo, hi);
  return cudaGetLastError();
}

cudaError_t Fill(bf16* x, size_t n, uint32_t seed, float lo, float hi, cudaStream_t stream) {
  FORGE_LAUNCH((FillKernel<bf16>), Blocks(n), kThreads, 0, stream, x, n, seed, lo, hi);
  return cudaGetLastError();
}

cudaError_t FillTokens(int32_t* x, size_t n, uint32_t seed, int V, cudaStream_t stream) {
  FORGE_LAUNCH((FillTokensKernel), Blocks(n), kThreads, 0, stream, x, n, seed, V);
  return cudaGetLastError();
}

}  // namespace forge::bench::before
