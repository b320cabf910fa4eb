#include "worker/cuda/gemm.h"

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
                                              cudaDataType_t cd_type, bool bias, bool has_c,
                                              const uint32_t align[4]) {
  const std::string key = absl::StrCat(g.trans_a, ",", g.trans_b, ",", g.m, ",", g.n, ",", g.k,
                                       ",", g.lda, ",", g.ldb, ",", g.ldc, ",", ab_type, ",",
                                       cd_type, ",", bias, ",", has_c, ",", align[0], ",",
                                       align[1], ",", align[2], ",", align[3], ",", g.batch, ",",
                                       g.stride_a, ",", g.stride_b, ",", g.stride_c);
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
  const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias) {
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &cd_type, sizeof(cd_type)));
  }
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
  FORGE_CUBLAS_RETURN_IF_ERROR(st);
  if (found == 0) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for the matmul ", key,
                                            " (m,n,k = ", g.m, ",", g.n, ",", g.k, ")"));
  }
  plan->algo = result.algo;
  Plan* out = plan.get();
  plans_[key] = std::move(plan);
  return out;
}

absl::Status Matmul::Run(const engine::GemmCall& call, cudaDataType_t ab_type,
                         cudaDataType_t cd_type, const GemmOperands& ops, cudaStream_t stream) {
  const bool has_c = ops.beta != 0.0f;
  const void* c = has_c ? ops.c : ops.d;
  const uint32_t align[4] = {BatchAlignment(ops.a, call.stride_a, ab_type),
                             BatchAlignment(ops.b, call.stride_b, ab_type),
                             BatchAlignment(c, call.stride_c, cd_type),
                             BatchAlignment(ops.d, call.stride_c, cd_type)};
  if (ops.bias != nullptr && Alignment(ops.bias) < 16) {
    return absl::InvalidArgumentError("matmul: the bias vector must be 16-byte aligned");
  }
  if (ops.bias != nullptr && call.batch != 1) {
    return absl::InvalidArgumentError("matmul: a bias is not supported on a batched product");
  }
  ASSIGN_OR_RETURN(Plan * plan,
                   GetPlan(call, ab_type, cd_type, ops.bias != nullptr, has_c, align));
  if (ops.bias != nullptr) {
    FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ops.bias, sizeof(ops.bias)));
  }
  const float alpha = 1.0f;
  FORGE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->desc, &alpha, ops.a, plan->a, ops.b,
                                              plan->b, &ops.beta, c, plan->c, ops.d, plan->d,
                                              &plan->algo, workspace_.get(), workspace_.bytes(),
                                              stream));
  return absl::OkStatus();
}

}  // namespace forge::cuda
