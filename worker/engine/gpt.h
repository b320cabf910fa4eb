// The GPT-2 style decoder on the CPU: forward and backward over a batch of token sequences.
//
//   x = wte[tokens] + wpe[positions]
//   per layer: x += attn.c_proj(CausalSelfAttention(attn.c_attn(ln_1(x))))
//              x += mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))
//   logits = ln_f(x) · wte^T;  loss = mean cross-entropy over tokens whose target is >= 0
//
// Parameters and gradients are each one contiguous buffer laid out as gpt_params.h says
// (Hugging Face GPT-2 names and layouts). Activations are allocated once for
// max_batch × max_seq tokens. T is float for training, double for gradient checks.
//
// Thread safety: one thread drives a model at a time. Kernels run on the ThreadPool passed
// to Create; results are the same bits at any pool size.
#ifndef FORGE_WORKER_ENGINE_GPT_H_
#define FORGE_WORKER_ENGINE_GPT_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_presets.h"
#include "worker/engine/gpt_params.h"
#include "worker/engine/param_info.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {

template <typename T>
class Gpt {
 public:
  // Parameters start at zero (call InitRandom or fill params()); gradients at zero.
  // INVALID_ARGUMENT when a shape field is below 1, heads does not divide width,
  // max_batch < 1, or max_seq is not in [1, context]. `pool` must outlive the model.
  static absl::StatusOr<Gpt> Create(const ModelShape& shape, int max_batch, int max_seq,
                                    ThreadPool* pool);

  const ModelShape& shape() const { return shape_; }
  // The named tensors in buffer order (see gpt_params.h).
  const std::vector<ParamInfo>& Parameters() const { return layout_; }
  size_t num_params() const { return params_.size(); }
  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }

  // GPT-2 initialisation from `seed` (InitGptParameters).
  void InitRandom(uint64_t seed);

  // Runs the model on tokens [B, Tq] (row-major, ids in [0, vocab)). With targets [B, Tq]
  // (ids < vocab; negative ones are ignored) returns the mean loss over the counted tokens
  // (0 when there are none) and arms Backward; with targets null returns 0 and only the
  // logits are computed. INVALID_ARGUMENT when B is not in [1, max_batch], Tq not in
  // [1, max_seq], or a token or target is out of range.
  absl::StatusOr<T> Forward(const int32_t* tokens, const int32_t* targets, int B, int Tq);

  // After Forward: logits [B, Tq, vocab] (until Backward, which reuses the buffer) and, when
  // targets were given, per-token losses [B, Tq] (0 for ignored tokens).
  const T* logits() const;
  const T* losses() const;

  // Adds dLoss/dparams of the last Forward (the mean loss it returned) to grads(), so
  // micro-batches accumulate; the caller scales. FAILED_PRECONDITION unless the last call
  // was a Forward with targets.
  absl::Status Backward();

  void ZeroGrad();

 private:
  // Element offsets into acts_ of one layer's saved activations (sized for max tokens).
  struct LayerActs {
    size_t ln1, ln1_mean, ln1_rstd, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu,
        res3;
  };

  Gpt(const ModelShape& shape, int max_batch, int max_seq, ThreadPool* pool);
  T* P(size_t offset) { return params_.data() + offset; }
  T* G(size_t offset) { return grads_.data() + offset; }
  T* A(size_t offset) { return acts_.data() + offset; }
  // The input of layer l: the embeddings for l = 0, else layer l-1's output.
  T* LayerInput(int l);
  void EmbeddingForward(const int32_t* tokens, int B, int Tq);
  void EmbeddingBackward(const T* dx);

  // Constant after construction.
  ModelShape shape_;
  int max_batch_ = 0, max_seq_ = 0;
  ThreadPool* pool_ = nullptr;
  std::vector<ParamInfo> layout_;
  GptOffsets offsets_;
  std::vector<LayerActs> layer_acts_;
  size_t encoded_ = 0, lnf_ = 0, lnf_mean_ = 0, lnf_rstd_ = 0, logits_ = 0, losses_ = 0;
  // Backward scratch inside grad_acts_.
  size_t dres_ = 0, dc_ = 0, d3c_ = 0, d4c_ = 0, datt_ = 0;

  std::vector<T> params_, grads_, acts_, grad_acts_;
  // The last Forward.
  int B_ = 0, Tq_ = 0;
  bool armed_ = false;  // Backward may run
  std::vector<int32_t> tokens_, targets_;
};

extern template class Gpt<float>;
extern template class Gpt<double>;

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GPT_H_
