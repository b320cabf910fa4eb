#include "worker/engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/communicator.h"
#include "worker/engine/sampler_state.h"

namespace forge::engine {
namespace {

// 2: "samplers" holds every rank's cursors; "run" no longer names the writing rank.
constexpr int kStateVersion = 2;

// The all-reduce carries floats. Non-negative integers travel as 16-bit pieces (exact in a
// float); each rank fills only its own slots, so the sums are the values themselves.
constexpr int kPieces = 4;  // 64 bits
constexpr int kCursorFields = 5;  // pass, position, offset, tokens, sequences

void PutU64(uint64_t v, float* out) {
  for (int i = 0; i < kPieces; ++i) out[i] = static_cast<float>((v >> (16 * i)) & 0xffff);
}
uint64_t GetU64(const float* in) {
  uint64_t v = 0;
  for (int i = 0; i < kPieces; ++i) v |= static_cast<uint64_t>(in[i]) << (16 * i);
  return v;
}

// The options that must match between the run that wrote a checkpoint and the one resuming.
nlohmann::json RunIdentity(const TrainerOptions& o) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : o.sources) {
    sources.push_back({{"name", s.name}, {"documents", s.documents->num_documents()}});
  }
  return {{"layers", o.shape.layers}, {"heads", o.shape.heads},   {"width", o.shape.width},
          {"context", o.shape.context}, {"vocab", o.shape.vocab}, {"seed", o.seed},
          {"world_size", o.world_size}, {"seq_len", o.seq_len},
          {"micro_batch", o.micro_batch}, {"grad_accum", o.grad_accum}, {"steps", o.steps},
          {"sources", sources}};
}

// The tensors of `list` as one flat buffer in the model's layout, each checked against
// `params` (name, shape, size). `what` names the checkpoint in errors.
absl::StatusOr<std::vector<float>> Flatten(const std::vector<LoadedTensor>& list,
                                           const std::vector<ParamInfo>& params, size_t n,
                                           const std::string& what) {
  if (list.size() != params.size()) {
    return absl::FailedPreconditionError(absl::StrCat(what, " has ", list.size(),
                                                      " tensors; the model has ", params.size()));
  }
  std::vector<float> flat(n);
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    const LoadedTensor& t = list[i];
    if (t.name != p.name || t.shape != p.shape || t.data.size() != p.count) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": tensor ", i, " is ", t.name,
                                                        "; the model expects ", p.name, " with ",
                                                        p.count, " values"));
    }
    std::memcpy(flat.data() + p.offset, t.data.data(), p.count * sizeof(float));
  }
  return flat;
}

}  // namespace

Trainer::Trainer(TrainerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainerOptions options) {
  if (options.threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be >= 1 (got ", options.threads, ")"));
  }
  if (options.micro_batch < 1 || options.grad_accum < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "micro_batch and grad_accum must be >= 1 (got ", options.micro_batch, ", ",
        options.grad_accum, ")"));
  }
  if (options.steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("steps must be >= 1 (got ", options.steps, ")"));
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank must be in [0, world_size) (got rank ",
                                                   options.rank, ", world_size ",
                                                   options.world_size, ")"));
  }
  if (options.world_size > 1) {
    if (options.communicator == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "world_size ", options.world_size, " needs a communicator (options.communicator)"));
    }
    if (options.communicator->rank() != options.rank ||
        options.communicator->world_size() != options.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the communicator is rank ", options.communicator->rank(), " of ",
          options.communicator->world_size(), " but the trainer is rank ", options.rank, " of ",
          options.world_size, ": build both from the same assignment"));
    }
  }
  if (options.grad_bucket_bytes < sizeof(float)) {
    return absl::InvalidArgumentError("grad_bucket_bytes must be >= 4");
  }
  auto t = std::unique_ptr<Trainer>(new Trainer(std::move(options)));
  const TrainerOptions& o = t->options_;
  BackendConfig bc;
  bc.shape = o.shape;
  bc.max_batch = o.micro_batch;
  bc.max_seq = o.seq_len;
  bc.adamw = o.adamw;
  bc.world_size = o.world_size;
  bc.rank = o.rank;
  bc.threads = o.threads;
  bc.communicator = o.communicator;
  bc.grad_bucket_bytes = o.grad_bucket_bytes;
  ASSIGN_OR_RETURN(t->backend_, o.make_backend ? o.make_backend(bc) : CreateCpuBackend(bc));
  RETURN_IF_ERROR(t->backend_->InitRandom(o.seed));

  MixtureOptions mo;
  mo.schedule = o.schedule;
  mo.total_steps = o.steps;
  mo.seed = o.seed;
  mo.world_size = o.world_size;
  mo.rank = o.rank;
  mo.seq_len = o.seq_len;
  mo.sequences_per_rank = o.micro_batch * o.grad_accum;
  mo.separator_token = o.separator_token;
  ASSIGN_OR_RETURN(MixtureSampler sampler, MixtureSampler::Create(mo, o.sources));
  t->sampler_ = std::make_unique<MixtureSampler>(std::move(sampler));
  const size_t n = static_cast<size_t>(mo.sequences_per_rank) * o.seq_len;
  t->inputs_.resize(n);
  t->targets_.resize(n);
  t->all_samplers_.assign(o.world_size, t->sampler_->state());
  t->peak_flops_all_ranks_ = t->backend_->PeakFlops() > 0 ? t->backend_->PeakFlops() : 0;
  if (o.world_size > 1) {
    RETURN_IF_ERROR(t->ExchangeLossAndCursors(0).status());
    // Every rank's peak in TFLOP/s and how many ranks do not know theirs.
    float peaks[2] = {static_cast<float>(t->peak_flops_all_ranks_ / 1e12),
                      t->peak_flops_all_ranks_ > 0 ? 0.0f : 1.0f};
    RETURN_IF_ERROR(o.communicator->AllReduceSum(peaks, 2));
    t->peak_flops_all_ranks_ = peaks[1] > 0 ? 0 : double{peaks[0]} * 1e12;
  }
  return t;
}

