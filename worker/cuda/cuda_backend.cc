#include "worker/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/model_presets.h"
#include "common/status_macros.h"
#include "worker/cuda/attention_gemm.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/device_peaks.h"
#include "worker/cuda/flash_attention.h"
#include "worker/cuda/gemm.h"
#include "worker/cuda/kernels.h"
#include "worker/cuda/nccl_communicator.h"
#include "worker/cuda/step_profile.h"
#include "worker/engine/gemm_layout.h"
#include "worker/engine/gpt_params.h"

namespace forge::cuda {
namespace {

using engine::BackendConfig;
using engine::GemmCall;
using engine::GemmOperand;
using engine::GptLayerOffsets;
using engine::GptOffsets;
using engine::ParamInfo;
using engine::WeightLayout;

// Host memory the device copies to and from without staging (cudaMallocHost).
template <typename U>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  absl::Status Allocate(size_t count) {
    void* p = nullptr;
    FORGE_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, std::max<size_t>(1, count) * sizeof(U)));
    data_ = static_cast<U*>(p);
    return absl::OkStatus();
  }
  U* get() const { return data_; }

 private:
  U* data_ = nullptr;
};

// Regions of one device allocation, 256-byte aligned.
class Arena {
 public:
  size_t Take(size_t count, size_t elem_bytes) {
    const size_t align = 256 / elem_bytes;
    const size_t offset = next_;
    next_ += (count + align - 1) / align * align;
    return offset;
  }
  size_t size() const { return next_; }

 private:
  size_t next_ = 0;
};

struct LayerActs {  // offsets into acts_ (T) and stats_ (float)
  size_t ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3;
  size_t ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, lse;
};

// Where a micro-batch's tensors live: offsets of the activations (elements, in acts_), their
// statistics (floats, in stats_) and the backward's activation gradients (elements, in
// grad_acts_), and each region's size. The allocation and CudaActivationBytes both read it.
struct ActivationPlan {
  std::vector<LayerActs> layers;
  size_t encoded = 0, lnf = 0, logits = 0;  // in acts_
  int logits_ld = 0;  // the logits' row pitch: the vocabulary rounded up to a multiple of 8
  size_t lnf_mean = 0, lnf_rstd = 0, losses = 0, delta = 0;  // in stats_
  size_t dres = 0, dc = 0, d3c = 0, d4c = 0;                 // in grad_acts_
  size_t acts = 0, stats = 0, grads = 0;                     // the regions' sizes, in elements
  size_t col_scratch = 0;  // floats of the column reductions' scratch (col_scratch_)
};

ActivationPlan PlanActivations(const ModelShape& s, size_t batch, size_t seq, size_t elem_bytes) {
  const size_t N = batch * seq;
  const size_t C = s.width, V = s.vocab;
  const size_t heads_rows = batch * s.heads * seq;
  ActivationPlan p;
  Arena a, f, g;
  p.encoded = a.Take(N * C, elem_bytes);
  for (int l = 0; l < s.layers; ++l) {
    LayerActs la;
    la.ln1 = a.Take(N * C, elem_bytes);
    la.qkv = a.Take(N * 3 * C, elem_bytes);
    la.atty = a.Take(N * C, elem_bytes);
    la.res2 = a.Take(N * C, elem_bytes);
    la.ln2 = a.Take(N * C, elem_bytes);
    la.fch = a.Take(N * 4 * C, elem_bytes);
    la.fch_gelu = a.Take(N * 4 * C, elem_bytes);
    la.res3 = a.Take(N * C, elem_bytes);
    la.ln1_mean = f.Take(N, 4);
    la.ln1_rstd = f.Take(N, 4);
    la.ln2_mean = f.Take(N, 4);
    la.ln2_rstd = f.Take(N, 4);
    la.lse = f.Take(heads_rows, 4);
    p.layers.push_back(la);
  }
  p.lnf = a.Take(N * C, elem_bytes);
  // Rows padded to a multiple of 8 elements, so each starts 16-byte aligned whatever the
  // vocabulary (GPT-2's 50257 included): the classifier's matmul and its two gradients run
  // cuBLASLt's aligned kernels. The padding is never read.
  p.logits_ld = static_cast<int>((V + 7) / 8 * 8);
  p.logits = a.Take(N * p.logits_ld, elem_bytes);
  p.lnf_mean = f.Take(N, 4);
  p.lnf_rstd = f.Take(N, 4);
  p.losses = f.Take(N, 4);
  p.delta = f.Take(heads_rows, 4);
  p.dres = g.Take(N * C, elem_bytes);
  p.dc = g.Take(N * C, elem_bytes);
  p.d3c = g.Take(N * 3 * C, elem_bytes);
  p.d4c = g.Take(N * 4 * C, elem_bytes);
  p.acts = a.size();
  p.stats = f.size();
  p.grads = g.size();
  p.col_scratch = ColumnReduceScratchFloats(static_cast<int>(N), 4 * s.width);
  return p;
}

// Why this device cannot run the flash kernels for `head_size` (a supported one); empty when
// it can. The one test both auto and an explicit choice apply.
std::string FlashRefusal(const cudaDeviceProp& prop, int head_size) {
  if (prop.major < 8) {
    return absl::StrCat("the flash kernels need bf16 tensor-core instructions (compute "
                        "capability 8.0 or later); ", prop.name, " is ", prop.major, ".",
                        prop.minor);
  }
  if (FlashAttentionSmemBytes(head_size) > prop.sharedMemPerBlockOptin) {
    return absl::StrCat("the flash kernels need ", FlashAttentionSmemBytes(head_size) >> 10,
                        " KiB of shared memory per block for head size ", head_size, "; ",
                        prop.name, " allows ", prop.sharedMemPerBlockOptin >> 10, " KiB");
  }
  return "";
}

template <typename T>
class CudaGpt final : public engine::ModelBackend {
 public:
  static constexpr bool kExact = std::is_same_v<T, float>;

  CudaGpt(const BackendConfig& config, const CudaBackendOptions& options)
      : config_(config),
        options_(options),
        layout_(engine::GptParameterLayout(config.shape)),
        offsets_(engine::GptParameterOffsets(config.shape)) {}

