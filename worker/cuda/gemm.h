// Matmuls on cuBLASLt: the dense layers' three products and the attention's batched ones
// (gemm_layout.h) with bf16 or fp32 inputs and fp32 accumulation, the bias (and optionally
// GELU or its derivative) applied in the epilogue and a residual added through C (D = A·B +
// beta·C with C != D), so a forward dense layer is one call. A strided batch (GemmCall::batch > 1)
// uses stride_c for both C and D.
//
// Plans (operation descriptor, layouts, the heuristic's algorithm) are cached per distinct
// call, so steady-state steps make no heuristic queries. cuBLASLt gives the same bits for the
// same call on the same GPU model (its split-K reductions are ordered), which keeps training
// deterministic on one device.
//
// Thread safety: owned by one thread (the backend's).
#ifndef FORGE_WORKER_CUDA_GEMM_H_
#define FORGE_WORKER_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/cuda_util.h"
#include "worker/engine/gemm_layout.h"

namespace forge::cuda {

// GELU (tanh form) in the epilogue, on the fp32 result before it is rounded to D's type.
enum class GemmGelu {
  kNone,
  kForward,   // aux = A·B + beta·C + bias (the pre-activation); D = gelu(aux)
  kBackward,  // D = (A·B + beta·C) · gelu'(aux), aux the forward's pre-activation
};

struct GemmOperands {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;  // added as beta · C; may be null when beta == 0
  void* d = nullptr;        // the output
  const void* bias = nullptr;  // [m] of the D type, broadcast over columns; null for none
  float beta = 0.0f;
  GemmGelu gelu = GemmGelu::kNone;
  void* aux = nullptr;  // with gelu: the pre-activation, D's type and shape (ld = ldc)
};

class Matmul {
 public:
  // `ab_type`: type of A and B (CUDA_R_32F or CUDA_R_16BF); `cd_type`: type of C and D.
  static absl::StatusOr<std::unique_ptr<Matmul>> Create(size_t workspace_bytes = 32 << 20);
  ~Matmul();

  // UNIMPLEMENTED when cuBLASLt offers no algorithm for a GELU epilogue (the caller runs the
  // product and its GELU kernel separately instead); other errors are errors.
  absl::Status Run(const engine::GemmCall& call, cudaDataType_t ab_type, cudaDataType_t cd_type,
                   const GemmOperands& ops, cudaStream_t stream);

 private:
  struct Plan;
  Matmul() = default;
  // The plan for `ops` (the key: shapes, types, epilogue, and the alignment in bytes, up to
  // 256, of every pointer, which the heuristic must respect: weights inside the flat
  // parameter buffer are not all 256-byte aligned). A plan with no algorithm is cached too.
  absl::StatusOr<Plan*> GetPlan(const engine::GemmCall& call, cudaDataType_t ab_type,
                                cudaDataType_t cd_type, const GemmOperands& ops);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<char> workspace_;
  std::map<std::string, std::unique_ptr<Plan>> plans_;
};

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_GEMM_H_
