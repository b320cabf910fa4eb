// The data-mixture sampler: decides which dataset each training sequence comes from and cuts
// the sequences out of each dataset's document stream.
//
// Steps are 0-based (the first optimizer step is 0).
//
// Source choice. At step t the weights in force are WeightsAt(t) (the mixture, or the schedule
// interpolated at fraction t / total_steps). The step's N = world_size * sequences_per_rank
// slots (slot g = rank * sequences_per_rank + position) are stratified: a keyed pseudo-random
// permutation (seed, t) sends slot g to stratum π(g) in [0, N), the slot's uniform draw is
// u = (π(g) + o_t) / N with a per-step offset o_t in [0, 1), and the slot takes the first
// source whose cumulative weight exceeds u. The offsets are a golden-ratio Weyl sequence
// o_t = frac(U(seed) + t * 0.618...), evenly spread over any run of steps. Each slot is
// marginally a fair draw; each source gets floor or ceil of N * weight slots per step (summed
// over ranks), and the rounding errors of consecutive steps cancel rather than accumulate.
// The choice is a pure function of (seed, step, rank, position), the world size, the batch
// size and the weights: no state, no call order.
//
// Document order. Each source's endless document stream is pass 0, pass 1, ... where pass p
// visits all D documents in a pseudo-random permutation keyed by (seed, source name, p). Rank r
// reads the stream's documents k = r, r + W, r + 2W, ... (W = world_size), so in every pass
// the ranks together read each document exactly once and no two ranks read the same one.
// A rank's token stream for a source is its documents' tokens, each followed by
// `separator_token`. A sequence is the next seq_len + 1 tokens of that stream (inputs, and
// targets shifted by one); the cursor then advances by seq_len, so the last target of one
// sequence is the first input of the next from the same source and every stream token is a
// target exactly once.
#ifndef FORGE_WORKER_ENGINE_MIXTURE_SAMPLER_H_
#define FORGE_WORKER_ENGINE_MIXTURE_SAMPLER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/document_source.h"
#include "worker/engine/sampler_state.h"

namespace forge::engine {

// One source of the mixture (job spec `data.mixture[i]`).
struct MixtureSource {
  std::string name;   // dataset name; non-empty, unique within the mixture
  double weight = 0;  // > 0 and finite; ignored when a schedule is given
  std::shared_ptr<const DocumentSource> documents;  // training split; >= 1 document
};

// One point of the mixture schedule (job spec `data.schedule[i]`).
struct MixtureSchedulePoint {
  double at = 0;  // fraction of total_steps in [0, 1]; strictly increasing across points
  std::map<std::string, double> weights;  // source -> weight >= 0; absent = 0; sum > 0
};

struct MixtureOptions {
  // Empty: the mixture weights throughout. Otherwise the weights at step t are the schedule at
  // fraction t / total_steps: linear between points, constant before the first and after the
  // last (the mixture weights are then unused).
  std::vector<MixtureSchedulePoint> schedule;
  int64_t total_steps = 1000;      // train.steps; >= 1
  uint64_t seed = 1;               // train.seed
  int32_t world_size = 1;          // resources.ranks; >= 1
  int32_t rank = 0;                // this rank; in [0, world_size)
  int32_t seq_len = 256;           // tokens per sequence; >= 1
  int32_t sequences_per_rank = 8;  // sequences per rank per step; >= 1
  int32_t separator_token = 0;     // written after every document; >= 0 (0 for byte-level)
};

// Not thread-safe: owned by one rank's training loop. Movable.
class MixtureSampler {
 public:
  // Validates and builds a sampler positioned at step 0 with fresh cursors. Errors are
  // INVALID_ARGUMENT naming the job-spec field (`data.mixture[1].weight`,
  // `data.schedule[0].weights.acme-tickets`, `train.seq_len`, ...).
  static absl::StatusOr<MixtureSampler> Create(MixtureOptions options,
                                               std::vector<MixtureSource> sources);

  // Normalised weights in force at `step` (mixture order; sum 1). Pure.
  std::vector<double> WeightsAt(int64_t step) const;

  // Source index of sequence `position` of `rank`'s batch at `step`. Pure.
  // REQUIRES: 0 <= rank < world_size, 0 <= position < sequences_per_rank.
  int SourceOf(int64_t step, int32_t rank, int32_t position) const;

  // Fills this rank's batch for `step`: row i of `inputs` / `targets` (each
  // sequences_per_rank * seq_len, row-major) is sequence i, and (*source_of_sequence)[i] its
  // source index (resized; may be null). Advances cursors and counters.
  // FAILED_PRECONDITION unless step == state().next_step (no step may be skipped or repeated);
  // INVALID_ARGUMENT if a span has the wrong size. Nothing changes on error.
  absl::Status NextBatch(int64_t step, absl::Span<int32_t> inputs, absl::Span<int32_t> targets,
                         std::vector<int>* source_of_sequence);

  // Snapshot of cursors and counters; Restore(state()) later continues bit-identically.
  SamplerState state() const;

  // Replaces cursors and counters with `state`. FAILED_PRECONDITION naming the source if it does
  // not fit this sampler (seed, world size, rank, source names or document counts differ);
  // INVALID_ARGUMENT if a cursor is out of range. All or nothing.
  absl::Status Restore(const SamplerState& state);

  int num_sources() const { return static_cast<int>(sources_.size()); }
  const std::string& source_name(int i) const { return sources_[i].name; }
  const MixtureOptions& options() const { return options_; }

 private:
  MixtureSampler(MixtureOptions options, std::vector<MixtureSource> sources);

  int Choose(int64_t step, int64_t slot, const std::vector<double>& cumulative) const;
  int64_t DocumentAt(int s, int64_t pass, int64_t position) const;
  void Advance(int s, int64_t n, int32_t* out);  // `out` may be null
  int32_t Peek(int s) const;

  // Constant after construction.
  MixtureOptions options_;
  std::vector<MixtureSource> sources_;
  std::vector<uint64_t> name_keys_;                    // hash of each source name
  std::vector<std::vector<double>> schedule_weights_;  // [point][source], raw

  // Mutated by NextBatch / Restore.
  int64_t next_step_ = 0;
  std::vector<SourceCursor> cursors_;
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_MIXTURE_SAMPLER_H_