  ~CudaGpt() override {
    cudaSetDevice(options_.device);
    // An all-reduce still queued (a step that failed after starting it): wait for it through
    // the communicator, whose timeout aborts it if a peer is gone, rather than on the stream,
    // which could wait forever.
    if (reducing_ && options_.nccl != nullptr) options_.nccl->Synchronize(comm_stream_).IgnoreError();
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (comm_stream_ != nullptr) cudaStreamSynchronize(comm_stream_);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
  }

  absl::Status Init();

  std::string Describe() const override {
    if (kExact) return description_;
    if (!gelu_epilogue_) return absl::StrCat(description_, ", GELU: kernels");
    if (!gelu_fell_back_) return absl::StrCat(description_, ", GELU: matmul epilogues");
    return absl::StrCat(description_,
                        ", GELU: matmul epilogues, and kernels where cuBLASLt "
                        "had no epilogue algorithm for the shape");
  }
  const std::vector<ParamInfo>& Parameters() const override { return layout_; }
  size_t num_params() const override { return offsets_.total; }

  absl::Status InitRandom(uint64_t seed) override {
    std::vector<float> host(num_params());
    engine::InitGptParameters(host.data(), config_.shape, seed);
    return LoadState(host.data(), nullptr, nullptr, 0, /*zero_moments=*/true);
  }

  absl::Status ZeroGrad() override {
    FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
    RETURN_IF_ERROR(RefuseWhileReducing("ZeroGrad"));
    RETURN_IF_ERROR(ProfileBegin());
    FORGE_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
    RETURN_IF_ERROR(Mark("zero gradients", 0, static_cast<double>(grads_.bytes())));
    return ProfileEnd();
  }

  absl::StatusOr<double> ForwardBackward(const int32_t* tokens, const int32_t* targets, int B,
                                         int Tq, bool last_micro_batch) override;
  absl::Status ForwardLosses(const int32_t* tokens, const int32_t* targets, int B, int Tq,
                             float* losses) override;
  absl::Status FinishGradients() override;
  absl::StatusOr<double> OptimizerStep(float grad_scale, double max_norm, float lr) override;
  int64_t optimizer_step() const override { return adam_step_; }
  double PeakFlops() const override { return peak_flops_; }

