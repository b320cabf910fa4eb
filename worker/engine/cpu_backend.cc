// The CPU ModelBackend: Gpt<float> + AdamW on a ThreadPool; gradients all-reduced with Gloo in
// flat buckets after the whole backward pass.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/communicator.h"
#include "worker/engine/gpt.h"
#include "worker/engine/grad_clip.h"
#include "worker/engine/model_backend.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {
namespace {

class CpuBackend final : public ModelBackend {
 public:
  CpuBackend(const BackendConfig& config, std::unique_ptr<ThreadPool> pool, Gpt<float> model)
      : config_(config),
        pool_(std::move(pool)),
        model_(std::move(model)),
        adamw_(model_.Parameters(), config.adamw) {}

  std::string Describe() const override {
    return absl::StrCat("cpu (", config_.threads, config_.threads == 1 ? " thread" : " threads",
                        ", fp32)");
  }
  const std::vector<ParamInfo>& Parameters() const override { return model_.Parameters(); }
  size_t num_params() const override { return model_.num_params(); }

  absl::Status InitRandom(uint64_t seed) override {
    model_.InitRandom(seed);
    std::fill(adamw_.m(), adamw_.m() + num_params(), 0.0f);
    std::fill(adamw_.v(), adamw_.v() + num_params(), 0.0f);
    adamw_.set_step(0);
    return absl::OkStatus();
  }

  absl::Status ZeroGrad() override {
    model_.ZeroGrad();
    return absl::OkStatus();
  }

  absl::StatusOr<double> ForwardBackward(const int32_t* tokens, const int32_t* targets, int B,
                                         int T, bool /*last_micro_batch*/) override {
    ASSIGN_OR_RETURN(float loss, model_.Forward(tokens, targets, B, T));
    RETURN_IF_ERROR(model_.Backward());
    return loss;
  }

  absl::Status ForwardLosses(const int32_t* tokens, const int32_t* targets, int B, int T,
                             float* losses) override {
    RETURN_IF_ERROR(model_.Forward(tokens, targets, B, T).status());
    std::memcpy(losses, model_.losses(), static_cast<size_t>(B) * T * sizeof(float));
    return absl::OkStatus();
  }

  absl::Status FinishGradients() override {
    if (config_.world_size == 1) return absl::OkStatus();
    const size_t n = num_params();
    const size_t bucket = std::max<size_t>(1, config_.grad_bucket_bytes / sizeof(float));
    float* g = model_.grads();
    for (size_t off = 0; off < n; off += bucket) {
      RETURN_IF_ERROR(config_.communicator->AllReduceSum(g + off, std::min(bucket, n - off)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<double> OptimizerStep(float grad_scale, double max_norm, float lr) override {
    const size_t n = num_params();
    if (grad_scale != 1.0f) ScaleGrads(model_.grads(), n, grad_scale, *pool_);
    const double norm = ClipGradNorm(model_.grads(), n, max_norm, *pool_);
    adamw_.Step(model_.params(), model_.grads(), lr, *pool_);
    return norm;
  }

  int64_t optimizer_step() const override { return adamw_.step(); }

  absl::Status CopyState(float* params, float* adam_m, float* adam_v) const override {
    const size_t n = num_params();
    for (auto [dst, src] : {std::pair{params, model_.params()}, std::pair{adam_m, adamw_.m()},
                            std::pair{adam_v, adamw_.v()}}) {
      if (dst != nullptr) std::copy(src, src + n, dst);
    }
    return absl::OkStatus();
  }

  absl::Status CopyGradients(float* grads) const override {
    std::copy(model_.grads(), model_.grads() + num_params(), grads);
    return absl::OkStatus();
  }

  absl::Status LoadState(const float* params, const float* adam_m, const float* adam_v,
                         int64_t optimizer_step) override {
    const size_t n = num_params();
    for (auto [dst, src] : {std::pair{model_.params(), params}, std::pair{adamw_.m(), adam_m},
                            std::pair{adamw_.v(), adam_v}}) {
      if (src != nullptr) std::copy(src, src + n, dst);
    }
    adamw_.set_step(optimizer_step);
    return absl::OkStatus();
  }

 private:
  BackendConfig config_;
  std::unique_ptr<ThreadPool> pool_;
  Gpt<float> model_;
  AdamW adamw_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCpuBackend(const BackendConfig& config) {
  if (config.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 1 (got ", config.threads, ")"));
  }
  if (config.world_size > 1 && config.communicator == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world_size ", config.world_size, " on the cpu backend needs a Gloo communicator"));
  }
  auto pool = std::make_unique<ThreadPool>(config.threads);
  ASSIGN_OR_RETURN(Gpt<float> model,
                   Gpt<float>::Create(config.shape, config.max_batch, config.max_seq, pool.get()));
  return std::make_unique<CpuBackend>(config, std::move(pool), std::move(model));
}

}  // namespace forge::engine
