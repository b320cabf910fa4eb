// The YAML spellings of the JobSpec enums ("pre-training", "cuda", "cosine"...), both ways.
// The CLI parses them from YAML and prints them; the coordinator uses them in messages.
#ifndef FORGE_COMMON_SPEC_NAMES_H_
#define FORGE_COMMON_SPEC_NAMES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "forge/v1/job.pb.h"

namespace forge {

// "pre-training", "mid-training", "post-training"; "unspecified" for STAGE_UNSPECIFIED and
// any value outside the enum.
std::string StageName(forge::v1::Stage stage);

// "cpu", "cuda"; "unspecified" for DEVICE_KIND_UNSPECIFIED and any value outside the enum.
std::string DeviceKindName(forge::v1::DeviceKind kind);

// "cosine", "linear", "constant"; "unspecified" for LR_DECAY_UNSPECIFIED (which the job spec
// treats as cosine) and any value outside the enum.
std::string LrDecayName(forge::v1::LrDecay decay);

// The reverse of the above. Exact, case-sensitive match of a specified value's name;
// INVALID_ARGUMENT naming the accepted spellings otherwise ("unspecified" is not accepted).
// The message does not name a field: the caller prefixes its path.
absl::StatusOr<forge::v1::Stage> ParseStage(absl::string_view text);
absl::StatusOr<forge::v1::DeviceKind> ParseDeviceKind(absl::string_view text);
absl::StatusOr<forge::v1::LrDecay> ParseLrDecay(absl::string_view text);

}  // namespace forge

#endif  // FORGE_COMMON_SPEC_NAMES_H_
