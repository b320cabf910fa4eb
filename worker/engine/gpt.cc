#include "worker/engine/gpt.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/engine/attention.h"
#include "worker/engine/cross_entropy.h"
#include "worker/engine/gelu.h"
#include "worker/engine/layernorm.h"
#include "worker/engine/matmul.h"

namespace forge::engine {
namespace {

constexpr int kEmbedColsPerTask = 64;

// Hands out consecutive regions of a buffer that is allocated once all are known.
class Arena {
 public:
  size_t Take(size_t n) {
    // Round to 16 elements so every region starts on a 64-byte boundary of the buffer.
    const size_t offset = next_;
    next_ += (n + 15) / 16 * 16;
    return offset;
  }
  size_t size() const { return next_; }

 private:
  size_t next_ = 0;
};

}  // namespace

template <typename T>
absl::StatusOr<Gpt<T>> Gpt<T>::Create(const ModelShape& shape, int max_batch, int max_seq,
                                      ThreadPool* pool) {
  if (shape.layers < 1 || shape.heads < 1 || shape.width < 1 || shape.context < 1 ||
      shape.vocab < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: every field must be >= 1 (layers=", shape.layers, " heads=", shape.heads,
        " width=", shape.width, " context=", shape.context, " vocab=", shape.vocab, ")"));
  }
  if (shape.width % shape.heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model shape: heads (", shape.heads,
                                                   ") must divide width (", shape.width, ")"));
  }
  if (max_batch < 1 || max_seq < 1 || max_seq > shape.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: need max_batch >= 1 and 1 <= max_seq <= context (", shape.context,
                     "); got max_batch=", max_batch, " max_seq=", max_seq));
  }
  if (pool == nullptr) return absl::InvalidArgumentError("model: a thread pool is required");
  return Gpt(shape, max_batch, max_seq, pool);
}

template <typename T>
Gpt<T>::Gpt(const ModelShape& shape, int max_batch, int max_seq, ThreadPool* pool)
    : shape_(shape),
      max_batch_(max_batch),
      max_seq_(max_seq),
      pool_(pool),
      layout_(GptParameterLayout(shape)),
      offsets_(GptParameterOffsets(shape)) {
  UseSingleThreadedBlas();
  const size_t N = static_cast<size_t>(max_batch) * max_seq;
  const size_t C = shape.width, V = shape.vocab;
  const size_t att = static_cast<size_t>(max_batch) * shape.heads * max_seq * max_seq;
  Arena a;
  encoded_ = a.Take(N * C);
  for (int l = 0; l < shape.layers; ++l) {
    LayerActs la;
    la.ln1 = a.Take(N * C);
    la.ln1_mean = a.Take(N);
    la.ln1_rstd = a.Take(N);
    la.qkv = a.Take(N * 3 * C);
    la.att = a.Take(att);
    la.atty = a.Take(N * C);
    la.res2 = a.Take(N * C);
    la.ln2 = a.Take(N * C);
    la.ln2_mean = a.Take(N);
    la.ln2_rstd = a.Take(N);
    la.fch = a.Take(N * 4 * C);
    la.fch_gelu = a.Take(N * 4 * C);
    la.res3 = a.Take(N * C);
    layer_acts_.push_back(la);
  }
  lnf_ = a.Take(N * C);
  lnf_mean_ = a.Take(N);
  lnf_rstd_ = a.Take(N);
  logits_ = a.Take(N * V);
  losses_ = a.Take(N);
  acts_.assign(a.size(), T(0));
  Arena g;
  dres_ = g.Take(N * C);
  dc_ = g.Take(N * C);
  d3c_ = g.Take(N * 3 * C);
  d4c_ = g.Take(N * 4 * C);
  datt_ = g.Take(att);
  grad_acts_.assign(g.size(), T(0));
  params_.assign(offsets_.total, T(0));
  grads_.assign(offsets_.total, T(0));
}

template <typename T>
void Gpt<T>::InitRandom(uint64_t seed) {
  InitGptParameters(params_.data(), shape_, seed);
}

template <typename T>
void Gpt<T>::ZeroGrad() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
const T* Gpt<T>::logits() const {
  return acts_.data() + logits_;
}

template <typename T>
const T* Gpt<T>::losses() const {
  return acts_.data() + losses_;
}

template <typename T>
T* Gpt<T>::LayerInput(int l) {
  return l == 0 ? A(encoded_) : A(layer_acts_[l - 1].res3);
}

