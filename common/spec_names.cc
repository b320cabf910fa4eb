#include "common/spec_names.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace forge {
namespace {

using forge::v1::DeviceKind;
using forge::v1::LrDecay;
using forge::v1::Stage;

constexpr absl::string_view kUnspecified = "unspecified";

template <typename Enum, size_t N>
std::string NameOf(const std::pair<Enum, absl::string_view> (&table)[N], Enum value) {
  for (const auto& [e, name] : table) {
    if (e == value) return std::string(name);
  }
  return std::string(kUnspecified);
}

// `what` names the kind of value for the message ("stage"); `choices` lists the spellings.
template <typename Enum, size_t N>
absl::StatusOr<Enum> Parse(const std::pair<Enum, absl::string_view> (&table)[N],
                           absl::string_view text, absl::string_view what,
                           absl::string_view choices) {
  for (const auto& [e, name] : table) {
    if (name == text) return e;
  }
  // Bound what is echoed back: the text comes from a user.
  constexpr size_t kMaxEcho = 64;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " \"", absl::CHexEscape(text.substr(0, kMaxEcho)),
                   text.size() > kMaxEcho ? "..." : "", "\"; use ", choices));
}

constexpr std::pair<Stage, absl::string_view> kStages[] = {
    {forge::v1::STAGE_PRE_TRAINING, "pre-training"},
    {forge::v1::STAGE_MID_TRAINING, "mid-training"},
    {forge::v1::STAGE_POST_TRAINING, "post-training"},
};
constexpr std::pair<DeviceKind, absl::string_view> kDeviceKinds[] = {
    {forge::v1::DEVICE_KIND_CPU, "cpu"},
    {forge::v1::DEVICE_KIND_CUDA, "cuda"},
};
constexpr std::pair<LrDecay, absl::string_view> kLrDecays[] = {
    {forge::v1::LR_DECAY_COSINE, "cosine"},
    {forge::v1::LR_DECAY_LINEAR, "linear"},
    {forge::v1::LR_DECAY_CONSTANT, "constant"},
};

}  // namespace

std::string StageName(Stage stage) { return NameOf(kStages, stage); }
std::string DeviceKindName(DeviceKind kind) { return NameOf(kDeviceKinds, kind); }
std::string LrDecayName(LrDecay decay) { return NameOf(kLrDecays, decay); }

absl::StatusOr<Stage> ParseStage(absl::string_view text) {
  return Parse(kStages, text, "stage", "pre-training, mid-training or post-training");
}

absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view text) {
  return Parse(kDeviceKinds, text, "device kind", "cpu or cuda");
}

absl::StatusOr<LrDecay> ParseLrDecay(absl::string_view text) {
  return Parse(kLrDecays, text, "lr_decay", "cosine, linear or constant");
}

}  // namespace forge
