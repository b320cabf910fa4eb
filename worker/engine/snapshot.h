// A checkpoint held in memory: what the training loop hands to a background writer.
//
//   CheckpointSnapshot snap = trainer->Snapshot();        // blocks the step loop: memcpy only
//   std::thread([snap = std::move(snap), dir] {           // any thread, while training goes on
//     absl::Status s = WriteCheckpointSnapshot(snap, dir, lineage);
//   });
//
// The snapshot owns copies of everything a checkpoint holds (parameters, AdamW moments, step,
// the trainer's resumable state with every rank's sampler cursors), so the trainer may keep
// stepping while it is written. Thread safety: a snapshot is a plain value; distinct threads
// may read one snapshot concurrently.
#ifndef FORGE_WORKER_ENGINE_SNAPSHOT_H_
#define FORGE_WORKER_ENGINE_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model_presets.h"
#include "worker/engine/param_info.h"

namespace forge::engine {

struct CheckpointSnapshot {
  int64_t step = 0;                // optimizer steps taken when the snapshot was made
  ModelShape shape;                // for config.json
  std::vector<ParamInfo> tensors;  // names, shapes and offsets into the three buffers
  std::vector<float> params;       // flat, Gpt::params() layout
  std::vector<float> adam_m;       // AdamW first moment, same layout
  std::vector<float> adam_v;       // AdamW second moment, same layout
  // Stored as trainer_state.json's state["trainer"]: step, AdamW step, run identity and the
  // sampler cursors of every rank ("samplers", indexed by rank).
  nlohmann::json trainer_state = nlohmann::json::object();

  // Bytes of parameters and moments held.
  size_t bytes() const { return (params.size() + adam_m.size() + adam_v.size()) * sizeof(float); }
};

// Writes `snapshot` as a checkpoint directory `dir` (checkpoint.h: model.safetensors,
// optimizer.safetensors, trainer_state.json, config.json, MANIFEST.json last). `extra`
// (lineage, mixture, ...; a JSON object or null) is stored in trainer_state.json beside the
// "trainer" key. Errors as WriteCheckpoint. Thread-safe for distinct directories; callable on
// any thread while the trainer that made the snapshot keeps training.
absl::Status WriteCheckpointSnapshot(const CheckpointSnapshot& snapshot, const std::string& dir,
                                     const nlohmann::json& extra = {});

// A 64-bit checksum of the bytes of `data[0..n)` (word-wise FNV-1a style mix; the same bits
// give the same checksum on every machine of the same endianness). Not cryptographic.
uint64_t ParamBytesChecksum(const float* data, size_t n);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_SNAPSHOT_H_