  absl::Status CopyState(float* params, float* adam_m, float* adam_v) const override {
    FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
    for (auto [dst, src] : {std::pair{params, params_.get()}, std::pair{adam_m, m_.get()},
                            std::pair{adam_v, v_.get()}}) {
      if (dst != nullptr) {
        FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, num_params() * sizeof(float),
                                                   cudaMemcpyDeviceToHost, stream_));
      }
    }
    FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

  absl::Status CopyGradients(float* grads) const override {
    FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
    RETURN_IF_ERROR(RefuseWhileReducing("CopyGradients"));
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(grads, grads_.get(), grads_.bytes(),
                                               cudaMemcpyDeviceToHost, stream_));
    FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

  absl::Status LoadState(const float* params, const float* adam_m, const float* adam_v,
                         int64_t optimizer_step) override {
    return LoadState(params, adam_m, adam_v, optimizer_step, /*zero_moments=*/false);
  }

 private:
  // The profile's calls (options_.profile), none without one.
  absl::Status ProfileBegin() {
    return options_.profile == nullptr ? absl::OkStatus() : options_.profile->Begin(stream_);
  }
  absl::Status Mark(const char* op, double flops = 0, double bytes = 0) {
    return options_.profile == nullptr ? absl::OkStatus()
                                       : options_.profile->Mark(op, stream_, flops, bytes);
  }
  absl::Status ProfileEnd() {
    return options_.profile == nullptr ? absl::OkStatus() : options_.profile->End();
  }
  // NCCL sums the gradients in place on comm_stream_ from the last micro-batch's backward
  // until FinishGradients orders stream_ after it: nothing may read or write them meanwhile.
  absl::Status RefuseWhileReducing(absl::string_view call) const {
    if (!reducing_) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("cuda backend: ", call,
                     " before FinishGradients: the gradients are still being summed across ranks"));
  }
  absl::Status LoadState(const float* params, const float* adam_m, const float* adam_v,
                         int64_t optimizer_step, bool zero_moments);
  // Checks shapes and ids, uploads tokens and targets, runs the forward pass; with
  // `backward`, the cross-entropy also leaves dLoss/dlogits in the logits buffer. Returns the
  // number of counted targets.
  absl::StatusOr<int> Forward(const int32_t* tokens, const int32_t* targets, int B, int Tq,
                              bool backward);
  absl::Status Backward(int B, int Tq, bool reduce);
  // Sorts the batch's positions by token for the embedding backward (deterministic sums).
  absl::Status UploadEmbeddingBuckets(const int32_t* tokens, int N);
  // Starts the all-reduce of grads[offset, offset + count) once the compute stream is past
  // this point.
  absl::Status ReduceAsync(size_t offset, size_t count);
  absl::Status SumLosses(int N, double* sum);

  T* W(size_t offset) const { return (kExact ? reinterpret_cast<T*>(params_.get()) : lowp_.get()) + offset; }
  float* P(size_t offset) const { return params_.get() + offset; }
  float* G(size_t offset) const { return grads_.get() + offset; }
  T* A(size_t offset) const { return acts_.get() + offset; }
  float* S(size_t offset) const { return stats_.get() + offset; }
  T* LayerInput(int l) const { return l == 0 ? A(plan_.encoded) : A(plan_.layers[l - 1].res3); }
  static cudaDataType_t Type() { return kExact ? CUDA_R_32F : CUDA_R_16BF; }
  // Causal attention's nominal forward FLOPs (its two products over the lower triangle).
  double AttentionFlops(int B, int Tq) const {
    return 2.0 * B * Tq * static_cast<double>(Tq) * config_.shape.width;
  }

  // out = inp · weight (+ bias) (+ residual); with `gelu_pre`, out = gelu(that) and gelu_pre
  // the pre-activation (UNIMPLEMENTED when cuBLASLt has no such epilogue for the shape).
  // `out_ld` (0: N) is out's row pitch (gemm_layout.h).
  absl::Status Dense(T* out, const T* inp, const T* weight, WeightLayout layout, const T* bias,
                     const T* residual, int M, int K, int N, T* gelu_pre = nullptr,
                     int out_ld = 0) {
    const GemmCall g = engine::ForwardGemm(layout, M, K, N, out_ld);
    GemmOperands ops;
    ops.a = weight;
    ops.b = inp;
    ops.d = out;
    ops.bias = bias;
    if (residual != nullptr) {
      ops.c = residual;
      ops.beta = 1.0f;
    }
    if (gelu_pre != nullptr) {
      ops.gelu = GemmGelu::kForward;
      ops.aux = gelu_pre;
    }
    return matmul_->Run(g, Type(), Type(), ops, stream_);
  }

  // The MLP's first layer and its GELU: fch = ln2 · fc_w + fc_b, fch_gelu = gelu(fch), in one
  // matmul where the epilogue allows.
  absl::Status MlpUp(const LayerActs& a, const GptLayerOffsets& w, int N) {
    const int C = config_.shape.width;
    if (gelu_epilogue_) {
      const absl::Status s = Dense(A(a.fch_gelu), A(a.ln2), W(w.fc_w), WeightLayout::kInOut,
                                   W(w.fc_b), nullptr, N, C, 4 * C, A(a.fch));
      if (!absl::IsUnimplemented(s)) return s;
      gelu_fell_back_ = true;
    }
    RETURN_IF_ERROR(Dense(A(a.fch), A(a.ln2), W(w.fc_w), WeightLayout::kInOut, W(w.fc_b), nullptr,
                          N, C, 4 * C));
    FORGE_CUDA_RETURN_IF_ERROR(
        GeluForward<T>(A(a.fch_gelu), A(a.fch), static_cast<size_t>(N) * 4 * C, stream_));
    return absl::OkStatus();
  }

  // The attention Init chose (attention_), forward and backward.
  absl::Status AttentionForwardAny(T* y, float* lse, const T* qkv, int B, int Tq) {
    const int C = config_.shape.width, H = config_.shape.heads;
    if (attention_ == CudaAttention::kGemm) {
      return gemm_attention_->Forward(y, lse, qkv, B, Tq, C, H, stream_);
    }
    if constexpr (!kExact) {
      if (attention_ == CudaAttention::kFlash) {
        FORGE_CUDA_RETURN_IF_ERROR(FlashAttentionForward(y, lse, qkv, B, Tq, C, H, stream_));
        return absl::OkStatus();
      }
    }
    FORGE_CUDA_RETURN_IF_ERROR(AttentionForward<T>(y, lse, qkv, B, Tq, C, H, stream_));
    return absl::OkStatus();
  }
  absl::Status AttentionBackwardAny(T* dqkv, const T* dy, const T* qkv, const T* y,
                                    const float* lse, int B, int Tq) {
    const int C = config_.shape.width, H = config_.shape.heads;
    if (attention_ == CudaAttention::kGemm) {
      return gemm_attention_->Backward(dqkv, S(plan_.delta), dy, qkv, y, lse, B, Tq, C, H, stream_);
    }
    if constexpr (!kExact) {
      if (attention_ == CudaAttention::kFlash) {
        FORGE_CUDA_RETURN_IF_ERROR(
            FlashAttentionBackward(dqkv, S(plan_.delta), dy, qkv, y, lse, B, Tq, C, H, stream_));
        return absl::OkStatus();
      }
    }
    FORGE_CUDA_RETURN_IF_ERROR(
        AttentionBackward<T>(dqkv, S(plan_.delta), dy, qkv, y, lse, B, Tq, C, H, stream_));
    return absl::OkStatus();
  }

  // dinp = dout · weight^T; with `gelu_pre` (the input was gelu(gelu_pre)), dinp is the
  // gradient of gelu_pre instead: times gelu'(gelu_pre), in the epilogue where it allows.
  // `out_ld` (0: N) is dout's row pitch; the bias gradient needs unpadded rows. The profile
  // sees the two products as `op` and the bias gradient as "bias gradient".
  absl::Status DenseBackward(const char* op, T* dinp, float* dweight, float* dbias, const T* dout,
                             const T* inp, const T* weight, WeightLayout layout, int M, int K,
                             int N, const T* gelu_pre = nullptr, int out_ld = 0) {
    if (dbias != nullptr && out_ld != 0 && out_ld != N) {
      return absl::InternalError("cuda backend: a bias gradient of padded rows");
    }
    auto pick = [&](GemmOperand o) -> const void* {
      return o == GemmOperand::kWeight ? static_cast<const void*>(weight)
             : o == GemmOperand::kInput ? static_cast<const void*>(inp)
                                        : static_cast<const void*>(dout);
    };
    if (dinp != nullptr) {
      const GemmCall g = engine::InputGradGemm(layout, M, K, N, out_ld);
      GemmOperands ops;
      ops.a = pick(g.a);
      ops.b = pick(g.b);
      ops.d = dinp;
      bool gelu_done = false;
      if (gelu_pre != nullptr && gelu_epilogue_) {
        GemmOperands fused = ops;
        fused.gelu = GemmGelu::kBackward;
        fused.aux = const_cast<T*>(gelu_pre);  // read only, in the backward epilogue
        const absl::Status s = matmul_->Run(g, Type(), Type(), fused, stream_);
        if (!s.ok() && !absl::IsUnimplemented(s)) return s;
        gelu_done = s.ok();
        if (!gelu_done) gelu_fell_back_ = true;
      }
      if (!gelu_done) {
        RETURN_IF_ERROR(matmul_->Run(g, Type(), Type(), ops, stream_));
        if (gelu_pre != nullptr) {
          FORGE_CUDA_RETURN_IF_ERROR(
              GeluBackward<T>(dinp, gelu_pre, dinp, static_cast<size_t>(M) * K, stream_));
        }
      }
    }
    const GemmCall g = engine::WeightGradGemm(layout, M, K, N, out_ld);
    GemmOperands ops;
    ops.a = pick(g.a);
    ops.b = pick(g.b);
    ops.c = dweight;
    ops.d = dweight;
    ops.beta = 1.0f;  // gradients accumulate over micro-batches
    RETURN_IF_ERROR(matmul_->Run(g, Type(), CUDA_R_32F, ops, stream_));
    // Nominal FLOPs of the two products (input and weight gradients).
    RETURN_IF_ERROR(Mark(op, 4.0 * M * K * N));
    if (dbias != nullptr) {
      FORGE_CUDA_RETURN_IF_ERROR(BiasGrad<T>(dbias, col_scratch_.get(), dout, M, N, stream_));
      RETURN_IF_ERROR(Mark("bias gradient", 0, nominal_bytes::BiasGradient(M, N, sizeof(T))));
    }
    return absl::OkStatus();
  }

  const BackendConfig config_;
  const CudaBackendOptions options_;
  const std::vector<ParamInfo> layout_;
  const GptOffsets offsets_;
  // The parameter buffer in spans of consecutive tensors that share a weight decay (AdamW).
  std::vector<DecaySpan> decay_spans_;
  std::string description_;

  cudaStream_t stream_ = nullptr;       // everything but the gradient all-reduce
  cudaStream_t comm_stream_ = nullptr;  // NCCL
  std::vector<cudaEvent_t> events_;     // one per all-reduce started in a backward
  std::unique_ptr<Matmul> matmul_;
  CudaAttention attention_ = CudaAttention::kFused;   // what Init chose (never kAuto)
  std::unique_ptr<GemmAttention<T>> gemm_attention_;  // set when attention_ is kGemm

  DeviceBuffer<float> params_, grads_, m_, v_;
  DeviceBuffer<T> lowp_;  // bf16 weights for the matmuls (unused in exact mode)
  DeviceBuffer<T> acts_, grad_acts_;
  DeviceBuffer<float> stats_, col_scratch_, norm_;  // norm_: [norm, clip factor]
  DeviceBuffer<double> norm_scratch_;
  DeviceBuffer<int32_t> tokens_, targets_, order_, bucket_start_, bucket_token_;
  PinnedBuffer<int32_t> host_tokens_, host_targets_, host_order_, host_start_, host_bucket_;
  PinnedBuffer<float> host_losses_, host_norm_;

  ActivationPlan plan_;  // offsets into acts_, stats_ and grad_acts_
  int buckets_ = 0;
  size_t reduce_calls_ = 0;  // all-reduces started by this backward (picks their events)
  int64_t adam_step_ = 0;
  double peak_flops_ = 0;  // PeakFlops(), from the device's name
  bool reducing_ = false;  // an all-reduce was started and FinishGradients has not waited
  const bool gelu_epilogue_ = !kExact && options_.gelu_epilogue;
  bool gelu_fell_back_ = false;  // a product ran with the GELU kernels (no epilogue algorithm)
};

