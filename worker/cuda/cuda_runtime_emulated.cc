// The CUDA runtime and cuBLASLt calls the CUDA backend makes, implemented on host memory for
// the emulated backend (cuda_emulation.h; label unit): one "device" with an H100's
// properties, streams and events that are already done (every call completes before it
// returns; an event keeps the host time it was recorded at, for cudaEventElapsedTime), and
// matmuls computed here in fp32 from the operands' types, transposes, batch
// strides, beta and the bias and GELU epilogues. Linked instead of libcudart and libcublasLt,
// so the backend's own code (buffers, offsets, the order of its calls) runs unchanged in CI.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "worker/cuda/gelu_math.h"

namespace {

int g_device = 0;
int g_handles = 0;  // streams, events and cuBLASLt handles point here

void* Handle() { return &g_handles; }

// cudaMalloc's allocations (not cudaMallocHost's) and their bytes.
std::mutex g_device_mu;
std::unordered_map<void*, size_t> g_device_sizes;
size_t g_device_bytes = 0;

}  // namespace

namespace forge::cuda {

size_t EmulatedDeviceBytesInUse() {
  std::lock_guard<std::mutex> lock(g_device_mu);
  return g_device_bytes;
}

}  // namespace forge::cuda

namespace {

struct EmulatedEvent {
  bool recorded = false;
  std::chrono::steady_clock::time_point at;
};

}  // namespace