absl::StatusOr<double> Trainer::ExchangeLossAndCursors(double local_loss) {
  const int world = options_.world_size;
  const SamplerState own = sampler_->state();
  const size_t sources = own.sources.size();
  const size_t per_rank = sources * kCursorFields * kPieces;
  exchange_.assign(2 + world * per_rank, 0.0f);
  // The loss as a float pair: hi + lo carries ~48 bits of the double.
  const float hi = static_cast<float>(local_loss);
  exchange_[0] = hi;
  exchange_[1] = static_cast<float>(local_loss - hi);
  float* mine = exchange_.data() + 2 + options_.rank * per_rank;
  for (size_t s = 0; s < sources; ++s) {
    const SourceCursor& c = own.sources[s];
    const int64_t fields[kCursorFields] = {c.pass, c.position, c.offset, c.tokens, c.sequences};
    for (int f = 0; f < kCursorFields; ++f) {
      PutU64(static_cast<uint64_t>(fields[f]), mine + (s * kCursorFields + f) * kPieces);
    }
  }
  RETURN_IF_ERROR(options_.communicator->AllReduceSum(exchange_.data(), exchange_.size()));
  for (int r = 0; r < world; ++r) {
    SamplerState st = own;
    st.rank = r;
    const float* in = exchange_.data() + 2 + r * per_rank;
    for (size_t s = 0; s < sources; ++s) {
      SourceCursor& c = st.sources[s];
      int64_t* fields[kCursorFields] = {&c.pass, &c.position, &c.offset, &c.tokens, &c.sequences};
      for (int f = 0; f < kCursorFields; ++f) {
        *fields[f] = static_cast<int64_t>(GetU64(in + (s * kCursorFields + f) * kPieces));
      }
    }
    all_samplers_[r] = std::move(st);
  }
  all_samplers_[options_.rank] = own;
  return (static_cast<double>(exchange_[0]) + static_cast<double>(exchange_[1])) / world;
}