template <typename T>
absl::Status CudaGpt<T>::Init() {
  const ModelShape& s = config_.shape;
  if (config_.world_size > 1) {
    if (options_.nccl == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "world_size ", config_.world_size, " on the cuda backend needs an NCCL communicator"));
    }
    if (options_.nccl->rank() != config_.rank ||
        options_.nccl->world_size() != config_.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the NCCL communicator is rank ", options_.nccl->rank(), " of ",
          options_.nccl->world_size(), " but the backend is rank ", config_.rank, " of ",
          config_.world_size));
    }
  }
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  cudaDeviceProp prop{};
  FORGE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options_.device));

  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  // The all-reduce stream gets the highest priority, so its kernels are scheduled ahead of the
  // backward's when both are ready.
  int least = 0, greatest = 0;
  FORGE_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  FORGE_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
  ASSIGN_OR_RETURN(matmul_, Matmul::Create());

  const size_t n = num_params();
  ASSIGN_OR_RETURN(params_, DeviceBuffer<float>::Allocate(n, "parameters"));
  ASSIGN_OR_RETURN(grads_, DeviceBuffer<float>::Allocate(n, "gradients"));
  ASSIGN_OR_RETURN(m_, DeviceBuffer<float>::Allocate(n, "AdamW first moments"));
  ASSIGN_OR_RETURN(v_, DeviceBuffer<float>::Allocate(n, "AdamW second moments"));
  if (!kExact) {
    ASSIGN_OR_RETURN(lowp_, DeviceBuffer<T>::Allocate(n, "bf16 weights"));
  }

  const size_t N = static_cast<size_t>(config_.max_batch) * config_.max_seq;
  plan_ = PlanActivations(s, config_.max_batch, config_.max_seq, sizeof(T));
  ASSIGN_OR_RETURN(acts_, DeviceBuffer<T>::Allocate(plan_.acts, "activations"));
  ASSIGN_OR_RETURN(stats_, DeviceBuffer<float>::Allocate(plan_.stats, "activation statistics"));
  ASSIGN_OR_RETURN(grad_acts_, DeviceBuffer<T>::Allocate(plan_.grads, "activation gradients"));
  ASSIGN_OR_RETURN(col_scratch_,
                   DeviceBuffer<float>::Allocate(plan_.col_scratch, "reduction scratch"));
  ASSIGN_OR_RETURN(norm_scratch_,
                   DeviceBuffer<double>::Allocate(GradNormScratchDoubles(n), "norm scratch"));
  ASSIGN_OR_RETURN(norm_, DeviceBuffer<float>::Allocate(2, "gradient norm"));
  for (auto* b : {&tokens_, &targets_, &order_, &bucket_token_}) {
    ASSIGN_OR_RETURN(*b, DeviceBuffer<int32_t>::Allocate(N, "token ids"));
  }
  ASSIGN_OR_RETURN(bucket_start_, DeviceBuffer<int32_t>::Allocate(N + 1, "token buckets"));
  for (auto* b : {&host_tokens_, &host_targets_, &host_order_, &host_bucket_}) {
    RETURN_IF_ERROR(b->Allocate(N));
  }
  RETURN_IF_ERROR(host_start_.Allocate(N + 1));
  RETURN_IF_ERROR(host_losses_.Allocate(N));
  RETURN_IF_ERROR(host_norm_.Allocate(2));
  // Events: one per layer, the final norm and the embeddings.
  events_.resize(s.layers + 3);
  for (cudaEvent_t& e : events_) {
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  size_t end = 0;
  for (const ParamInfo& p : layout_) {
    if (p.offset != end) {
      return absl::InternalError(absl::StrCat("cuda backend: parameter ", p.name, " at ", p.offset,
                                              ", not right after the one before (", end, ")"));
    }
    end = p.offset + p.count;
    const float wd = engine::IsDecayed(p) ? config_.adamw.weight_decay : 0.0f;
    if (decay_spans_.empty() || decay_spans_.back().weight_decay != wd) {
      decay_spans_.push_back({p.offset, wd});
    }
  }
  if (end != num_params()) {
    return absl::InternalError(absl::StrCat("cuda backend: the parameters end at ", end,
                                            ", not at the buffer's end (", num_params(), ")"));
  }
  // Attention. Auto: flash (tensor cores, fused) in bf16 where the head size allows, else the
  // GEMMs when their scores fit, else the fused CUDA-core kernels. The GEMM attention's scratch
  // comes last, so that a device without room for it falls back rather than failing.
  const int head_size = s.width / s.heads;
  const size_t gemm_scratch = GemmAttention<T>::ScratchBytes(s.heads, config_.max_seq);
  attention_ = options_.attention;
  if (attention_ == CudaAttention::kAuto) {
    size_t free_bytes = 0, total_bytes = 0;
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (!kExact && FlashAttentionHeadSizeSupported(head_size) &&
        FlashRefusal(prop, head_size).empty()) {
      attention_ = CudaAttention::kFlash;
    } else if (gemm_scratch <= GemmAttentionBudget(prop.totalGlobalMem) &&
               gemm_scratch <= free_bytes / 2) {  // cuBLASLt, NCCL and others need room too
      attention_ = CudaAttention::kGemm;
    } else {
      attention_ = CudaAttention::kFused;
    }
  }
  if (attention_ == CudaAttention::kFlash) {
    if (std::string why = FlashRefusal(prop, head_size); !why.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention: ", why, ": use the GEMM or fused attention"));
    }
  }
  if (attention_ == CudaAttention::kFused && !AttentionHeadSizeSupported(head_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: head size ", head_size, " needs the GEMM attention, whose [H, T, T] "
        "scores (", gemm_scratch >> 20, " MiB) do not fit this device's budget; the fused "
        "kernels support head sizes 16, 32, 64 and 128: change width or heads, or shorten "
        "the context"));
  }
  if (attention_ == CudaAttention::kGemm) {
    ASSIGN_OR_RETURN(gemm_attention_,
                     GemmAttention<T>::Create(matmul_.get(), s.heads, config_.max_seq));
  }
  std::string attention;
  switch (attention_) {
    case CudaAttention::kFlash: attention = "flash (tensor cores, fused)"; break;
    case CudaAttention::kGemm:
      attention = absl::StrFormat("%s (%.0f MiB of scores)",
                                  kExact ? "fp32 GEMMs" : "tensor-core GEMMs",
                                  gemm_scratch / (1024.0 * 1024));
      break;
    default: attention = "fused kernels"; break;
  }
  // The peaks table lists dense bf16; fp32 without TF32 runs far below it.
  peak_flops_ = kExact ? 0 : DevicePeaks(prop.name).tflops * 1e12;
  description_ = absl::StrFormat(
      "cuda:%d %s (%.1f GiB, sm_%d%d), %s, attention: %s", options_.device, prop.name,
      prop.totalGlobalMem / (1024.0 * 1024 * 1024), prop.major, prop.minor,
      kExact ? "fp32" : "bf16 with fp32 master weights", attention);
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaGpt<T>::LoadState(const float* params, const float* adam_m, const float* adam_v,
                                   int64_t optimizer_step, bool zero_moments) {
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  const size_t bytes = num_params() * sizeof(float);
  for (auto [dst, src] : {std::pair{params_.get(), params}, std::pair{m_.get(), adam_m},
                          std::pair{v_.get(), adam_v}}) {
    if (src != nullptr) {
      FORGE_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    }
  }
  if (zero_moments) {
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(m_.get(), 0, bytes, stream_));
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v_.get(), 0, bytes, stream_));
  }
  if (!kExact && params != nullptr) {
    FORGE_CUDA_RETURN_IF_ERROR(CastFromFloat<T>(lowp_.get(), params_.get(), num_params(), stream_));
  }
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  adam_step_ = optimizer_step;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaGpt<T>::UploadEmbeddingBuckets(const int32_t* tokens, int N) {
  int32_t* order = host_order_.get();
  std::iota(order, order + N, 0);
  std::stable_sort(order, order + N, [&](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
  buckets_ = 0;
  for (int p = 0; p < N; ++p) {
    if (p == 0 || tokens[order[p]] != tokens[order[p - 1]]) {
      host_start_.get()[buckets_] = p;
      host_bucket_.get()[buckets_] = tokens[order[p]];
      ++buckets_;
    }
  }
  host_start_.get()[buckets_] = N;
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(order_.get(), order, N * sizeof(int32_t),
                                             cudaMemcpyHostToDevice, stream_));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bucket_start_.get(), host_start_.get(),
                                             (buckets_ + 1) * sizeof(int32_t),
                                             cudaMemcpyHostToDevice, stream_));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bucket_token_.get(), host_bucket_.get(),
                                             buckets_ * sizeof(int32_t), cudaMemcpyHostToDevice,
                                             stream_));
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<int> CudaGpt<T>::Forward(const int32_t* tokens, const int32_t* targets, int B,
                                        int Tq, bool backward) {
  if (B < 1 || B > config_.max_batch || Tq < 1 || Tq > config_.max_seq) {
    return absl::InvalidArgumentError(absl::StrCat("model: batch ", B, " x ", Tq,
                                                   " is outside the allocated ", config_.max_batch,
                                                   " x ", config_.max_seq));
  }
  const ModelShape& s = config_.shape;
  const int N = B * Tq, C = s.width, V = s.vocab;
  int count = 0;
  for (int n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: token ", tokens[n], " at position ", n, " is outside [0, ", V, ")"));
    }
    if (targets[n] >= V) {
      return absl::InvalidArgumentError(absl::StrCat("model: target ", targets[n], " at position ",
                                                     n, " is outside [0, ", V, ")"));
    }
    if (targets[n] >= 0) ++count;
  }
  // The pinned copies may still feed an earlier call's transfers (one that returned an error
  // after queueing them): wait for the stream before overwriting them.
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  std::memcpy(host_tokens_.get(), tokens, N * sizeof(int32_t));
  std::memcpy(host_targets_.get(), targets, N * sizeof(int32_t));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens_.get(), host_tokens_.get(), N * sizeof(int32_t),
                                             cudaMemcpyHostToDevice, stream_));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(targets_.get(), host_targets_.get(),
                                             N * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(Mark("upload tokens"));

  // For the profile: nominal FLOPs of the products, bytes of the memory-bound kernels.
  const double nc = static_cast<double>(N) * C, tb = sizeof(T);
  const double layernorm_bytes = nominal_bytes::LayerNorm(N, C, tb);
  FORGE_CUDA_RETURN_IF_ERROR(EmbeddingForward<T>(A(plan_.encoded), tokens_.get(), P(offsets_.wte),
                                                 P(offsets_.wpe), B, Tq, C, stream_));
  RETURN_IF_ERROR(Mark("embedding", 0, nominal_bytes::Embedding(N, Tq, C, tb)));
  for (int l = 0; l < s.layers; ++l) {
    const GptLayerOffsets& w = offsets_.layers[l];
    const LayerActs& a = plan_.layers[l];
    const T* x = LayerInput(l);
    FORGE_CUDA_RETURN_IF_ERROR(LayerNormForward<T>(A(a.ln1), S(a.ln1_mean), S(a.ln1_rstd), x,
                                                   P(w.ln1_w), P(w.ln1_b), N, C, stream_));
    RETURN_IF_ERROR(Mark("layernorm", 0, layernorm_bytes));
    RETURN_IF_ERROR(Dense(A(a.qkv), A(a.ln1), W(w.qkv_w), WeightLayout::kInOut, W(w.qkv_b),
                          nullptr, N, C, 3 * C));
    RETURN_IF_ERROR(Mark("matmul qkv", 2 * nc * 3 * C));
    RETURN_IF_ERROR(AttentionForwardAny(A(a.atty), S(a.lse), A(a.qkv), B, Tq));
    RETURN_IF_ERROR(Mark("attention", AttentionFlops(B, Tq)));
    RETURN_IF_ERROR(Dense(A(a.res2), A(a.atty), W(w.attn_proj_w), WeightLayout::kInOut,
                          W(w.attn_proj_b), x, N, C, C));
    RETURN_IF_ERROR(Mark("matmul attention projection", 2 * nc * C));
    FORGE_CUDA_RETURN_IF_ERROR(LayerNormForward<T>(A(a.ln2), S(a.ln2_mean), S(a.ln2_rstd),
                                                   A(a.res2), P(w.ln2_w), P(w.ln2_b), N, C,
                                                   stream_));
    RETURN_IF_ERROR(Mark("layernorm", 0, layernorm_bytes));
    RETURN_IF_ERROR(MlpUp(a, w, N));
    RETURN_IF_ERROR(Mark("matmul fc + gelu", 2 * nc * 4 * C));
    RETURN_IF_ERROR(Dense(A(a.res3), A(a.fch_gelu), W(w.fc_proj_w), WeightLayout::kInOut,
                          W(w.fc_proj_b), A(a.res2), N, 4 * C, C));
    RETURN_IF_ERROR(Mark("matmul fc projection", 2 * nc * 4 * C));
  }
  FORGE_CUDA_RETURN_IF_ERROR(LayerNormForward<T>(A(plan_.lnf), S(plan_.lnf_mean), S(plan_.lnf_rstd),
                                                 LayerInput(s.layers), P(offsets_.lnf_w),
                                                 P(offsets_.lnf_b), N, C, stream_));
  RETURN_IF_ERROR(Mark("layernorm", 0, layernorm_bytes));
  RETURN_IF_ERROR(Dense(A(plan_.logits), A(plan_.lnf), W(offsets_.wte), WeightLayout::kOutIn,
                        nullptr, nullptr, N, C, V, nullptr, plan_.logits_ld));
  RETURN_IF_ERROR(Mark("matmul logits", 2 * nc * V));
  const float scale = count == 0 ? 0.0f : 1.0f / static_cast<float>(count);
  FORGE_CUDA_RETURN_IF_ERROR(CrossEntropy<T>(S(plan_.losses), backward ? A(plan_.logits) : nullptr,
                                             A(plan_.logits), targets_.get(), scale, N, V,
                                             plan_.logits_ld, stream_));
  RETURN_IF_ERROR(Mark("cross-entropy", 0, nominal_bytes::CrossEntropy(N, V, tb, backward)));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_losses_.get(), S(plan_.losses), N * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  RETURN_IF_ERROR(Mark("download losses"));
  return count;
}

