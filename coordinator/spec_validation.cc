#include "coordinator/spec_validation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model_presets.h"
#include "common/names.h"
#include "common/spec_names.h"

namespace forge::coordinator {
namespace {

using forge::v1::JobSpec;

// Documented in job.proto.
constexpr int kMaxNameLength = 128;
constexpr int kMaxCheckpointIdLength = 128;
constexpr int kMaxMixtureSources = 64;
constexpr int kMaxSchedulePoints = 64;
constexpr int kMaxEvalSuites = 64;
constexpr int64_t kMinSteps = 1, kMaxSteps = 10'000'000, kDefaultSteps = 1000;
constexpr int64_t kDefaultBatchSequencesPerRank = 8;
constexpr double kDefaultLr = 3e-4;
constexpr double kDefaultWeightDecay = 0.1;
constexpr double kMaxGradClip = 1e6, kDefaultGradClip = 1.0;
constexpr uint64_t kDefaultSeed = 1;
constexpr int kMaxRanks = 4096, kDefaultRanks = 1;
constexpr int kMaxMicroBatch = 4096;
constexpr int kMinKeepLast = 1, kMaxKeepLast = 1000, kDefaultKeepLast = 3;
constexpr double kMaxRegressionLimit = 10, kDefaultMaxRegression = 0.02;
constexpr int kMinPriority = -100, kMaxPriority = 100;
constexpr int kMaxRestartsLimit = 100, kDefaultMaxRestarts = 3;

// The message lists at most this many problems, then "and N more".
constexpr size_t kMaxProblemsListed = 20;

// User text echoed into a message is escaped and cut short.
std::string Quoted(absl::string_view text) {
  constexpr size_t kMaxEcho = 64;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxEcho)),
                      text.size() > kMaxEcho ? "..." : "", "\"");
}

// The shortest decimal that reads back as `v` ("-0.2", not "-0.20000000000000001"), so a
// message shows the number the user wrote; "nan", "inf" and "-inf" as such.
std::string Num(double v) {
  if (!std::isfinite(v)) return absl::StrCat(v);
  for (int precision = 6; precision < 17; ++precision) {
    std::string text = absl::StrFormat("%.*g", precision, v);
    double back = 0;
    if (absl::SimpleAtod(text, &back) && back == v) return text;
  }
  return absl::StrFormat("%.17g", v);
}

// "[a, b]", bounded.
std::string ShortList(const google::protobuf::RepeatedPtrField<std::string>& items) {
  constexpr int kMaxItems = 8;
  std::vector<std::string> shown;
  for (int i = 0; i < items.size() && i < kMaxItems; ++i) {
    shown.push_back(absl::CHexEscape(absl::string_view(items[i]).substr(0, 64)));
  }
  if (items.size() > kMaxItems) shown.push_back("...");
  return absl::StrCat("[", absl::StrJoin(shown, ", "), "]");
}

// Collects problems; every check below adds to it and returns whether the value was valid,
// so dependent checks can skip a value already reported (one mistake, one message).
class Problems {
 public:
  void Add(std::string problem) { list_.push_back(std::move(problem)); }
  void AddIfError(const absl::Status& status) {
    if (!status.ok()) Add(std::string(status.message()));
  }
  bool empty() const { return list_.empty(); }
  std::vector<std::string>* list() { return &list_; }

  absl::Status ToStatus() const {
    std::vector<absl::string_view> shown(
        list_.begin(), list_.begin() + std::min(list_.size(), kMaxProblemsListed));
    std::string message = absl::StrCat("job spec: ", absl::StrJoin(shown, "; "));
    if (list_.size() > kMaxProblemsListed) {
      absl::StrAppend(&message, "; and ", list_.size() - kMaxProblemsListed, " more");
    }
    return absl::InvalidArgumentError(message);
  }

  bool IntInRange(absl::string_view path, int64_t value, int64_t lo, int64_t hi) {
    if (value >= lo && value <= hi) return true;
    Add(absl::StrCat(path, " must be in ", lo, "..", hi, " (got ", value, ")"));
    return false;
  }

  bool Finite(absl::string_view path, double value) {
    if (std::isfinite(value)) return true;
    Add(absl::StrCat(path, " must be a finite number (got ", Num(value), ")"));
    return false;
  }