absl::StatusOr<StepStats> Trainer::Step() {
  if (step_ >= options_.steps) {
    return absl::FailedPreconditionError(
        absl::StrCat("the run is complete: all ", options_.steps, " steps were taken"));
  }
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  stats.step = step_;
  std::vector<int> source_of_sequence;
  RETURN_IF_ERROR(sampler_->NextBatch(step_, absl::MakeSpan(inputs_), absl::MakeSpan(targets_),
                                      &source_of_sequence));
  stats.sequences_per_source.assign(options_.sources.size(), 0);
  for (int s : source_of_sequence) ++stats.sequences_per_source[s];
  // Every rank's sources are a pure function of (seed, step, rank, position): no exchange.
  stats.sequences_per_source_all_ranks.assign(options_.sources.size(), 0);
  const int per_rank = options_.micro_batch * options_.grad_accum;
  for (int r = 0; r < options_.world_size; ++r) {
    for (int p = 0; p < per_rank; ++p) {
      ++stats.sequences_per_source_all_ranks[sampler_->SourceOf(step_, r, p)];
    }
  }

  RETURN_IF_ERROR(backend_->ZeroGrad());
  const size_t micro_tokens = static_cast<size_t>(options_.micro_batch) * options_.seq_len;
  double loss_sum = 0;
  for (int m = 0; m < options_.grad_accum; ++m) {
    ASSIGN_OR_RETURN(double loss,
                     backend_->ForwardBackward(inputs_.data() + m * micro_tokens,
                                               targets_.data() + m * micro_tokens,
                                               options_.micro_batch, options_.seq_len,
                                               /*last_micro_batch=*/m + 1 == options_.grad_accum));
    loss_sum += loss;
  }
  stats.loss = loss_sum / options_.grad_accum;
  if (options_.world_size > 1) {
    RETURN_IF_ERROR(backend_->FinishGradients());
    ASSIGN_OR_RETURN(stats.loss, ExchangeLossAndCursors(stats.loss));
  } else {
    all_samplers_[0] = sampler_->state();
  }
  // The same loss and norm on every rank (all-reduced), so every rank stops at the same step.
  if (!std::isfinite(stats.loss)) {
    return absl::DataLossError(absl::StrFormat(
        "step %d: the training loss is %g, so the run diverged (the parameters or activations "
        "overflowed); no update was made. Resume from an earlier checkpoint with a lower "
        "train.lr, a longer train.warmup_steps or train.grad_clip set",
        step_ + 1, stats.loss));
  }
  const int divisor = options_.grad_accum * options_.world_size;
  stats.lr = LearningRate(step_, options_.lr);
  ASSIGN_OR_RETURN(stats.grad_norm,
                   backend_->OptimizerStep(1.0f / divisor, options_.grad_clip,
                                           static_cast<float>(stats.lr)));
  if (!std::isfinite(stats.grad_norm)) {
    return absl::DataLossError(absl::StrFormat(
        "step %d: the gradient norm is %g, so the run diverged (the loss was %g); the update "
        "applied it, so this trainer's parameters are no longer usable. Resume from an earlier "
        "checkpoint with a lower train.lr, a longer train.warmup_steps or train.grad_clip set",
        step_ + 1, stats.grad_norm, stats.loss));
  }
  ++step_;

  stats.tokens = static_cast<int64_t>(inputs_.size());
  stats.tokens_all_ranks = stats.tokens * options_.world_size;  // equal batches on every rank
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

nlohmann::json Trainer::TrainerStateJson() const {
  nlohmann::json samplers = nlohmann::json::array();
  for (const SamplerState& st : all_samplers_) samplers.push_back(SamplerStateToJson(st));
  return {{"version", kStateVersion},
          {"step", step_},
          {"adamw_step", backend_->optimizer_step()},
          {"run", RunIdentity(options_)},
          {"sampler", SamplerStateToJson(all_samplers_[0])},  // version 1 readers: rank 0
          {"samplers", std::move(samplers)}};
}

absl::Status Trainer::SnapshotInto(CheckpointSnapshot* out) const {
  const size_t n = backend_->num_params();
  // Sized once: a training loop that reuses its snapshot pays only the copy after the first.
  for (std::vector<float>* dst : {&out->params, &out->adam_m, &out->adam_v}) dst->resize(n);
  RETURN_IF_ERROR(
      backend_->CopyState(out->params.data(), out->adam_m.data(), out->adam_v.data()));
  out->step = step_;
  out->shape = options_.shape;
  out->tensors = backend_->Parameters();
  out->trainer_state = TrainerStateJson();
  return absl::OkStatus();
}

absl::StatusOr<CheckpointSnapshot> Trainer::Snapshot() const {
  CheckpointSnapshot out;
  RETURN_IF_ERROR(SnapshotInto(&out));
  return out;
}

absl::Status Trainer::SaveCheckpoint(const std::string& dir, const nlohmann::json& extra) const {
  ASSIGN_OR_RETURN(CheckpointSnapshot snapshot, Snapshot());
  return WriteCheckpointSnapshot(snapshot, dir, extra);
}

absl::StatusOr<uint64_t> Trainer::ParamChecksum() const {
  std::vector<float> params(backend_->num_params());
  RETURN_IF_ERROR(backend_->CopyState(params.data(), nullptr, nullptr));
  return ParamBytesChecksum(params.data(), params.size());
}

absl::Status Trainer::CheckReplicasAgree() {
  if (options_.world_size == 1) return absl::OkStatus();
  const int world = options_.world_size;
  std::vector<float> all(static_cast<size_t>(world) * kPieces, 0.0f);
  ASSIGN_OR_RETURN(const uint64_t mine, ParamChecksum());
  PutU64(mine, all.data() + options_.rank * kPieces);
  RETURN_IF_ERROR(options_.communicator->AllReduceSum(all.data(), all.size()));
  const uint64_t want = GetU64(all.data());
  for (int r = 1; r < world; ++r) {
    const uint64_t got = GetU64(all.data() + r * kPieces);
    if (got != want) {
      return absl::DataLossError(absl::StrFormat(
          "replica check at step %d: rank %d's parameters (checksum %016x) differ from rank "
          "0's (checksum %016x); the replicas diverged: restart from the last checkpoint",
          step_, r, got, want));
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::InitFromWeights(const std::string& dir) {
  if (step_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "InitFromWeights: the run already took ", step_, " steps; load weights before training"));
  }
  ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, forge::engine::LoadCheckpoint(dir));
  ASSIGN_OR_RETURN(std::vector<float> flat,
                   Flatten(ckpt.model, backend_->Parameters(), backend_->num_params(),
                           absl::StrCat("base checkpoint ", dir)));
  return backend_->LoadState(flat.data(), nullptr, nullptr, 0);
}

double Trainer::Mfu(double tokens_per_second) const {
  if (peak_flops_all_ranks_ <= 0) return 0;
  return tokens_per_second * options_.world_size *
         TrainingFlopsPerToken(options_.shape, options_.seq_len) / peak_flops_all_ranks_;
}

absl::StatusOr<int> CheckpointMicroBatch(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kCheckpointTrainerStateFile);
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json::json_pointer where("/state/trainer/run/micro_batch");
  if (!j.contains(where) || !j.at(where).is_number_integer()) {
    return absl::NotFoundError(absl::StrCat(path, " records no micro_batch"));
  }
  const int64_t m = j.at(where).get<int64_t>();
  if (m < 1 || m > std::numeric_limits<int>::max()) {
    return absl::DataLossError(absl::StrCat(path, " records micro_batch ", m));
  }
  return static_cast<int>(m);
}