template <typename T>
absl::Status CudaGpt<T>::ReduceAsync(size_t offset, size_t count) {
  cudaEvent_t e = events_[std::min<size_t>(events_.size() - 1, reduce_calls_++)];
  FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(e, stream_));
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(comm_stream_, e, 0));
  reducing_ = true;
  return options_.nccl->AllReduceSumAsync(G(offset), count, comm_stream_);
}

template <typename T>
absl::Status CudaGpt<T>::Backward(int B, int Tq, bool reduce) {
  const ModelShape& s = config_.shape;
  const int N = B * Tq, C = s.width, V = s.vocab;
  T* dres = grad_acts_.get() + plan_.dres;
  T* dc = grad_acts_.get() + plan_.dc;
  T* d3c = grad_acts_.get() + plan_.d3c;
  T* d4c = grad_acts_.get() + plan_.d4c;
  reduce_calls_ = 0;

  const double tb = sizeof(T);  // for the profile's bytes
  const double layernorm_bytes = nominal_bytes::LayerNormBackward(N, C, tb);
  // plan_.logits holds dLoss/dlogits (the fused cross-entropy).
  RETURN_IF_ERROR(DenseBackward("matmul logits backward", dc, G(offsets_.wte), nullptr,
                                A(plan_.logits), A(plan_.lnf), W(offsets_.wte),
                                WeightLayout::kOutIn, N, C, V, nullptr, plan_.logits_ld));
  FORGE_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(dres, 0, static_cast<size_t>(N) * C * sizeof(T), stream_));
  FORGE_CUDA_RETURN_IF_ERROR(LayerNormBackward<T>(
      dres, G(offsets_.lnf_w), G(offsets_.lnf_b), col_scratch_.get(), dc, LayerInput(s.layers),
      P(offsets_.lnf_w), S(plan_.lnf_mean), S(plan_.lnf_rstd), N, C, stream_));
  RETURN_IF_ERROR(Mark("layernorm backward", 0, layernorm_bytes));
  if (reduce) RETURN_IF_ERROR(ReduceAsync(offsets_.lnf_w, num_params() - offsets_.lnf_w));
  for (int l = s.layers - 1; l >= 0; --l) {
    const GptLayerOffsets& w = offsets_.layers[l];
    const LayerActs& a = plan_.layers[l];
    // d4c: the gradient of the GELU's input (fch).
    RETURN_IF_ERROR(DenseBackward("matmul fc projection backward + gelu", d4c, G(w.fc_proj_w),
                                  G(w.fc_proj_b), dres, A(a.fch_gelu), W(w.fc_proj_w),
                                  WeightLayout::kInOut, N, 4 * C, C, A(a.fch)));
    RETURN_IF_ERROR(DenseBackward("matmul fc backward", dc, G(w.fc_w), G(w.fc_b), d4c, A(a.ln2),
                                  W(w.fc_w), WeightLayout::kInOut, N, C, 4 * C));
    FORGE_CUDA_RETURN_IF_ERROR(LayerNormBackward<T>(dres, G(w.ln2_w), G(w.ln2_b),
                                                    col_scratch_.get(), dc, A(a.res2), P(w.ln2_w),
                                                    S(a.ln2_mean), S(a.ln2_rstd), N, C, stream_));
    RETURN_IF_ERROR(Mark("layernorm backward", 0, layernorm_bytes));
    RETURN_IF_ERROR(DenseBackward("matmul attention projection backward", dc, G(w.attn_proj_w),
                                  G(w.attn_proj_b), dres, A(a.atty), W(w.attn_proj_w),
                                  WeightLayout::kInOut, N, C, C));
    RETURN_IF_ERROR(AttentionBackwardAny(d3c, dc, A(a.qkv), A(a.atty), S(a.lse), B, Tq));
    // Five products of the forward's two shapes (S and dP recomputed, dQ, dK, dV).
    RETURN_IF_ERROR(Mark("attention backward", 2.5 * AttentionFlops(B, Tq)));
    RETURN_IF_ERROR(DenseBackward("matmul qkv backward", dc, G(w.qkv_w), G(w.qkv_b), d3c, A(a.ln1),
                                  W(w.qkv_w), WeightLayout::kInOut, N, C, 3 * C));
    FORGE_CUDA_RETURN_IF_ERROR(LayerNormBackward<T>(dres, G(w.ln1_w), G(w.ln1_b),
                                                    col_scratch_.get(), dc, LayerInput(l),
                                                    P(w.ln1_w), S(a.ln1_mean), S(a.ln1_rstd), N, C,
                                                    stream_));
    RETURN_IF_ERROR(Mark("layernorm backward", 0, layernorm_bytes));
    // Every gradient of layer l is final: reduce it while the layers below run.
    if (reduce) {
      RETURN_IF_ERROR(ReduceAsync(w.ln1_w, w.fc_proj_b + C - w.ln1_w));
    }
  }
  FORGE_CUDA_RETURN_IF_ERROR(EmbeddingBackwardWte<T>(G(offsets_.wte), dres, order_.get(),
                                                     bucket_start_.get(), bucket_token_.get(),
                                                     buckets_, C, stream_));
  FORGE_CUDA_RETURN_IF_ERROR(EmbeddingBackwardWpe<T>(G(offsets_.wpe), dres, B, Tq, C, stream_));
  RETURN_IF_ERROR(Mark("embedding backward", 0, nominal_bytes::EmbeddingBackward(N, Tq, C, tb)));
  if (reduce) RETURN_IF_ERROR(ReduceAsync(offsets_.wte, offsets_.layers[0].ln1_w - offsets_.wte));
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaGpt<T>::SumLosses(int N, double* sum) {
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  double total = 0;  // in order, in double: the CPU engine's rule
  for (int n = 0; n < N; ++n) total += host_losses_.get()[n];
  *sum = total;
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<double> CudaGpt<T>::ForwardBackward(const int32_t* tokens, const int32_t* targets,
                                                   int B, int Tq, bool last_micro_batch) {
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  RETURN_IF_ERROR(RefuseWhileReducing("ForwardBackward"));
  RETURN_IF_ERROR(ProfileBegin());
  ASSIGN_OR_RETURN(const int count, Forward(tokens, targets, B, Tq, /*backward=*/true));
  // Sorted on the host while the GPU runs the forward just queued (the embedding backward, at
  // the end of the backward, is the first to read them).
  RETURN_IF_ERROR(UploadEmbeddingBuckets(host_tokens_.get(), B * Tq));
  RETURN_IF_ERROR(Mark("upload embedding buckets"));
  const bool reduce = last_micro_batch && config_.world_size > 1;
  RETURN_IF_ERROR(Backward(B, Tq, reduce));
  double sum = 0;
  RETURN_IF_ERROR(SumLosses(B * Tq, &sum));
  RETURN_IF_ERROR(ProfileEnd());
  return count == 0 ? 0.0 : sum / count;
}

template <typename T>
absl::Status CudaGpt<T>::ForwardLosses(const int32_t* tokens, const int32_t* targets, int B,
                                       int Tq, float* losses) {
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  RETURN_IF_ERROR(ProfileBegin());
  RETURN_IF_ERROR(Forward(tokens, targets, B, Tq, /*backward=*/false).status());
  RETURN_IF_ERROR(ProfileEnd());
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  std::memcpy(losses, host_losses_.get(), static_cast<size_t>(B) * Tq * sizeof(float));
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaGpt<T>::FinishGradients() {
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  if (config_.world_size == 1) return absl::OkStatus();
  if (!reducing_) {
    return absl::FailedPreconditionError(
        "cuda backend: FinishGradients needs a ForwardBackward with last_micro_batch = true");
  }
  reducing_ = false;
  // Profiled: from here to the end of the all-reduce, the part the backward did not hide.
  RETURN_IF_ERROR(ProfileBegin());
  RETURN_IF_ERROR(options_.nccl->Synchronize(comm_stream_));
  cudaEvent_t done = events_.back();
  FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(done, comm_stream_));
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, done, 0));
  RETURN_IF_ERROR(Mark("gradient all-reduce (not overlapped)"));
  return ProfileEnd();
}