template <typename T>
void Gpt<T>::EmbeddingForward(const int32_t* tokens, int B, int Tq) {
  const int C = shape_.width;
  const T* wte = P(offsets_.wte);
  const T* wpe = P(offsets_.wpe);
  T* out = A(encoded_);
  pool_->ParallelFor(B, [&](int64_t b) {
    for (int t = 0; t < Tq; ++t) {
      const size_t n = static_cast<size_t>(b) * Tq + t;
      const T* e = wte + static_cast<size_t>(tokens[n]) * C;
      const T* p = wpe + static_cast<size_t>(t) * C;
      T* o = out + n * C;
      for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
    }
  });
}

template <typename T>
void Gpt<T>::EmbeddingBackward(const T* dx) {
  // Tasks own column blocks; each sums its columns over the tokens in order, so repeated
  // tokens add up the same way at any thread count.
  const int C = shape_.width;
  T* dwte = G(offsets_.wte);
  T* dwpe = G(offsets_.wpe);
  const int64_t tasks = (C + kEmbedColsPerTask - 1) / kEmbedColsPerTask;
  pool_->ParallelFor(tasks, [&](int64_t task) {
    const int c0 = task * kEmbedColsPerTask, c1 = std::min(C, c0 + kEmbedColsPerTask);
    for (int n = 0; n < B_ * Tq_; ++n) {
      const T* d = dx + static_cast<size_t>(n) * C;
      T* e = dwte + static_cast<size_t>(tokens_[n]) * C;
      T* p = dwpe + static_cast<size_t>(n % Tq_) * C;
      for (int c = c0; c < c1; ++c) {
        e[c] += d[c];
        p[c] += d[c];
      }
    }
  });
}

template <typename T>
absl::StatusOr<T> Gpt<T>::Forward(const int32_t* tokens, const int32_t* targets, int B, int Tq) {
  armed_ = false;
  if (B < 1 || B > max_batch_ || Tq < 1 || Tq > max_seq_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: batch ", B, " x ", Tq, " is outside the allocated ", max_batch_, " x ", max_seq_));
  }
  const int N = B * Tq, C = shape_.width, V = shape_.vocab, H = shape_.heads;
  for (int n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: token ", tokens[n], " at position ", n, " is outside [0, ", V, ")"));
    }
    if (targets != nullptr && targets[n] >= V) {
      return absl::InvalidArgumentError(absl::StrCat("model: target ", targets[n], " at position ",
                                                     n, " is outside [0, ", V, ")"));
    }
  }
  B_ = B;
  Tq_ = Tq;
  tokens_.assign(tokens, tokens + N);
  ThreadPool& pool = *pool_;

  EmbeddingForward(tokens, B, Tq);
  for (int l = 0; l < shape_.layers; ++l) {
    const GptLayerOffsets& w = offsets_.layers[l];
    const LayerActs& a = layer_acts_[l];
    const T* x = LayerInput(l);
    LayerNormForward(A(a.ln1), A(a.ln1_mean), A(a.ln1_rstd), x, P(w.ln1_w), P(w.ln1_b), N, C, pool);
    MatmulForward(A(a.qkv), A(a.ln1), P(w.qkv_w), WeightLayout::kInOut, P(w.qkv_b),
                  static_cast<const T*>(nullptr), N, C, 3 * C, pool);
    AttentionForward(A(a.atty), A(a.att), A(a.qkv), B, Tq, C, H, pool);
    MatmulForward(A(a.res2), A(a.atty), P(w.attn_proj_w), WeightLayout::kInOut, P(w.attn_proj_b), x,
                  N, C, C, pool);
    LayerNormForward(A(a.ln2), A(a.ln2_mean), A(a.ln2_rstd), A(a.res2), P(w.ln2_w), P(w.ln2_b), N,
                     C, pool);
    MatmulForward(A(a.fch), A(a.ln2), P(w.fc_w), WeightLayout::kInOut, P(w.fc_b),
                  static_cast<const T*>(nullptr), N, C, 4 * C, pool);
    GeluForward(A(a.fch_gelu), A(a.fch), static_cast<size_t>(N) * 4 * C, pool);
    MatmulForward(A(a.res3), A(a.fch_gelu), P(w.fc_proj_w), WeightLayout::kInOut, P(w.fc_proj_b),
                  A(a.res2), N, 4 * C, C, pool);
  }
  LayerNormForward(A(lnf_), A(lnf_mean_), A(lnf_rstd_), LayerInput(shape_.layers),
                   P(offsets_.lnf_w), P(offsets_.lnf_b), N, C, pool);
  MatmulForward(A(logits_), A(lnf_), P(offsets_.wte), WeightLayout::kOutIn,
                static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), N, C, V, pool);
  if (targets == nullptr) return T(0);

  targets_.assign(targets, targets + N);
  CrossEntropyForward(A(losses_), A(logits_), targets, N, V, pool);
  // Summed in a fixed order in double, so the loss is the same at any thread count.
  double sum = 0;
  int count = 0;
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    sum += static_cast<double>(A(losses_)[n]);
    ++count;
  }
  armed_ = true;
  return count == 0 ? T(0) : static_cast<T>(sum / count);
}