  // lo <= value <= hi, and finite.
  bool DoubleInRange(absl::string_view path, double value, double lo, double hi) {
    if (!Finite(path, value)) return false;
    if (value >= lo && value <= hi) return true;
    Add(absl::StrCat(path, " must be in ", Num(lo), "..", Num(hi), " (got ", Num(value), ")"));
    return false;
  }

 private:
  std::vector<std::string> list_;
};

// What validation learned about the model: its shape when known here.
struct ModelInfo {
  bool from_base = false;
  std::optional<ModelShape> shape;  // set for a valid fresh model
};

ModelInfo CheckBaseOrModel(JobSpec* spec, Problems* problems) {
  ModelInfo info;
  if (!spec->has_base()) {
    // Also the "give a preset or the numbers" message when `model` is absent.
    info.shape = ResolveModelShape(spec->model(), problems->list());
    if (info.shape.has_value()) {
      forge::v1::ModelSpec* model = spec->mutable_model();
      model->set_layers(info.shape->layers);
      model->set_heads(info.shape->heads);
      model->set_width(info.shape->width);
      model->set_context(info.shape->context);
      model->set_vocab(info.shape->vocab);
    }
    return info;
  }

  info.from_base = true;
  const forge::v1::BaseSpec& base = spec->base();
  if (spec->has_model()) {
    problems->Add(
        "model: give either base or model, not both (model describes a fresh model; base "
        "starts from an existing one)");
  }
  const bool has_checkpoint = !base.checkpoint().empty();
  const bool has_model = !base.model().empty();
  if (has_checkpoint && has_model) {
    problems->Add("base: give either checkpoint or model, not both");
  } else if (!has_checkpoint && !has_model) {
    problems->Add("base: give a checkpoint id, or a model with its stage");
  }
  if (has_checkpoint) {
    problems->AddIfError(
        ValidateIdentifier("base.checkpoint", base.checkpoint(), kMaxCheckpointIdLength));
  }
  if (has_model) problems->AddIfError(ValidateResourceName("base.model", base.model()));

  if (!forge::v1::Stage_IsValid(base.stage())) {
    problems->Add(absl::StrCat(
        "base.stage must be pre-training, mid-training or post-training (got ", base.stage(), ")"));
  } else if (has_model && base.stage() == forge::v1::STAGE_UNSPECIFIED) {
    problems->Add(
        "base.stage is required with base.model (pre-training, mid-training or post-training)");
  } else if (has_checkpoint && !has_model && base.stage() != forge::v1::STAGE_UNSPECIFIED) {
    problems->Add(
        absl::StrCat("base.stage goes with base.model only; a checkpoint records "
                     "its own stage: remove base.stage (got ",
                     StageName(base.stage()), ")"));
  }
  return info;
}