extern "C" {

cudaError_t cudaMallocHost(void** p, size_t size) {
  *p = std::aligned_alloc(256, (size + 255) / 256 * 256 + 256);
  return *p == nullptr ? cudaErrorMemoryAllocation : cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t size) {
  if (cudaError_t e = cudaMallocHost(p, size); e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(g_device_mu);
  g_device_sizes[*p] = size;
  g_device_bytes += size;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  {
    std::lock_guard<std::mutex> lock(g_device_mu);
    if (auto it = g_device_sizes.find(p); it != g_device_sizes.end()) {
      g_device_bytes -= it->second;
      g_device_sizes.erase(it);
    }
  }
  return cudaFreeHost(p);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t) {
  std::memset(p, value, n);
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  g_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = g_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::strncpy(prop->name, "Emulated H100 (CPU)", sizeof(prop->name) - 1);
  prop->totalGlobalMem = size_t{80} << 30;
  prop->sharedMemPerBlockOptin = 227 << 10;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *free_bytes = size_t{64} << 30;
  *total = size_t{80} << 30;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -1;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = static_cast<cudaStream_t>(Handle());
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned, int) {
  *s = static_cast<cudaStream_t>(Handle());
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(new EmulatedEvent);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  auto* event = reinterpret_cast<EmulatedEvent*>(e);
  event->recorded = true;
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  const auto* a = reinterpret_cast<const EmulatedEvent*>(start);
  const auto* b = reinterpret_cast<const EmulatedEvent*>(end);
  if (!a->recorded || !b->recorded) return cudaErrorInvalidResourceHandle;
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<EmulatedEvent*>(e);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }

}  // extern "C"

// ------------------------------------------------------------------------------- cuBLASLt

namespace {

struct Desc {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  cudaDataType_t bias_type = CUDA_R_32F;
  void* aux = nullptr;  // GELU's pre-activation (D's type)
  int64_t aux_ld = 0;
};

bool HasBias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool GeluForward(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

struct Layout {
  cudaDataType_t type = CUDA_R_32F;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  int32_t batch = 1;
  int64_t stride = 0;
};

float Load(const void* base, cudaDataType_t type, size_t i) {
  if (type == CUDA_R_32F) return static_cast<const float*>(base)[i];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}

void Store(void* base, cudaDataType_t type, size_t i, float v) {
  if (type == CUDA_R_32F) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16(v);
  }
}

size_t Bytes(cudaDataType_t type) { return type == CUDA_R_32F ? 4 : 2; }

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = reinterpret_cast<cublasLtHandle_t>(Handle());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete reinterpret_cast<Desc*>(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  Desc* desc = reinterpret_cast<Desc*>(d);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      std::memcpy(&desc->ta, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      std::memcpy(&desc->tb, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      std::memcpy(&desc->epilogue, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      std::memcpy(&desc->bias, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      std::memcpy(&desc->bias_type, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      std::memcpy(&desc->aux, buf, size);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      std::memcpy(&desc->aux_ld, buf, size);
      break;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  Layout* layout = new Layout();
  layout->type = type;
  layout->rows = rows;
  layout->cols = cols;
  layout->ld = ld;
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(layout);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete reinterpret_cast<Layout*>(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  Layout* layout = reinterpret_cast<Layout*>(l);
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      std::memcpy(&layout->batch, buf, size);
      break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      std::memcpy(&layout->stride, buf, size);
      break;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = reinterpret_cast<cublasLtMatmulPreference_t>(Handle());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
// Offers one algorithm, except for a GELU epilogue that breaks cuBLASLt's documented rules
// for the pre-activation (pointer set, leading dimension a multiple of 8 and at least D's
// rows), or any GELU epilogue when FORGE_EMULATED_CUBLASLT_NO_GELU is set (for testing the
// callers' fallback).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t d_l,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results,
                                              int* found) {
  const Desc& desc = *reinterpret_cast<const Desc*>(d);
  const Layout& ld = *reinterpret_cast<const Layout*>(d_l);
  if (GeluForward(desc.epilogue) || desc.epilogue == CUBLASLT_EPILOGUE_DGELU) {
    if (std::getenv("FORGE_EMULATED_CUBLASLT_NO_GELU") != nullptr || desc.aux == nullptr ||
        desc.aux_ld % 8 != 0 || desc.aux_ld < static_cast<int64_t>(ld.rows)) {
      *found = 0;
      return CUBLAS_STATUS_SUCCESS;
    }
  }
  *found = requested > 0 ? 1 : 0;
  if (requested > 0) results[0] = cublasLtMatmulHeuristicResult_t{};
  return CUBLAS_STATUS_SUCCESS;
}

// D = alpha · op(A) · op(B) + beta · C (+ bias per row of D), column-major, per batch.
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t a_l, const void* B,
                              cublasLtMatrixLayout_t b_l, const void* beta, const void* C,
                              cublasLtMatrixLayout_t c_l, void* D, cublasLtMatrixLayout_t d_l,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  const Desc& desc = *reinterpret_cast<const Desc*>(d);
  const Layout& la = *reinterpret_cast<const Layout*>(a_l);
  const Layout& lb = *reinterpret_cast<const Layout*>(b_l);
  const Layout& lc = *reinterpret_cast<const Layout*>(c_l);
  const Layout& ld = *reinterpret_cast<const Layout*>(d_l);
  const bool ta = desc.ta == CUBLAS_OP_T, tb = desc.tb == CUBLAS_OP_T;
  const uint64_t m = ld.rows, n = ld.cols, k = ta ? la.rows : la.cols;
  if ((ta ? la.cols : la.rows) != m || (tb ? lb.rows : lb.cols) != n ||
      (tb ? lb.cols : lb.rows) != k || lc.rows != m || lc.cols != n) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const bool bias = HasBias(desc.epilogue), gelu = GeluForward(desc.epilogue),
             dgelu = desc.epilogue == CUBLASLT_EPILOGUE_DGELU;
  if (desc.epilogue != CUBLASLT_EPILOGUE_DEFAULT && !bias && !gelu && !dgelu) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if ((gelu || dgelu) && (desc.aux == nullptr || ld.batch != 1)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  std::vector<float> acc(m);
  for (int32_t p = 0; p < ld.batch; ++p) {
    const char* a = static_cast<const char*>(A) + p * la.stride * Bytes(la.type);
    const char* b = static_cast<const char*>(B) + p * lb.stride * Bytes(lb.type);
    const char* c = static_cast<const char*>(C) + p * lc.stride * Bytes(lc.type);
    char* out = static_cast<char*>(D) + p * ld.stride * Bytes(ld.type);
    for (uint64_t j = 0; j < n; ++j) {
      for (uint64_t i = 0; i < m; ++i) {
        float s = 0.0f;
        for (uint64_t q = 0; q < k; ++q) {
          const float x = Load(a, la.type, ta ? q + i * la.ld : i + q * la.ld);
          const float y = Load(b, lb.type, tb ? j + q * lb.ld : q + j * lb.ld);
          s += x * y;
        }
        acc[i] = s;
      }
      for (uint64_t i = 0; i < m; ++i) {
        float v = al * acc[i];
        if (be != 0.0f) v += be * Load(c, lc.type, i + j * lc.ld);
        if (bias) v += Load(desc.bias, desc.bias_type, i);
        if (gelu) {
          Store(desc.aux, ld.type, i + j * desc.aux_ld, v);
          v = forge::cuda::GeluOf(v);
        } else if (dgelu) {
          v *= forge::cuda::GeluGradOf(Load(desc.aux, ld.type, i + j * desc.aux_ld));
        }
        Store(out, ld.type, i + j * ld.ld, v);
      }
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
