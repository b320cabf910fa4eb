// The memory-bound kernels as they were before the 16-byte packs (fb02d94), bf16 only, for
// forge-bench-gpu-kernels' before/after table; and fill kernels for its inputs. Same
// arguments and results as the launchers of the same names in worker/cuda/kernels.h.
#ifndef FORGE_BENCH_GPU_REFERENCE_KERNELS_H_
#define FORGE_BENCH_GPU_REFERENCE_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace forge::bench::before {

using bf16 = __nv_bfloat16;

cudaError_t EmbeddingForward(bf16* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int Tq, int C, cudaStream_t stream);
cudaError_t LayerNormForward(bf16* out, float* mean, float* rstd, const bf16* inp,
                             const float* weight, const float* bias, int N, int C,
                             cudaStream_t stream);
size_t ColumnReduceScratchFloats(int N, int C);
cudaError_t LayerNormBackward(bf16* dinp, float* dweight, float* dbias, float* scratch,
                              const bf16* dout, const bf16* inp, const float* weight,
                              const float* mean, const float* rstd, int N, int C,
                              cudaStream_t stream);
cudaError_t BiasGrad(float* dbias, float* scratch, const bf16* dout, int N, int C,
                     cudaStream_t stream);
cudaError_t GeluForward(bf16* out, const bf16* inp, size_t n, cudaStream_t stream);
cudaError_t GeluBackward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n,
                         cudaStream_t stream);
cudaError_t AttentionDelta(float* delta, const bf16* dy, const bf16* y, int B, int Tq, int C, int H,
                           cudaStream_t stream);
cudaError_t CrossEntropy(float* losses, bf16* dlogits, const bf16* logits, const int32_t* targets,
                         float scale, int N, int V, int ld, cudaStream_t stream);
size_t GradNormScratchDoubles(size_t n);
cudaError_t GradNorm(float* norm_out, double* scratch, const float* grads, size_t n,
                     float grad_scale, float max_norm, cudaStream_t stream);
cudaError_t AdamWUpdate(float* params, bf16* lowp, float* grads, float* m, float* v, size_t n,
                        const float* grad_factor, float lr, float b1, float b2, float eps, float wd,
                        float c1, float c2, cudaStream_t stream);

// x[i] = a hash of (seed, i) in [lo, hi); tokens in [0, V).
cudaError_t Fill(float* x, size_t n, uint32_t seed, float lo, float hi, cudaStream_t stream);
cudaError_t Fill(bf16* x, size_t n, uint32_t seed, float lo, float hi, cudaStream_t stream);
cudaError_t FillTokens(int32_t* x, size_t n, uint32_t seed, int V, cudaStream_t stream);

}  // namespace forge::bench::before

#endif  // FORGE_BENCH_GPU_REFERENCE_KERNELS_H_