void CheckData(const forge::v1::DataSpec& data, Problems* problems) {
  const auto& mixture = data.mixture();
  if (mixture.empty()) {
    problems->Add("data.mixture is required: give 1..64 sources as {dataset, weight}");
  } else if (mixture.size() > kMaxMixtureSources) {
    problems->Add(absl::StrCat("data.mixture has ", mixture.size(), " sources; the limit is ",
                               kMaxMixtureSources));
  }
  absl::flat_hash_map<std::string, int> index_of;  // dataset -> first mixture index
  bool weights_ok = true;
  double weight_sum = 0;
  for (int i = 0; i < mixture.size(); ++i) {
    const std::string path = absl::StrCat("data.mixture[", i, "]");
    const forge::v1::MixtureEntry& entry = mixture[i];
    absl::Status name = ValidateResourceName(absl::StrCat(path, ".dataset"), entry.dataset());
    problems->AddIfError(name);
    if (name.ok()) {
      auto [it, inserted] = index_of.emplace(entry.dataset(), i);
      if (!inserted) {
        problems->Add(absl::StrCat(path, ".dataset ", Quoted(entry.dataset()),
                                   " is already data.mixture[", it->second,
                                   "]; list each dataset once"));
      }
    }
    const std::string weight_path = absl::StrCat(path, ".weight");
    if (!problems->Finite(weight_path, entry.weight())) {
      weights_ok = false;
    } else if (entry.weight() <= 0) {
      problems->Add(absl::StrCat(weight_path, " must be > 0 (got ", Num(entry.weight()), ")"));
      weights_ok = false;
    } else {
      weight_sum += entry.weight();
    }
  }
  if (weights_ok && !std::isfinite(weight_sum)) {
    problems->Add("data.mixture weights sum past the largest number; use smaller weights");
  }

  const auto& schedule = data.schedule();
  if (schedule.size() > kMaxSchedulePoints) {
    problems->Add(absl::StrCat("data.schedule has ", schedule.size(), " points; the limit is ",
                               kMaxSchedulePoints));
  }
  std::optional<double> previous_at;
  for (int k = 0; k < schedule.size(); ++k) {
    const std::string path = absl::StrCat("data.schedule[", k, "]");
    const forge::v1::SchedulePoint& point = schedule[k];
    const double at = point.at();
    const std::string at_path = absl::StrCat(path, ".at");
    if (problems->DoubleInRange(at_path, at, 0, 1) && previous_at.has_value() &&
        at <= *previous_at) {
      problems->Add(absl::StrCat(at_path, " must be greater than data.schedule[", k - 1,
                                 "].at = ", Num(*previous_at), " (got ", Num(at),
                                 "); list points in increasing order of at"));
    }
    if (std::isfinite(at)) previous_at = at;

    // Sorted, so messages come in a stable order (map order is unspecified).
    std::vector<std::pair<absl::string_view, double>> weights(point.weights().begin(),
                                                              point.weights().end());
    std::sort(weights.begin(), weights.end());
    bool point_ok = true;
    double sum = 0;
    for (const auto& [dataset, weight] : weights) {
      if (!index_of.contains(dataset)) {
        problems->Add(absl::StrCat(path, ".weights names ", Quoted(dataset),
                                   ", which is not in data.mixture; add it to data.mixture "
                                   "or remove it here"));
        point_ok = false;
        continue;
      }
      const std::string weight_path = absl::StrCat(path, ".weights.", dataset);
      if (!problems->Finite(weight_path, weight)) {
        point_ok = false;
      } else if (weight < 0) {
        problems->Add(absl::StrCat(weight_path, " must be >= 0 (got ", Num(weight), ")"));
        point_ok = false;
      } else {
        sum += weight;
      }
    }
    if (!point_ok) continue;
    if (sum <= 0) {
      problems->Add(absl::StrCat(path, ".weights must sum to > 0 (got ", Num(sum),
                                 "); give at least one dataset a positive weight"));
    } else if (!std::isfinite(sum)) {
      problems->Add(
          absl::StrCat(path, ".weights sum past the largest number; use smaller weights"));
    }
  }
}

// Returns the number of ranks when valid.
std::optional<int> CheckResources(forge::v1::ResourceSpec* resources, const ModelInfo& model,
                                  Problems* problems) {
  if (resources->ranks() == 0) resources->set_ranks(kDefaultRanks);
  if (resources->device() == forge::v1::DEVICE_KIND_UNSPECIFIED) {
    resources->set_device(forge::v1::DEVICE_KIND_CPU);
  } else if (!forge::v1::DeviceKind_IsValid(resources->device())) {
    problems->Add(
        absl::StrCat("resources.device must be cpu or cuda (got ", resources->device(), ")"));
  }
  // (A base checkpoint's width is checked where the base is resolved: submission.h.)
  if (resources->device() == forge::v1::DEVICE_KIND_CUDA && !model.from_base &&
      model.shape.has_value() && model.shape->width % kCudaWidthMultiple != 0) {
    const int below = model.shape->width / kCudaWidthMultiple * kCudaWidthMultiple;
    problems->Add(absl::StrCat("model.width must be a multiple of ", kCudaWidthMultiple,
                               " with resources.device: cuda (got ", model.shape->width,
                               "; the GPU matmuls need 16-byte aligned rows): use width ",
                               below >= kMinWidth ? absl::StrCat(below, " or ") : "",
                               below + kCudaWidthMultiple,
                               " (heads must still divide it), or resources.device: cpu"));
  }
  if (!problems->IntInRange("resources.ranks", resources->ranks(), 1, kMaxRanks)) {
    return std::nullopt;
  }
  return resources->ranks();
}

// The largest train.micro_batch the job's device takes: on cuda the attention runs one grid row
// per sequence and head, so micro_batch x heads is bounded too (checked, with its own message,
// in ValidateAndFillDefaults).
int64_t MicroBatchLimit(const JobSpec& spec, const ModelInfo& model) {
  if (spec.resources().device() == forge::v1::DEVICE_KIND_CUDA && model.shape.has_value()) {
    return std::min(kMaxMicroBatch, CudaMaxMicroBatch(model.shape->heads));
  }
  return kMaxMicroBatch;
}

