// The mixture sampler's resumable state (cursors and counters) and its JSON form for
// trainer_state.json.
#ifndef FORGE_WORKER_ENGINE_SAMPLER_STATE_H_
#define FORGE_WORKER_ENGINE_SAMPLER_STATE_H_

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace forge::engine {

// Where one rank stands in one source, plus what it has consumed from it.
struct SourceCursor {
  std::string name;
  int64_t num_documents = 0;  // the source's document count when saved; checked on restore
  int64_t pass = 0;           // current pass over the source
  int64_t position = 0;       // index into the pass's permutation, [0, num_documents)
  int64_t offset = 0;         // tokens of the current document already read; == its length
                              // means the separator comes next
  int64_t tokens = 0;         // stream tokens consumed by this rank (seq_len per sequence)
  int64_t sequences = 0;      // sequences this rank drew from the source

  bool operator==(const SourceCursor&) const = default;
};

// One rank's sampler state. Each rank has its own; a checkpoint must keep all of them.
struct SamplerState {
  uint64_t seed = 0;
  int32_t world_size = 0;
  int32_t rank = 0;
  int64_t next_step = 0;              // the step the sampler's NextBatch expects next
  std::vector<SourceCursor> sources;  // mixture order

  bool operator==(const SamplerState&) const = default;
};

// {"version": 1, "seed": u64, "world_size", "rank", "next_step",
//  "sources": [{"name", "num_documents", "pass", "position", "offset", "tokens",
//  "sequences"}, ...]}
nlohmann::json SamplerStateToJson(const SamplerState& state);

// Inverse of SamplerStateToJson. INVALID_ARGUMENT naming the field (`sources[1].pass`) when a
// field is missing, mistyped or out of its type's range, or the version is unknown. Range
// checks against the datasets are MixtureSampler::Restore's job.
absl::StatusOr<SamplerState> SamplerStateFromJson(const nlohmann::json& json);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_SAMPLER_STATE_H_
