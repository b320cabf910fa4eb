#include "worker/cuda/gemm.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace forge::cuda {
namespace {

// The largest power of two up to 256 that divides the address.
uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

// How cuBLASLt says it cannot do what was asked (as opposed to failing while doing it).
bool Refused(cublasStatus_t st) {
  return st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE;
}

// The bias and GELU pre-activation pointers of `ops` into `desc`: before the heuristic (it
// reads their alignment) and before every call (a cached plan serves many buffers).
absl::Status SetEpiloguePointers(cublasLtMatmulDesc_t desc, const GemmOperands& ops) {
  if (ops.bias != nullptr) {
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ops.bias, sizeof(ops.bias)));
  }
  if (ops.gelu != GemmGelu::kNone) {
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ops.aux, sizeof(ops.aux)));
  }
  return absl::OkStatus();
}

size_t ElementBytes(cudaDataType_t type) { return type == CUDA_R_32F ? 4 : 2; }

// The alignment every matrix of a strided batch has: the base's, capped by the stride's.
uint32_t BatchAlignment(const void* base, int64_t stride, cudaDataType_t type) {
  uint32_t align = Alignment(base);
  const uint64_t stride_bytes = static_cast<uint64_t>(stride) * ElementBytes(type);
  while (align > 1 && stride_bytes % align != 0) align >>= 1;
  return align;
}

absl::Status SetBatch(cublasLtMatrixLayout_t layout, int32_t batch, int64_t stride) {
  if (batch == 1) return absl::OkStatus();
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)));
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  return absl::OkStatus();
}

}  // namespace

struct Matmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;  // false: the heuristic offered no algorithm
  ~Plan() {
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, c, d}) {
      if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
    }
  }
};

absl::StatusOr<std::unique_ptr<Matmul>> Matmul::Create(size_t workspace_bytes) {
  auto m = std::unique_ptr<Matmul>(new Matmul());
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&m->handle_));
  ASSIGN_OR_RETURN(m->workspace_, DeviceBuffer<char>::Allocate(workspace_bytes, "cuBLASLt workspace"));
  return m;
}

Matmul::~Matmul() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<Matmul::Plan*> Matmul::GetPlan(const engine::GemmCall& g, cudaDataType_t ab_type,
                                              cudaDataType_t cd_type, const GemmOperands& ops) {
  const bool has_c = ops.beta != 0.0f;
  const uint32_t align[4] = {BatchAlignment(ops.a, g.stride_a, ab_type),
                             BatchAlignment(ops.b, g.stride_b, ab_type),
                             BatchAlignment(has_c ? ops.c : ops.d, g.stride_c, cd_type),
                             BatchAlignment(ops.d, g.stride_c, cd_type)};
  // cuBLASLt takes the bias and aux pointers' alignment from the values set when the
  // heuristic runs, so those alignments are part of the key as well.
  const uint32_t bias_align = ops.bias != nullptr ? Alignment(ops.bias) : 0;
  const uint32_t aux_align = ops.gelu != GemmGelu::kNone ? Alignment(ops.aux) : 0;
  const std::string key =
      absl::StrCat(g.trans_a, ",", g.trans_b, ",", g.m, ",", g.n, ",", g.k, ",", g.lda, ",", g.ldb,
                   ",", g.ldc, ",", ab_type, ",", cd_type, ",", has_c, ",", align[0], ",", align[1],
                   ",", align[2], ",", align[3], ",", bias_align, ",", static_cast<int>(ops.gelu),
                   ",", aux_align, ",", g.batch, ",", g.stride_a, ",", g.stride_b, ",", g.stride_c);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  FORGE_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const bool bias = ops.bias != nullptr;
  cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (ops.gelu == GemmGelu::kForward) {
    epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  } else if (ops.gelu == GemmGelu::kBackward) {
    epilogue = CUBLASLT_EPILOGUE_DGELU;
  }
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias) {
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &cd_type, sizeof(cd_type)));
  }
  if (ops.gelu != GemmGelu::kNone) {
    // The pre-activation has D's shape and type (the default aux type: D's).
    const int64_t aux_ld = g.ldc;
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  RETURN_IF_ERROR(SetEpiloguePointers(plan->desc, ops));
  // Stored shapes (before op): A is m x k or k x m, B is k x n or n x k; column-major.
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->a, ab_type, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda));
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->b, ab_type, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb));
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, cd_type, g.m, g.n, g.ldc));
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, cd_type, g.m, g.n, g.ldc));
  RETURN_IF_ERROR(SetBatch(plan->a, g.batch, g.stride_a));
  RETURN_IF_ERROR(SetBatch(plan->b, g.batch, g.stride_b));
  RETURN_IF_ERROR(SetBatch(plan->c, g.batch, g.stride_c));
  RETURN_IF_ERROR(SetBatch(plan->d, g.batch, g.stride_c));

  cublasLtMatmulPreference_t pref = nullptr;
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = workspace_.bytes();
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; ++i) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &align[i], sizeof(align[i]));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->d,
                                        pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  // An epilogue this cuBLASLt cannot run on this device and shape is answered with
  // NOT_SUPPORTED, INVALID_VALUE or no algorithm: all mean "none" for a GELU epilogue (the
  // caller falls back to the GELU kernels).
  if (ops.gelu != GemmGelu::kNone && Refused(st)) {
    st = CUBLAS_STATUS_SUCCESS;
    found = 0;
  }
  FORGE_CUBLAS_RETURN_IF_ERROR(st);
  // A result's fields are valid only when its state is SUCCESS.
  plan->found = found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
                result.workspaceSize <= workspace_.bytes();
  if (plan->found) plan->algo = result.algo;
  Plan* out = plan.get();
  plans_[key] = std::move(plan);
  return out;
}