// Returns train.steps when valid. `micro_limit` is MicroBatchLimit's: divisors suggested for a
// train.micro_batch that does not divide the rank's share stay within it.
std::optional<int64_t> CheckTrain(forge::v1::TrainSpec* train, const ModelInfo& model,
                                  std::optional<int> ranks, int64_t micro_limit,
                                  Problems* problems) {
  if (!train->has_steps()) train->set_steps(kDefaultSteps);
  std::optional<int64_t> steps;
  if (problems->IntInRange("train.steps", train->steps(), kMinSteps, kMaxSteps)) {
    steps = train->steps();
  }

  std::optional<int64_t> seq_len;
  if (model.shape.has_value()) {
    const int context = model.shape->context;
    if (!train->has_seq_len()) train->set_seq_len(context);
    if (train->seq_len() < 1 || train->seq_len() > context) {
      problems->Add(
          absl::StrCat("train.seq_len must be in 1..", context,
                       model.from_base ? " (the base checkpoint's context) (got "
                                       : " (the model's context) (got ",
                       train->seq_len(),
                       model.from_base ? "); lower it" : "); lower it or raise model.context"));
    } else {
      seq_len = train->seq_len();
    }
  } else if (train->has_seq_len()) {
    // With `base` the model's context is not known until the trainer loads it; bound by
    // the largest context any model may have. (An invalid fresh model is reported already.)
    if (problems->IntInRange("train.seq_len", train->seq_len(), 1, kMaxContext)) {
      seq_len = train->seq_len();
    }
  }

  std::optional<int64_t> per_rank;  // sequences per rank per step, once batch_tokens is valid
  if (seq_len.has_value() && ranks.has_value()) {
    const int64_t unit = *seq_len * *ranks;  // <= 65536 * 4096: no overflow
    if (!train->has_batch_tokens()) {
      train->set_batch_tokens(unit * kDefaultBatchSequencesPerRank);
      per_rank = kDefaultBatchSequencesPerRank;
    } else if (train->batch_tokens() <= 0 || train->batch_tokens() % unit != 0) {
      int64_t multiples = train->batch_tokens() / unit;
      if (train->batch_tokens() % unit * 2 >= unit &&
          multiples < std::numeric_limits<int64_t>::max() / unit) {
        ++multiples;
      }
      problems->Add(absl::StrCat(
          "train.batch_tokens must be a ", train->batch_tokens() <= 0 ? "positive " : "",
          "multiple of seq_len x ranks = ", unit, " (got ", train->batch_tokens(), "); use ",
          std::max<int64_t>(multiples, 1) * unit));
    } else {
      per_rank = train->batch_tokens() / unit;
    }
  } else if (train->has_batch_tokens() && train->batch_tokens() <= 0) {
    problems->Add(absl::StrCat("train.batch_tokens must be > 0 (got ", train->batch_tokens(), ")"));
  }
  if (train->has_micro_batch() &&
      problems->IntInRange("train.micro_batch", train->micro_batch(), 1, kMaxMicroBatch) &&
      per_rank.has_value() && *per_rank % train->micro_batch() != 0) {
    const int64_t m = train->micro_batch();
    const int64_t most = std::min(*per_rank, micro_limit);
    int64_t below = std::min(m, most);
    while (*per_rank % below != 0) --below;
    int64_t above = m + 1;
    while (above <= most && *per_rank % above != 0) ++above;
    const std::string use =
        above <= most ? absl::StrCat(below, " or ", above) : absl::StrCat(below);
    problems->Add(absl::StrCat(
        "train.micro_batch must divide the sequences each rank takes per step, "
        "train.batch_tokens / (seq_len x ranks) = ",
        *per_rank, " (got ", m, "); use ", use, ", or a train.batch_tokens that is a multiple of ",
        "seq_len x ranks x micro_batch = ", train->batch_tokens() / *per_rank * m));
  }

  if (!train->has_lr()) train->set_lr(kDefaultLr);
  std::optional<double> lr;
  if (problems->Finite("train.lr", train->lr())) {
    if (train->lr() > 0 && train->lr() <= 1) {
      lr = train->lr();
    } else {
      problems->Add(absl::StrCat("train.lr must be in (0, 1] (got ", Num(train->lr()), ")"));
    }
  }

  if (!train->has_warmup_steps()) train->set_warmup_steps(0);
  if (steps.has_value()) {
    if (train->warmup_steps() < 0 || train->warmup_steps() > *steps) {
      problems->Add(absl::StrCat("train.warmup_steps must be in 0..train.steps = ", *steps,
                                 " (got ", train->warmup_steps(), ")"));
    }
  } else if (train->warmup_steps() < 0) {
    problems->Add(
        absl::StrCat("train.warmup_steps must be >= 0 (got ", train->warmup_steps(), ")"));
  }

  if (train->lr_decay() == forge::v1::LR_DECAY_UNSPECIFIED) {
    train->set_lr_decay(forge::v1::LR_DECAY_COSINE);
  } else if (!forge::v1::LrDecay_IsValid(train->lr_decay())) {
    problems->Add(absl::StrCat("train.lr_decay must be cosine, linear or constant (got ",
                               train->lr_decay(), ")"));
  }

  if (!train->has_min_lr() && lr.has_value()) train->set_min_lr(*lr / 10);
  if (train->has_min_lr() && problems->Finite("train.min_lr", train->min_lr())) {
    if (lr.has_value()) {
      if (train->min_lr() < 0 || train->min_lr() > *lr) {
        problems->Add(absl::StrCat("train.min_lr must be in 0..train.lr = ", Num(*lr), " (got ",
                                   Num(train->min_lr()), ")"));
      }
    } else if (train->min_lr() < 0) {
      problems->Add(absl::StrCat("train.min_lr must be >= 0 (got ", Num(train->min_lr()), ")"));
    }
  }

  if (!train->has_weight_decay()) train->set_weight_decay(kDefaultWeightDecay);
  problems->DoubleInRange("train.weight_decay", train->weight_decay(), 0, 1);
  if (!train->has_grad_clip()) train->set_grad_clip(kDefaultGradClip);
  problems->DoubleInRange("train.grad_clip", train->grad_clip(), 0, kMaxGradClip);
  if (!train->has_seed()) train->set_seed(kDefaultSeed);
  return steps;
}