template <typename T>
absl::Status Gpt<T>::Backward() {
  if (!armed_) {
    return absl::FailedPreconditionError(
        "model: Backward needs a Forward with targets since the last Backward");
  }
  armed_ = false;
  const int N = B_ * Tq_, C = shape_.width, V = shape_.vocab, H = shape_.heads;
  ThreadPool& pool = *pool_;
  const int count = static_cast<int>(
      std::count_if(targets_.begin(), targets_.end(), [](int32_t t) { return t >= 0; }));
  const T scale = count == 0 ? T(0) : T(1) / static_cast<T>(count);

  T* dres = grad_acts_.data() + dres_;  // dLoss/d(residual stream), walking down the layers
  T* dc = grad_acts_.data() + dc_;
  T* d3c = grad_acts_.data() + d3c_;
  T* d4c = grad_acts_.data() + d4c_;
  T* datt = grad_acts_.data() + datt_;

  // The logits buffer becomes dlogits in place.
  CrossEntropyBackward(A(logits_), A(logits_), targets_.data(), scale, N, V, pool);
  MatmulBackward(dc, G(offsets_.wte), static_cast<T*>(nullptr), A(logits_), A(lnf_),
                 P(offsets_.wte), WeightLayout::kOutIn, N, C, V, pool);
  std::fill(dres, dres + static_cast<size_t>(N) * C, T(0));
  LayerNormBackward(dres, G(offsets_.lnf_w), G(offsets_.lnf_b), dc, LayerInput(shape_.layers),
                    P(offsets_.lnf_w), A(lnf_mean_), A(lnf_rstd_), N, C, pool);
  for (int l = shape_.layers - 1; l >= 0; --l) {
    const GptLayerOffsets& w = offsets_.layers[l];
    const LayerActs& a = layer_acts_[l];
    // dres is dLoss/d(res3) here; it flows unchanged into res2 and picks up ln_2's part.
    MatmulBackward(d4c, G(w.fc_proj_w), G(w.fc_proj_b), dres, A(a.fch_gelu), P(w.fc_proj_w),
                   WeightLayout::kInOut, N, 4 * C, C, pool);
    GeluBackward(d4c, A(a.fch), d4c, static_cast<size_t>(N) * 4 * C, pool);
    MatmulBackward(dc, G(w.fc_w), G(w.fc_b), d4c, A(a.ln2), P(w.fc_w), WeightLayout::kInOut, N, C,
                   4 * C, pool);
    LayerNormBackward(dres, G(w.ln2_w), G(w.ln2_b), dc, A(a.res2), P(w.ln2_w), A(a.ln2_mean),
                      A(a.ln2_rstd), N, C, pool);
    // dres is now dLoss/d(res2); it flows into the layer input and picks up ln_1's part.
    MatmulBackward(dc, G(w.attn_proj_w), G(w.attn_proj_b), dres, A(a.atty), P(w.attn_proj_w),
                   WeightLayout::kInOut, N, C, C, pool);
    AttentionBackward(d3c, datt, dc, A(a.qkv), A(a.att), B_, Tq_, C, H, pool);
    MatmulBackward(dc, G(w.qkv_w), G(w.qkv_b), d3c, A(a.ln1), P(w.qkv_w), WeightLayout::kInOut, N,
                   C, 3 * C, pool);
    LayerNormBackward(dres, G(w.ln1_w), G(w.ln1_b), dc, LayerInput(l), P(w.ln1_w), A(a.ln1_mean),
                      A(a.ln1_rstd), N, C, pool);
  }
  EmbeddingBackward(dres);
  return absl::OkStatus();
}

template class Gpt<float>;
template class Gpt<double>;

}  // namespace forge::engine