template <typename T>
absl::StatusOr<double> CudaGpt<T>::OptimizerStep(float grad_scale, double max_norm, float lr) {
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  RETURN_IF_ERROR(RefuseWhileReducing("OptimizerStep"));
  RETURN_IF_ERROR(ProfileBegin());
  FORGE_CUDA_RETURN_IF_ERROR(GradNorm(norm_.get(), norm_scratch_.get(), grads_.get(),
                                      num_params(), grad_scale, static_cast<float>(max_norm),
                                      stream_));
  RETURN_IF_ERROR(Mark("gradient norm", 0, nominal_bytes::GradientNorm(num_params())));
  ++adam_step_;
  const engine::AdamWOptions& o = config_.adamw;
  const float c1 =
      1.0f / (1.0f - static_cast<float>(std::pow(double{o.beta1}, double(adam_step_))));
  const float c2 =
      1.0f / (1.0f - static_cast<float>(std::pow(double{o.beta2}, double(adam_step_))));
  FORGE_CUDA_RETURN_IF_ERROR(
      AdamWUpdateSpans<T>(P(0), kExact ? nullptr : lowp_.get(), G(0), m_.get(), v_.get(),
                          num_params(), decay_spans_.data(), static_cast<int>(decay_spans_.size()),
                          norm_.get() + 1, lr, o.beta1, o.beta2, o.eps, c1, c2, stream_));
  RETURN_IF_ERROR(
      Mark("adamw", 0, nominal_bytes::AdamW(num_params(), kExact ? 0.0 : double{sizeof(T)})));
  FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_norm_.get(), norm_.get(), 2 * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  RETURN_IF_ERROR(ProfileEnd());
  FORGE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return static_cast<double>(host_norm_.get()[0]);
}

