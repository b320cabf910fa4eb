// ModelBackend: where one rank's model, gradients and optimizer live and run — the CPU engine
// (CpuBackend: OpenBLAS + our kernels, gradients summed with Gloo) or a CUDA device
// (worker/cuda: cuBLAS + our kernels, bf16 activations with fp32 master weights, NCCL). The
// Trainer drives one through the same sequence on every backend:
//
//   ZeroGrad()
//   for each micro-batch m of the step:
//     ForwardBackward(tokens_m, targets_m, B, T, /*last_micro_batch=*/m == M - 1)
//   FinishGradients()             // data parallel: every rank now holds the summed gradients
//   OptimizerStep(1 / (M · W), max_norm, lr)
//
// Parameters, gradients and the AdamW moments are each one flat fp32 buffer in the layout of
// gpt_params.h (Hugging Face GPT-2 names) on every backend, so checkpoints, exports and the
// gradient all-reduce do not depend on where the model runs. A backend may start the gradient
// all-reduce early (during the last micro-batch's backward, layer by layer); FinishGradients
// waits for it.
//
// Determinism: the same inputs give the same bits on one backend and device type. The
// backends agree with each other within floating-point tolerance only.
//
// Thread safety: owned by one thread; CopyState may be called between steps only.
#ifndef FORGE_WORKER_ENGINE_MODEL_BACKEND_H_
#define FORGE_WORKER_ENGINE_MODEL_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_presets.h"
#include "worker/engine/adamw.h"
#include "worker/engine/param_info.h"

namespace forge {
class Communicator;
}  // namespace forge

namespace forge::engine {

// What every backend is built from (the Trainer fills it from TrainerOptions).
struct BackendConfig {
  ModelShape shape;
  int max_batch = 1;  // sequences per ForwardBackward, at most
  int max_seq = 1;    // tokens per sequence, at most
  AdamWOptions adamw;
  int world_size = 1;
  int rank = 0;
  int threads = 1;  // CPU worker threads (the CPU backend; host-side work elsewhere)
  // The CPU backend's gradient all-reduce (Gloo). Not owned; required when world_size > 1 on
  // the CPU backend; other backends bring their own collectives.
  Communicator* communicator = nullptr;
  size_t grad_bucket_bytes = size_t{4} << 20;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;

  // "cpu (2 threads)", "cuda:0 NVIDIA H100 80GB HBM3, bf16": for logs.
  virtual std::string Describe() const = 0;
  // The named tensors in buffer order (gpt_params.h).
  virtual const std::vector<ParamInfo>& Parameters() const = 0;
  virtual size_t num_params() const = 0;

  // GPT-2 initialisation from `seed` (InitGptParameters: the same values on every backend);
  // AdamW moments and step back to zero.
  virtual absl::Status InitRandom(uint64_t seed) = 0;

  virtual absl::Status ZeroGrad() = 0;
  // Forward and backward of one micro-batch: tokens and targets [B, T] row-major (targets < 0
  // are ignored). Adds dLoss/dparams of the mean loss over the counted tokens to the
  // gradients and returns that mean (0 when no target counts). `last_micro_batch` tells a
  // data-parallel backend that the gradients are complete once this backward is done, so it
  // may start reducing them. INVALID_ARGUMENT for a shape or token out of range.
  virtual absl::StatusOr<double> ForwardBackward(const int32_t* tokens, const int32_t* targets,
                                                 int B, int T, bool last_micro_batch) = 0;
  // Forward only: losses[B·T] receives each token's loss (0 where targets < 0). For evals.
  virtual absl::Status ForwardLosses(const int32_t* tokens, const int32_t* targets, int B, int T,
                                     float* losses) = 0;
  // Data parallel (world_size > 1): returns once the gradients are summed over the ranks. A
  // collective error (UNAVAILABLE / DEADLINE_EXCEEDED) leaves the backend unusable. No-op for
  // one rank.
  virtual absl::Status FinishGradients() = 0;
  // Scales the gradients by `grad_scale`, clips their global norm to `max_norm` (<= 0: no
  // clipping) and takes one AdamW step at learning rate `lr`. Returns the norm before
  // clipping (after scaling).
  virtual absl::StatusOr<double> OptimizerStep(float grad_scale, double max_norm, float lr) = 0;

  // AdamW updates taken so far (the bias-correction step count).
  virtual int64_t optimizer_step() const = 0;
  // Host copies of parameters, AdamW moments and gradients, each num_params() floats (any
  // pointer may be null to skip it).
  virtual absl::Status CopyState(float* params, float* adam_m, float* adam_v) const = 0;
  virtual absl::Status CopyGradients(float* grads) const = 0;
  // Replaces parameters and moments (null keeps that buffer) and sets the AdamW step.
  virtual absl::Status LoadState(const float* params, const float* adam_m, const float* adam_v,
                                 int64_t optimizer_step) = 0;

  // The device's peak dense FLOP/s in the precision its matmuls run, what MFU divides by; 0
  // when unknown (the CPU engine, a GPU device_peaks.h does not list, the CUDA fp32 mode).
  virtual double PeakFlops() const { return 0; }
};

// The CPU engine: Gpt<float> on a ThreadPool, AdamW, gradient buckets all-reduced through
// config.communicator.
absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCpuBackend(const BackendConfig& config);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_MODEL_BACKEND_H_