// An interval in steps: 0 = only at the end; at most train.steps.
bool CheckEvery(absl::string_view path, int64_t every, std::optional<int64_t> steps,
                Problems* problems) {
  if (steps.has_value()) {
    if (every >= 0 && every <= *steps) return true;
    problems->Add(absl::StrCat(path, " must be in 0..train.steps = ", *steps, " (got ", every,
                               "); 0 means only at the end"));
    return false;
  }
  if (every >= 0) return true;
  problems->Add(absl::StrCat(path, " must be >= 0 (got ", every, "); 0 means only at the end"));
  return false;
}

// A list of suites (`field`, e.g. "eval.suites"): at most kMaxEvalSuites `noun`, each named
// once. `check(path, suite)` checks an entry on its own and says whether it may be compared
// with the others (a badly formed name is reported once, not also as a duplicate).
void CheckSuiteList(
    absl::string_view field, const google::protobuf::RepeatedPtrField<std::string>& list,
    absl::string_view noun, Problems* problems,
    const std::function<bool(const std::string& path, const std::string& suite)>& check) {
  if (list.size() > kMaxEvalSuites) {
    problems->Add(
        absl::StrCat(field, " has ", list.size(), " ", noun, "; the limit is ", kMaxEvalSuites));
  }
  absl::flat_hash_map<absl::string_view, int> index_of;
  for (int i = 0; i < list.size(); ++i) {
    const std::string path = absl::StrCat(field, "[", i, "]");
    if (!check(path, list[i])) continue;
    auto [it, inserted] = index_of.emplace(list[i], i);
    if (!inserted) {
      problems->Add(absl::StrCat(path, " ", Quoted(list[i]), " is already ", field, "[", it->second,
                                 "]; list each suite once"));
    }
  }
}

void CheckCheckpointAndEval(JobSpec* spec, std::optional<int64_t> steps, Problems* problems) {
  forge::v1::CheckpointSpec* checkpoint = spec->mutable_checkpoint();
  if (!checkpoint->has_every_steps() && steps.has_value()) {
    checkpoint->set_every_steps(*steps / 10);
  }
  const bool checkpoint_every_ok =
      checkpoint->has_every_steps() &&
      CheckEvery("checkpoint.every_steps", checkpoint->every_steps(), steps, problems);
  if (!checkpoint->has_keep_last()) checkpoint->set_keep_last(kDefaultKeepLast);
  problems->IntInRange("checkpoint.keep_last", checkpoint->keep_last(), kMinKeepLast, kMaxKeepLast);

  forge::v1::EvalSpec* eval = spec->mutable_eval();
  if (!eval->has_every_steps() && checkpoint_every_ok) {
    eval->set_every_steps(checkpoint->every_steps());
  }
  if (eval->has_every_steps()) {
    CheckEvery("eval.every_steps", eval->every_steps(), steps, problems);
  }
  CheckSuiteList("eval.suites", eval->suites(), "datasets", problems,
                 [&](const std::string& path, const std::string& suite) {
                   absl::Status name = ValidateResourceName(path, suite);
                   problems->AddIfError(name);
                   return name.ok();
                 });
}

