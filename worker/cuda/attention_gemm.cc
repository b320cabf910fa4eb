#include "worker/cuda/attention_gemm.h"

#include <cmath>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/cuda/kernels.h"
#include "worker/engine/gemm_layout.h"

namespace forge::cuda {
namespace {

using engine::AttentionGemm;
using engine::AttentionOperand;

size_t Aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

template <typename T>
size_t GemmAttention<T>::ScratchBytes(int H, int max_seq) {
  const size_t elems = static_cast<size_t>(H) * max_seq * engine::ScoreLd(max_seq);
  return 2 * Aligned(elems * sizeof(float)) + 2 * Aligned(elems * sizeof(T));
}

template <typename T>
absl::StatusOr<std::unique_ptr<GemmAttention<T>>> GemmAttention<T>::Create(Matmul* matmul, int H,
                                                                           int max_seq) {
  if (H < 1 || max_seq < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm attention: need heads >= 1 and max_seq >= 1; got ", H, ", ", max_seq));
  }
  auto a = std::unique_ptr<GemmAttention>(new GemmAttention(matmul, H, max_seq));
  ASSIGN_OR_RETURN(a->scratch_, DeviceBuffer<char>::Allocate(ScratchBytes(H, max_seq),
                                                             "attention score matrices"));
  const size_t elems = static_cast<size_t>(H) * max_seq * engine::ScoreLd(max_seq);
  char* base = a->scratch_.get();
  a->s_ = reinterpret_cast<float*>(base);
  base += Aligned(elems * sizeof(float));
  a->dp_ = reinterpret_cast<float*>(base);
  base += Aligned(elems * sizeof(float));
  a->p_ = reinterpret_cast<T*>(base);
  base += Aligned(elems * sizeof(T));
  a->ds_ = reinterpret_cast<T*>(base);
  return a;
}

template <typename T>
absl::Status GemmAttention<T>::CheckShape(int Tq, int C, int H) const {
  if (H != H_ || Tq < 1 || Tq > max_seq_ || C % H != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm attention: built for ", H_, " heads and up to ", max_seq_,
                     " tokens; called with ", H, " heads, ", Tq, " tokens, width ", C));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status GemmAttention<T>::Run(const AttentionGemm& g, const void* qkv, const void* dy, void* y,
                                   void* dqkv, int C, cudaStream_t stream) {
  constexpr bool kExact = std::is_same_v<T, float>;
  const cudaDataType_t act = kExact ? CUDA_R_32F : CUDA_R_16BF;
  const char* q = static_cast<const char*>(qkv);
  char* d = static_cast<char*>(dqkv);
  const size_t third = static_cast<size_t>(C) * sizeof(T);
  auto in = [&](AttentionOperand o) -> const void* {
    switch (o) {
      case AttentionOperand::kQ:
        return q;
      case AttentionOperand::kK:
        return q + third;
      case AttentionOperand::kV:
        return q + 2 * third;
      case AttentionOperand::kDy:
        return dy;
      case AttentionOperand::kP:
        return p_;
      case AttentionOperand::kDs:
        return ds_;
      default:
        return nullptr;  // not an input of any product
    }
  };
  GemmOperands ops;
  ops.a = in(g.a);
  ops.b = in(g.b);
  cudaDataType_t out_type = act;
  switch (g.out) {
    case AttentionOperand::kS:
      ops.d = s_, out_type = CUDA_R_32F;
      break;
    case AttentionOperand::kDp:
      ops.d = dp_, out_type = CUDA_R_32F;
      break;
    case AttentionOperand::kY:
      ops.d = y;
      break;
    case AttentionOperand::kDq:
      ops.d = d;
      break;
    case AttentionOperand::kDk:
      ops.d = d + third;
      break;
    case AttentionOperand::kDv:
      ops.d = d + 2 * third;
      break;
    default:
      break;
  }
  if (ops.a == nullptr || ops.b == nullptr || ops.d == nullptr) {
    return absl::InternalError("gemm attention: a product names an operand it cannot have");
  }
  return matmul_->Run(g.call, act, out_type, ops, stream);
}

template <typename T>
absl::Status GemmAttention<T>::Forward(T* y, float* lse, const T* qkv, int B, int Tq, int C, int H,
                                       cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape(Tq, C, H));
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / H));
  const AttentionGemm scores = engine::ScoresGemm(Tq, C, H);
  const AttentionGemm output = engine::OutputGemm(Tq, C, H);
  const int rows = H * Tq;
  for (int b = 0; b < B; ++b) {
    const T* qkv_b = qkv + static_cast<size_t>(b) * Tq * 3 * C;
    T* y_b = y + static_cast<size_t>(b) * Tq * C;
    RETURN_IF_ERROR(Run(scores, qkv_b, nullptr, nullptr, nullptr, C, stream));
    FORGE_CUDA_RETURN_IF_ERROR(AttentionSoftmax<T>(p_, lse + static_cast<size_t>(b) * rows, s_,
                                                   rows, Tq, engine::ScoreLd(Tq), scale, stream));
    RETURN_IF_ERROR(Run(output, qkv_b, nullptr, y_b, nullptr, C, stream));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status GemmAttention<T>::Backward(T* dqkv, float* delta, const T* dy, const T* qkv,
                                        const T* y, const float* lse, int B, int Tq, int C, int H,
                                        cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape(Tq, C, H));
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / H));
  FORGE_CUDA_RETURN_IF_ERROR(AttentionDelta<T>(delta, dy, y, B, Tq, C, H, stream));
  const AttentionGemm scores = engine::ScoresGemm(Tq, C, H);
  const AttentionGemm prob_grad = engine::ProbGradGemm(Tq, C, H);
  const int rows = H * Tq;
  for (int b = 0; b < B; ++b) {
    const T* qkv_b = qkv + static_cast<size_t>(b) * Tq * 3 * C;
    const T* dy_b = dy + static_cast<size_t>(b) * Tq * C;
    T* dqkv_b = dqkv + static_cast<size_t>(b) * Tq * 3 * C;
    const size_t row0 = static_cast<size_t>(b) * rows;
    RETURN_IF_ERROR(Run(scores, qkv_b, nullptr, nullptr, nullptr, C, stream));
    RETURN_IF_ERROR(Run(prob_grad, qkv_b, dy_b, nullptr, nullptr, C, stream));
    FORGE_CUDA_RETURN_IF_ERROR(AttentionSoftmaxBackward<T>(
        p_, ds_, s_, dp_, lse + row0, delta + row0, rows, Tq, engine::ScoreLd(Tq), scale, stream));
    for (const AttentionGemm& g : {engine::ValueGradGemm(Tq, C, H), engine::QueryGradGemm(Tq, C, H),
                                   engine::KeyGradGemm(Tq, C, H)}) {
      RETURN_IF_ERROR(Run(g, qkv_b, dy_b, nullptr, dqkv_b, C, stream));
    }
  }
  return absl::OkStatus();
}

template class GemmAttention<float>;
template class GemmAttention<bf16>;

}  // namespace forge::cuda
