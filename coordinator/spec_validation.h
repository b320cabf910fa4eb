// Validation of a submitted JobSpec against the ranges documented in job.proto, and filling
// of the documented defaults so a stored job shows the values it runs with.
#ifndef FORGE_COORDINATOR_SPEC_VALIDATION_H_
#define FORGE_COORDINATOR_SPEC_VALIDATION_H_

#include "absl/status/status.h"
#include "forge/v1/job.pb.h"

namespace forge::coordinator {

// Checks every field of `*spec` against job.proto and, when all are valid, fills in every
// default that applies (train.*, resources.*, checkpoint.*, eval.every_steps,
// guard.max_regression, max_restarts) and, for a fresh model, the five model numbers that
// the preset and overrides resolve to (so a later change to a preset never changes an
// accepted job). Returns OK in that case.
//
// Otherwise returns INVALID_ARGUMENT and leaves `*spec` unchanged. The message starts with
// "job spec: " and lists every problem found (the first 20, then "and N more"), joined by
// "; "; each names its field as the user writes it in YAML and says what to do, e.g.
// "data.mixture[1].weight must be > 0 (got -0.2)".
//
// With `base`, the model's shape comes from the base checkpoint. Without `base_shape` (a
// schedule's spec, whose base resolves anew at each slot) train.seq_len is checked only
// against the largest context any model may have, and an unset train.seq_len and
// train.batch_tokens stay unset, as does any check that needs them (train.micro_batch). With
// `base_shape` (the resolved base, at submission; ignored when it is not a valid shape) the train
// checks and defaults apply as for a fresh model of that shape: seq_len = context,
// batch_tokens = seq_len x ranks x 8, micro_batch against that share and the heads. (The
// base's width on cuda is checked where the base is resolved, submission.h.)
//
// REQUIRES: spec != nullptr. Pure function of its input; thread-compatible.
absl::Status ValidateAndFillDefaults(forge::v1::JobSpec* spec,
                                     const forge::v1::ModelSpec* base_shape = nullptr);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SPEC_VALIDATION_H_