absl::Status Matmul::Run(const engine::GemmCall& call, cudaDataType_t ab_type,
                         cudaDataType_t cd_type, const GemmOperands& ops, cudaStream_t stream) {
  if (ops.bias != nullptr && Alignment(ops.bias) < 16) {
    return absl::InvalidArgumentError("matmul: the bias vector must be 16-byte aligned");
  }
  if (ops.bias != nullptr && call.batch != 1) {
    return absl::InvalidArgumentError("matmul: a bias is not supported on a batched product");
  }
  if (ops.gelu != GemmGelu::kNone) {
    if (call.batch != 1 || ops.aux == nullptr) {
      return absl::InvalidArgumentError(
          "matmul: a GELU epilogue needs an unbatched product and its aux buffer");
    }
    if (ops.gelu == GemmGelu::kBackward && ops.bias != nullptr) {
      return absl::InvalidArgumentError("matmul: the GELU backward epilogue takes no bias");
    }
    // cuBLASLt's rule for the pre-activation's leading dimension; otherwise the caller runs
    // the product and the GELU kernel separately.
    if (call.ldc % 8 != 0 || Alignment(ops.aux) < 16) {
      return absl::UnimplementedError(
          absl::StrCat("matmul: no GELU epilogue for leading dimension ", call.ldc,
                       " (cuBLASLt needs a "
                       "multiple of 8 and a 16-byte aligned pre-activation)"));
    }
  }
  ASSIGN_OR_RETURN(Plan * plan, GetPlan(call, ab_type, cd_type, ops));
  if (!plan->found) {
    const std::string what = absl::StrCat("m,n,k = ", call.m, ",", call.n, ",", call.k);
    if (ops.gelu != GemmGelu::kNone) {
      return absl::UnimplementedError(
          absl::StrCat("cuBLASLt has no algorithm with a GELU epilogue for ", what));
    }
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for the matmul ", what,
                                            " (batch ", call.batch, ")"));
  }
  RETURN_IF_ERROR(SetEpiloguePointers(plan->desc, ops));  // this call's (the plan is shared)
  const bool has_c = ops.beta != 0.0f;
  const void* c = has_c ? ops.c : ops.d;
  const float alpha = 1.0f;
  const cublasStatus_t st =
      cublasLtMatmul(handle_, plan->desc, &alpha, ops.a, plan->a, ops.b, plan->b, &ops.beta, c,
                     plan->c, ops.d, plan->d, &plan->algo, workspace_.get(),
                     workspace_.bytes(), stream);
  if (ops.gelu != GemmGelu::kNone && Refused(st)) {
    // Refused before anything was queued: this plan is not used again, and the caller runs
    // the plain product and the GELU kernel.
    plan->found = false;
    return absl::UnimplementedError(absl::StrCat(
        "cuBLASLt refused the GELU epilogue for m,n,k = ", call.m, ",", call.n, ",", call.k,
        " (cuBLAS status ", static_cast<int>(st), ")"));
  }
  FORGE_CUBLAS_RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

}  // namespace forge::cuda