absl::Status Trainer::LoadCheckpoint(const std::string& dir, nlohmann::json* extra) {
  ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, forge::engine::LoadCheckpoint(dir));
  const nlohmann::json* trainer = nullptr;
  if (ckpt.state.is_object() && ckpt.state.contains("trainer")) trainer = &ckpt.state["trainer"];
  if (trainer == nullptr || !trainer->is_object() || !trainer->contains("run") ||
      (!trainer->contains("sampler") && !trainer->contains("samplers"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/trainer_state.json has no trainer state; it was not written by a Forge trainer"));
  }
  const nlohmann::json want = RunIdentity(options_);
  const nlohmann::json& got = (*trainer)["run"];
  for (const auto& [key, value] : want.items()) {
    if (!got.contains(key) || got[key] != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", dir, " was written by a run with ", key, " = ",
          got.contains(key) ? got[key].dump() : "(none)", "; this run has ", value.dump(),
          ": resume with the same job spec"));
    }
  }
  // Parameters and both moments, each checked against the model before anything changes.
  const std::vector<ParamInfo>& params = backend_->Parameters();
  const size_t n = backend_->num_params();
  const std::string what = absl::StrCat("checkpoint ", dir);
  ASSIGN_OR_RETURN(std::vector<float> flat_params, Flatten(ckpt.model, params, n, what));
  ASSIGN_OR_RETURN(std::vector<float> flat_m, Flatten(ckpt.adam_m, params, n, what));
  ASSIGN_OR_RETURN(std::vector<float> flat_v, Flatten(ckpt.adam_v, params, n, what));
  // Every rank's cursors (version 2); a version 1 checkpoint has only its writer's, which is
  // enough for one rank.
  std::vector<SamplerState> samplers;
  if (trainer->contains("samplers")) {
    const nlohmann::json& list = (*trainer)["samplers"];
    if (!list.is_array() || static_cast<int>(list.size()) != options_.world_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", dir, " holds sampler cursors for ", list.is_array() ? list.size() : 0,
          " ranks; this run has world_size ", options_.world_size));
    }
    for (const nlohmann::json& j : list) {
      ASSIGN_OR_RETURN(SamplerState st, SamplerStateFromJson(j));
      samplers.push_back(std::move(st));
    }
  } else {
    if (options_.world_size != 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", dir, " holds one rank's sampler cursors; this run has world_size ",
          options_.world_size));
    }
    ASSIGN_OR_RETURN(SamplerState st, SamplerStateFromJson((*trainer)["sampler"]));
    samplers.push_back(std::move(st));
  }
  RETURN_IF_ERROR(sampler_->Restore(samplers[options_.rank]));
  all_samplers_ = std::move(samplers);
  // Everything validated: now change state.
  RETURN_IF_ERROR(backend_->LoadState(flat_params.data(), flat_m.data(), flat_v.data(),
                                      (*trainer)["adamw_step"].get<int64_t>()));
  step_ = ckpt.step;
  if (extra != nullptr) {
    *extra = std::move(ckpt.state);
    extra->erase("trainer");
  }
  return absl::OkStatus();
}

}  // namespace forge::engine