template <typename T>
absl::StatusOr<std::unique_ptr<engine::ModelBackend>> Build(const BackendConfig& config,
                                                           const CudaBackendOptions& options) {
  auto backend = std::make_unique<CudaGpt<T>>(config, options);
  RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<engine::ModelBackend>(std::move(backend));
}

}  // namespace

absl::StatusOr<std::unique_ptr<engine::ModelBackend>> CreateCudaBackend(
    const BackendConfig& config, const CudaBackendOptions& options) {
  const ModelShape& s = config.shape;
  if (s.layers < 1 || s.heads < 1 || s.width < 1 || s.context < 1 || s.vocab < 1 ||
      s.width % s.heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: every field must be >= 1 and heads must divide width (layers=", s.layers,
        " heads=", s.heads, " width=", s.width, " context=", s.context, " vocab=", s.vocab, ")"));
  }
  if (s.width % kCudaWidthMultiple != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model shape: the cuda backend needs a width that is a multiple of ",
                     kCudaWidthMultiple, " (got ", s.width,
                     "; cuBLASLt reads the bias vectors 16-byte aligned, and each starts at "
                     "a multiple of width in the parameter buffer): train this model with "
                     "resources.device: cpu"));
  }
  if (options.attention == CudaAttention::kFlash &&
      (!options.bf16 || !FlashAttentionHeadSizeSupported(s.width / s.heads))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: the flash kernels run in bf16 with head sizes 16, 32, 64 and 128 (this "
        "backend is ", options.bf16 ? "bf16" : "fp32", ", head size ", s.width / s.heads,
        "): use the GEMM or fused attention"));
  }
  if (options.attention == CudaAttention::kFused &&
      !AttentionHeadSizeSupported(s.width / s.heads)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: the fused attention kernels support head sizes 16, 32, 64 and 128; "
        "width / heads is ", s.width / s.heads, ": change width or heads, or use the GEMM "
        "attention"));
  }
  if (config.max_batch < 1 || config.max_seq < 1 || config.max_seq > s.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: need max_batch >= 1 and 1 <= max_seq <= context (", s.context,
                     "); got max_batch=", config.max_batch, " max_seq=", config.max_seq));
  }
  if (config.max_batch > CudaMaxMicroBatch(s.heads)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the cuda backend's attention handles at most ", kCudaMaxSequenceHeads,
        " (sequence, head) pairs per micro-batch; got ", config.max_batch, " x ", s.heads,
        ": use a micro-batch (train.micro_batch) of at most ", CudaMaxMicroBatch(s.heads)));
  }
  const int devices = CudaDeviceCount();
  if (devices == 0) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "device cuda: no CUDA device answers (", cudaGetErrorString(e),
        "); run the job with resources.device: cpu, or on a worker with --devices=cuda:all"));
  }
  if (options.device < 0 || options.device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("device cuda:", options.device,
                                                   " does not exist; this process sees ", devices,
                                                   " CUDA device(s)"));
  }
  return options.bf16 ? Build<bf16>(config, options) : Build<float>(config, options);
}

size_t CudaActivationBytes(const ModelShape& shape, int batch, int seq, bool bf16) {
  const size_t elem_bytes = bf16 ? 2 : 4;
  const ActivationPlan p = PlanActivations(shape, batch, seq, elem_bytes);
  const size_t N = static_cast<size_t>(batch) * seq;
  return (p.acts + p.grads) * elem_bytes + (p.stats + p.col_scratch) * sizeof(float) +
         (5 * N + 1) * sizeof(int32_t);  // tokens, targets and the embedding's token buckets
}

size_t GemmAttentionBudget(size_t device_bytes) {
  return std::min<size_t>(size_t{2} << 30, device_bytes / 16);
}

engine::BackendFactory CudaBackendFactory(CudaBackendOptions options) {
  return [options](const BackendConfig& config) { return CreateCudaBackend(config, options); };
}

}  // namespace forge::cuda
