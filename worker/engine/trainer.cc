#include "worker/engine/trainer.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/grad_clip.h"
#include "worker/engine/sampler_state.h"

namespace forge::engine {
namespace {

constexpr int kStateVersion = 1;

// The options that must match between the run that wrote a checkpoint and the one resuming.
nlohmann::json RunIdentity(const TrainerOptions& o) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : o.sources) {
    sources.push_back({{"name", s.name}, {"documents", s.documents->num_documents()}});
  }
  return {{"layers", o.shape.layers}, {"heads", o.shape.heads},   {"width", o.shape.width},
          {"context", o.shape.context}, {"vocab", o.shape.vocab}, {"seed", o.seed},
          {"world_size", o.world_size}, {"rank", o.rank},         {"seq_len", o.seq_len},
          {"micro_batch", o.micro_batch}, {"grad_accum", o.grad_accum}, {"steps", o.steps},
          {"sources", sources}};
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
  auto t = std::unique_ptr<Trainer>(new Trainer(std::move(options)));
  const TrainerOptions& o = t->options_;
  t->pool_ = std::make_unique<ThreadPool>(o.threads);
  ASSIGN_OR_RETURN(Gpt<float> model,
                   Gpt<float>::Create(o.shape, o.micro_batch, o.seq_len, t->pool_.get()));
  t->model_ = std::make_unique<Gpt<float>>(std::move(model));
  t->model_->InitRandom(o.seed);
  t->adamw_ = std::make_unique<AdamW>(t->model_->Parameters(), o.adamw);

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
  return t;
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

  model_->ZeroGrad();
  const size_t micro_tokens = static_cast<size_t>(options_.micro_batch) * options_.seq_len;
  double loss_sum = 0;
  for (int m = 0; m < options_.grad_accum; ++m) {
    ASSIGN_OR_RETURN(float loss, model_->Forward(inputs_.data() + m * micro_tokens,
                                                 targets_.data() + m * micro_tokens,
                                                 options_.micro_batch, options_.seq_len));
    loss_sum += loss;
    RETURN_IF_ERROR(model_->Backward());
  }
  const size_t n = model_->num_params();
  if (options_.grad_accum > 1) {
    ScaleGrads(model_->grads(), n, 1.0f / options_.grad_accum, *pool_);
  }
  stats.grad_norm = ClipGradNorm(model_->grads(), n, options_.grad_clip, *pool_);
  stats.lr = LearningRate(step_, options_.lr);
  adamw_->Step(model_->params(), model_->grads(), static_cast<float>(stats.lr), *pool_);
  ++step_;

  stats.loss = loss_sum / options_.grad_accum;
  stats.tokens = static_cast<int64_t>(inputs_.size());
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

absl::Status Trainer::SaveCheckpoint(const std::string& dir, const nlohmann::json& extra) const {
  CheckpointData data;
  data.step = step_;
  for (const ParamInfo& p : model_->Parameters()) {
    data.model.push_back({p.name, p.shape, absl::MakeConstSpan(model_->params() + p.offset, p.count)});
    data.adam_m.push_back({p.name, p.shape, absl::MakeConstSpan(adamw_->m() + p.offset, p.count)});
    data.adam_v.push_back({p.name, p.shape, absl::MakeConstSpan(adamw_->v() + p.offset, p.count)});
  }
  data.state = extra.is_object() ? extra : nlohmann::json::object();
  data.state["trainer"] = {{"version", kStateVersion},
                           {"step", step_},
                           {"adamw_step", adamw_->step()},
                           {"run", RunIdentity(options_)},
                           {"sampler", SamplerStateToJson(sampler_->state())}};
  return WriteCheckpoint(dir, data);
}

absl::Status Trainer::LoadCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, forge::engine::LoadCheckpoint(dir));
  const nlohmann::json* trainer = nullptr;
  if (ckpt.state.is_object() && ckpt.state.contains("trainer")) trainer = &ckpt.state["trainer"];
  if (trainer == nullptr || !trainer->is_object() || !trainer->contains("run") ||
      !trainer->contains("sampler")) {
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
  const std::vector<ParamInfo>& params = model_->Parameters();
  if (ckpt.model.size() != params.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " has ", ckpt.model.size(), " tensors; the model has ", params.size()));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    for (const auto* list : {&ckpt.model, &ckpt.adam_m, &ckpt.adam_v}) {
      const LoadedTensor& t = (*list)[i];
      if (t.name != p.name || t.shape != p.shape || t.data.size() != p.count) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint ", dir, ": tensor ", i, " is ", t.name, "; the model expects ", p.name,
            " with ", p.count, " values"));
      }
    }
  }
  ASSIGN_OR_RETURN(SamplerState sampler_state, SamplerStateFromJson((*trainer)["sampler"]));
  RETURN_IF_ERROR(sampler_->Restore(sampler_state));
  // Everything validated: now change state.
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    std::memcpy(model_->params() + p.offset, ckpt.model[i].data.data(), p.count * sizeof(float));
    std::memcpy(adamw_->m() + p.offset, ckpt.adam_m[i].data.data(), p.count * sizeof(float));
    std::memcpy(adamw_->v() + p.offset, ckpt.adam_v[i].data.data(), p.count * sizeof(float));
  }
  adamw_->set_step((*trainer)["adamw_step"].get<int64_t>());
  step_ = ckpt.step;
  return absl::OkStatus();
}

}  // namespace forge::engine
