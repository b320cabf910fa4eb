// Held-out evaluation: mean loss and bits per byte of a dataset's held-out split.
#ifndef FORGE_WORKER_ENGINE_EVAL_H_
#define FORGE_WORKER_ENGINE_EVAL_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "worker/engine/model_backend.h"

namespace forge {
class Communicator;
}  // namespace forge

namespace forge::engine {

struct EvalResult {
  double loss = 0;           // mean cross-entropy per predicted token, nats
  double bits_per_byte = 0;  // loss / ln 2 (byte-level tokens: one token is one byte)
  int64_t tokens = 0;        // predicted tokens counted
  int64_t documents = 0;     // held-out documents read
};

// Runs `model` (forward only; its gradients are untouched) over the held-out documents of
// `data`, each document on its own (positions restart at 0; a document longer than
// seq_len + 1 is read in windows that overlap by one token so that every token after the first
// is predicted exactly once). At most `max_tokens` predicted tokens (0 = all). Deterministic.
// FAILED_PRECONDITION when the split is empty.
//
// With a communicator of world size n > 1, the ranks share the work: every rank walks the same
// windows in the same order (so the token and document counts need no exchange), evaluates
// window w only when w % n is its rank, and one all-reduce of each rank's loss sum (in its own
// slots, split exactly into two floats) lets every rank add them in rank order. Every rank must
// call it at the same point, with the same arguments, and every rank returns the same result.
// When one rank's forward pass fails, every rank returns an error (the others name the
// failure as another rank's), so no rank is left waiting in a collective.
absl::StatusOr<EvalResult> EvaluateHeldOut(ModelBackend& model, const Dataset& data, int seq_len,
                                           int batch, int64_t max_tokens = 0,
                                           Communicator* comm = nullptr);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_EVAL_H_
