// The CUDA ModelBackend: the GPT of worker/engine/gpt.h on one CUDA device.
//
//   matmuls        cuBLASLt (gemm.h), bf16 inputs and fp32 accumulation, bias and residual
//                  fused into the call
//   attention      flash attention on the tensor cores in bf16 (flash_attention.h: mma.sync
//                  fragments in registers, online softmax, no T x T matrix); or the heads' score
//                  products as cuBLASLt strided batches with our softmax kernels (attention_gemm.h:
//                  fp32 mode, other head sizes); or our fused CUDA-core kernels (kernels.h:
//                  long contexts whose [H, T, T] scores would not fit). CudaAttention picks.
//   GELU           in the MLP matmuls' cuBLASLt epilogues in bf16 (gelu_epilogue); else
//                  our kernels
//   everything     our kernels (kernels.h): embeddings, LayerNorm, cross-entropy,
//   else           gradient norm, AdamW
//   precision      bf16 activations and a bf16 copy of the weights for the matmuls; fp32
//                  master weights, gradients and AdamW moments (the checkpoint's buffers)
//   data parallel  NCCL: each layer's gradients are all-reduced on a second stream as soon as
//                  the last micro-batch's backward has produced them (ordered by events), so
//                  the reduction overlaps the rest of the backward pass
//
// With `bf16 = false` activations and matmuls are fp32 (no TF32): slower, and what the tests
// compare with the CPU engine at fp32 tolerance.
//
// Deterministic on one device: no atomics (see kernels.h); cuBLASLt's plans are cached, so
// each product runs the same algorithm every step.
#ifndef FORGE_WORKER_CUDA_CUDA_BACKEND_H_
#define FORGE_WORKER_CUDA_CUDA_BACKEND_H_

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "worker/engine/model_backend.h"
#include "worker/engine/trainer.h"

namespace forge::cuda {

class NcclCommunicator;
class StepProfile;

enum class CudaAttention {
  kAuto,   // kFlash in bf16 where the head size allows; else kGemm when its scratch fits
           // GemmAttentionBudget and half the free memory left after the model's own
           // buffers; else kFused
  kFlash,  // flash_attention.h: fused on the tensor cores (bf16; head sizes 16..128)
  kGemm,   // attention_gemm.h: cuBLASLt products with [H, T, T] scores in memory
  kFused,  // kernels.h AttentionForward / AttentionBackward: fused on CUDA cores
};

// The most device memory kAuto lets the GEMM attention's score matrices take: 2 GiB or a
// sixteenth of the device, whichever is less.
size_t GemmAttentionBudget(size_t device_bytes);

// Device bytes a backend built for micro-batches of `batch` sequences of `seq` tokens takes
// for them: activations, their statistics and gradients, the logits, the reductions' scratch
// and the token buffers. Not counted: the parameters, gradients and AdamW moments (18 bytes a
// parameter in bf16), the GEMM attention's scores (GemmAttentionBudget) and cuBLASLt's and
// NCCL's own memory. What picks the default micro-batch of a job on a GPU.
size_t CudaActivationBytes(const ModelShape& shape, int batch, int seq, bool bf16);

struct CudaBackendOptions {
  int device = 0;     // CUDA device index (of the devices this process sees)
  bool bf16 = true;   // false: fp32 activations and matmuls
  CudaAttention attention = CudaAttention::kAuto;
  // bf16: GELU in the MLP's first matmul's cuBLASLt epilogue and its derivative in the
  // epilogue of the matmul that produces its input gradient (no separate GELU kernels), where
  // cuBLASLt offers an algorithm for them; our GELU kernels otherwise (and in fp32 mode).
  bool gelu_epilogue = true;
  // Gradient all-reduce; required when world_size > 1, and its rank and world size must
  // match the backend's. Not owned; must outlive the backend.
  NcclCommunicator* nccl = nullptr;
  // When set, every op the backend queues is timed with CUDA events (step_profile.h), at the
  // cost of an event per op and a wait at the end of each call. Not owned; must outlive the
  // backend.
  StepProfile* profile = nullptr;
};

// FAILED_PRECONDITION when no CUDA device answers (naming the driver's error), INVALID_ARGUMENT
// for a shape the kernels do not support (the fused attention's head sizes are 16/32/64/128;
// the GEMM attention takes any), RESOURCE_EXHAUSTED when the model and activations do not fit
// in device memory.
absl::StatusOr<std::unique_ptr<engine::ModelBackend>> CreateCudaBackend(
    const engine::BackendConfig& config, const CudaBackendOptions& options);

// For TrainerOptions::make_backend.
engine::BackendFactory CudaBackendFactory(CudaBackendOptions options);

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_CUDA_BACKEND_H_
