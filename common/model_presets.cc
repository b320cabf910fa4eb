#include "common/model_presets.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace forge {
namespace {

struct Preset {
  absl::string_view name;
  ModelShape shape;
};

constexpr Preset kPresets[] = {
    {"tiny", {.layers = 4, .heads = 4, .width = 256, .context = 128, .vocab = 256}},
    // GPT-2 small's shape with the vocabulary padded to a multiple of 128 (as llm.c does).
    {"gpt2-124m-shape", {.layers = 12, .heads = 12, .width = 768, .context = 1024, .vocab = 50304}},
};

// User text echoed into a message is escaped and cut short.
std::string Quoted(absl::string_view text) {
  constexpr size_t kMaxEcho = 64;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxEcho)),
                      text.size() > kMaxEcho ? "..." : "", "\"");
}

void CheckRange(absl::string_view field, int value, int lo, int hi,
                std::vector<std::string>* problems) {
  if (value < lo || value > hi) {
    problems->push_back(
        absl::StrCat("model.", field, " must be in ", lo, "..", hi, " (got ", value, ")"));
  }
}

}  // namespace

const std::vector<std::string>& PresetNames() {
  static const auto* const names = [] {
    auto* v = new std::vector<std::string>;
    for (const Preset& p : kPresets) v->emplace_back(p.name);
    return v;
  }();
  return *names;
}

absl::StatusOr<ModelShape> PresetShape(absl::string_view name) {
  for (const Preset& p : kPresets) {
    if (p.name == name) return p.shape;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model preset ", Quoted(name),
                   "; known presets: ", absl::StrJoin(PresetNames(), ", ")));
}

std::optional<ModelShape> ResolveModelShape(const forge::v1::ModelSpec& spec,
                                            std::vector<std::string>* problems) {
  const size_t problems_before = problems->size();
  ModelShape shape;
  if (!spec.preset().empty()) {
    absl::StatusOr<ModelShape> preset = PresetShape(spec.preset());
    if (!preset.ok()) {
      problems->push_back(absl::StrCat("model.preset ", Quoted(spec.preset()),
                                       " is not a preset; use one of ",
                                       absl::StrJoin(PresetNames(), ", ")));
      return std::nullopt;  // the overrides have nothing to apply to
    }
    shape = *preset;
  } else {
    std::vector<absl::string_view> missing;
    if (!spec.has_layers()) missing.push_back("layers");
    if (!spec.has_heads()) missing.push_back("heads");
    if (!spec.has_width()) missing.push_back("width");
    if (!spec.has_context()) missing.push_back("context");
    if (!spec.has_vocab()) missing.push_back("vocab");
    if (missing.size() == 5) {
      problems->push_back(absl::StrCat("model: give a preset (", absl::StrJoin(PresetNames(), ", "),
                                       ") or layers/heads/width/context/vocab"));
      return std::nullopt;
    }
    if (!missing.empty()) {
      problems->push_back(absl::StrCat(
          "model: without a preset, give all of layers/heads/width/context/vocab (missing ",
          absl::StrJoin(missing, ", "), ") or start from a preset (",
          absl::StrJoin(PresetNames(), ", "), ")"));
      return std::nullopt;
    }
  }
  if (spec.has_layers()) shape.layers = spec.layers();
  if (spec.has_heads()) shape.heads = spec.heads();
  if (spec.has_width()) shape.width = spec.width();
  if (spec.has_context()) shape.context = spec.context();
  if (spec.has_vocab()) shape.vocab = spec.vocab();

  CheckRange("layers", shape.layers, kMinLayers, kMaxLayers, problems);
  CheckRange("heads", shape.heads, kMinHeads, kMaxHeads, problems);
  CheckRange("width", shape.width, kMinWidth, kMaxWidth, problems);
  CheckRange("context", shape.context, kMinContext, kMaxContext, problems);
  CheckRange("vocab", shape.vocab, kMinVocab, kMaxVocab, problems);
  if (shape.heads > 0 && shape.width > 0 && shape.width % shape.heads != 0) {
    problems->push_back(absl::StrCat("model.heads must divide model.width (got heads ", shape.heads,
                                     ", width ", shape.width, ")"));
  }
  if (problems->size() != problems_before) return std::nullopt;
  return shape;
}

absl::StatusOr<ModelShape> ResolveModelShape(const forge::v1::ModelSpec& spec) {
  std::vector<std::string> problems;
  std::optional<ModelShape> shape = ResolveModelShape(spec, &problems);
  if (!shape.has_value()) {
    return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  }
  return *shape;
}

int64_t ParameterCount(const ModelShape& shape) {
  const int64_t w = shape.width;
  const int64_t embeddings = (int64_t{shape.vocab} + shape.context) * w;
  const int64_t layer_norm = 2 * w;  // scale and bias
  const int64_t attention = (w * 3 * w + 3 * w) + (w * w + w);
  const int64_t mlp = (w * 4 * w + 4 * w) + (4 * w * w + w);
  const int64_t per_layer = 2 * layer_norm + attention + mlp;
  return embeddings + shape.layers * per_layer + layer_norm;
}

double TrainingFlopsPerToken(const ModelShape& shape, int seq_len) {
  const double n = static_cast<double>(ParameterCount(shape)) -
                   static_cast<double>(shape.context) * shape.width;  // less wpe
  return 6 * n + 12.0 * shape.layers * shape.width * seq_len;
}

}  // namespace forge