void CheckGuardAndPromote(JobSpec* spec, Problems* problems) {
  if (spec->has_guard()) {
    forge::v1::GuardSpec* guard = spec->mutable_guard();
    const auto& suites = spec->eval().suites();
    auto check_suite = [&](const std::string& path, const std::string& suite) {
      if (std::find(suites.begin(), suites.end(), suite) == suites.end()) {
        problems->Add(absl::StrCat(path, " ", Quoted(suite), " is not one of eval.suites ",
                                   ShortList(suites), "; add it to eval.suites"));
      }
    };
    if (guard->suites_size() > 0) {
      if (!guard->suite().empty()) {
        problems->Add(absl::StrCat("guard has both suite (", Quoted(guard->suite()),
                                   ") and suites; give one: suites lists every guarded suite"));
      }
      CheckSuiteList("guard.suites", guard->suites(), "suites", problems,
                     [&](const std::string& path, const std::string& suite) {
                       check_suite(path, suite);
                       return true;
                     });
    } else if (guard->suite().empty()) {
      problems->Add(
          absl::StrCat("guard.suite is required (or guard.suites for several); name "
                       "one of eval.suites ",
                       ShortList(suites)));
    } else {
      check_suite("guard.suite", guard->suite());
    }
    if (!guard->has_max_regression()) guard->set_max_regression(kDefaultMaxRegression);
    problems->DoubleInRange("guard.max_regression", guard->max_regression(), 0,
                            kMaxRegressionLimit);
  }
  if (spec->has_promote()) {
    problems->AddIfError(ValidateResourceName("promote.channel", spec->promote().channel()));
    if (!spec->has_guard()) {
      problems->Add("promote needs a guard: add guard: {suite: ..., max_regression: ...}");
    }
  }
}

}  // namespace

absl::Status ValidateAndFillDefaults(JobSpec* spec, const forge::v1::ModelSpec* base_shape) {
  // Work on a copy so an invalid spec is left exactly as it came.
  JobSpec out = *spec;
  Problems problems;

  problems.AddIfError(ValidateIdentifier("name", out.name(), kMaxNameLength));
  ModelInfo model = CheckBaseOrModel(&out, &problems);
  if (model.from_base && base_shape != nullptr) {
    // As the trainer reads it (rank_runner.cc); a shape that does not resolve is left out.
    if (absl::StatusOr<ModelShape> s = ResolveModelShape(*base_shape); s.ok()) model.shape = *s;
  }
  CheckData(out.data(), &problems);
  const std::optional<int> ranks = CheckResources(out.mutable_resources(), model, &problems);
  const std::optional<int64_t> steps =
      CheckTrain(out.mutable_train(), model, ranks, MicroBatchLimit(out, model), &problems);
  if (out.resources().device() == forge::v1::DEVICE_KIND_CUDA && model.shape.has_value() &&
      out.train().micro_batch() > CudaMaxMicroBatch(model.shape->heads)) {
    problems.Add(absl::StrCat(
        "train.micro_batch x ", model.from_base ? "the base model's heads" : "model.heads",
        " must be at most ", kCudaMaxSequenceHeads, " with resources.device: cuda (got ",
        out.train().micro_batch(), " x ", model.shape->heads,
        "; the GPU attention runs one grid row per sequence and head): use "
        "a train.micro_batch of at most ",
        CudaMaxMicroBatch(model.shape->heads)));
  }
  CheckCheckpointAndEval(&out, steps, &problems);
  CheckGuardAndPromote(&out, &problems);
  problems.IntInRange("priority", out.priority(), kMinPriority, kMaxPriority);
  if (!out.has_max_restarts()) out.set_max_restarts(kDefaultMaxRestarts);
  problems.IntInRange("max_restarts", out.max_restarts(), 0, kMaxRestartsLimit);

  if (!problems.empty()) return problems.ToStatus();
  spec->Swap(&out);
  return absl::OkStatus();
}

}  // namespace forge::coordinator
