// YAML job specs -> forge.v1.JobSpec.
//
// YAML is only syntax for the proto: every key is a JobSpec field name exactly as job.proto
// spells it, nested maps are nested messages, lists are repeated fields, and enums take their
// YAML spellings from common/spec_names.h ("mid-training", "cuda", "cosine"). The key sets
// come from the proto descriptors, so a field added to job.proto is accepted without touching
// this parser.
#ifndef FORGE_CLI_SPEC_YAML_H_
#define FORGE_CLI_SPEC_YAML_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "forge/v1/job.pb.h"

namespace forge::cli {

// Parses `yaml_text` (one YAML document) into a JobSpec. `filename` only labels messages.
//
// Checks types, not ranges (the coordinator validates values and names the field). A proto3
// `optional` field is set exactly when its key is present.
//
// Errors are INVALID_ARGUMENT; the message holds one line per problem found (every problem in
// the document, not just the first), each "FILE:LINE:COL: what was wrong", lines and columns
// 1-based, e.g.
//   spec.yaml:7:5: unknown key "lerning_rate" in train; allowed: steps, seq_len, ...
//   spec.yaml:3:10: train.steps: expected an integer, got "2000.5"
// Unknown keys, duplicate keys, wrong types (a string or a quoted number where a number goes,
// a list where a map goes, a fraction for an integer, an integer out of the field's range),
// empty values, unknown enum spellings and YAML syntax errors are all reported.
absl::StatusOr<forge::v1::JobSpec> ParseJobSpecYaml(absl::string_view yaml_text,
                                                    absl::string_view filename);

}  // namespace forge::cli

#endif  // FORGE_CLI_SPEC_YAML_H_
