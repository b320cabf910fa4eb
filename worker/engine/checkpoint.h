// Checkpoint directories (DESIGN.md "Model, data and checkpoints"): what a trainer writes,
// what resume and export read, and what the coordinator verifies before committing one.
//
// A checkpoint is a directory holding
//
//   model.safetensors      the parameters, F32, names in the Hugging Face GPT-2 layout
//                          ("wte.weight", "h.0.attn.c_attn.weight", ...), metadata
//                          {"format": "pt"} (transformers needs it) and {"step": "<step>"}
//   optimizer.safetensors  AdamW moments, F32: "m.<param>" for every parameter, then
//                          "v.<param>", each shaped like its parameter; metadata
//                          {"format": "pt", "optimizer": "adamw", "step": "<step>"}
//   trainer_state.json     {"format": "forge.trainer_state", "format_version": 1,
//                           "step": <step>, "state": {...}}; "state" is the caller's opaque
//                          object (sampler cursors, RNG, mixture, lineage)
//   MANIFEST.json          written last: {"format": "forge.checkpoint", "format_version": 1,
//                          "files": [{"name", "bytes", "sha256"}, ...],
//                          "manifest_sha256": sha256 of this object's compact JSON without
//                          this key}, so a damaged manifest is told apart from damaged data
//
// Every file is written to a temporary name, fsync'ed and renamed, and the directory is
// fsync'ed; MANIFEST.json goes last, so a directory without it is torn (the writer died) and
// is never loaded. Files in the directory that the manifest does not list are ignored (the
// loaded content is fully covered by the manifest; stray files such as an editor's backup or
// an NFS temporary must not make a good checkpoint unusable).
//
// Thread safety: the functions are thread-safe for distinct directories.
#ifndef FORGE_WORKER_ENGINE_CHECKPOINT_H_
#define FORGE_WORKER_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model_presets.h"

namespace forge::engine {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr char kCheckpointModelFile[] = "model.safetensors";
inline constexpr char kCheckpointOptimizerFile[] = "optimizer.safetensors";
inline constexpr char kCheckpointTrainerStateFile[] = "trainer_state.json";
inline constexpr char kCheckpointManifestFile[] = "MANIFEST.json";
inline constexpr char kCheckpointHfConfigFile[] = "config.json";

// One named F32 tensor to write; `data` is not owned and must outlive WriteCheckpoint.
struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
  absl::Span<const float> data;  // row-major, product(shape) elements
};

// Everything a checkpoint holds, as the trainer hands it over.
struct CheckpointData {
  int64_t step = 0;  // optimizer steps taken (also AdamW's bias-correction count)
  // Parameters in the order to store them, Hugging Face GPT-2 names.
  std::vector<CheckpointTensor> model;
  // AdamW first and second moments: the same names, shapes and order as `model` (the writer
  // adds the "m." / "v." prefixes).
  std::vector<CheckpointTensor> adam_m;
  std::vector<CheckpointTensor> adam_v;
  // The caller's resumable state (sampler cursors, RNG, mixture, lineage: parent checkpoint,
  // base stage, datasets and tokens seen). Must be a JSON object; stored verbatim.
  nlohmann::json state = nlohmann::json::object();
  // When set, config.json (WriteHfConfigJson of this shape) is written too and listed in
  // MANIFEST.json, so the directory exports as a Hugging Face model as it is.
  std::optional<ModelShape> hf_config;
};

// One tensor read back; owns its data.
struct LoadedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A checkpoint read back, bit for bit what CheckpointData held.
struct LoadedCheckpoint {
  int64_t step = 0;
  std::vector<LoadedTensor> model;   // in file order
  std::vector<LoadedTensor> adam_m;  // names without the "m." prefix, model's order
  std::vector<LoadedTensor> adam_v;  // names without the "v." prefix, model's order
  nlohmann::json state;
};

// Writes `data` as a checkpoint into `dir` (created with missing parents), durably, manifest
// last. A directory left torn by an earlier attempt (no MANIFEST.json) is written over.
// ALREADY_EXISTS when `dir` already holds a MANIFEST.json (a complete checkpoint is never
// overwritten); INVALID_ARGUMENT naming the tensor when a name is empty or repeated, a data
// size does not match its shape, the moments do not mirror the model, the step is negative
// or `state` is not a JSON object; INTERNAL naming the path on I/O errors.
absl::Status WriteCheckpoint(const std::string& dir, const CheckpointData& data);

// Reads the checkpoint in `dir` after checking, against MANIFEST.json, that every listed file
// exists with the listed size and sha256, that the manifest lists the three data files, and
// that the safetensors files and trainer_state.json are well formed and agree (F32, every
// parameter has both moments of its shape, the same step everywhere). Errors name the file:
// NOT_FOUND when `dir` does not exist; FAILED_PRECONDITION when it has no MANIFEST.json (torn:
// resume from another checkpoint) or was written by a newer format version; DATA_LOSS for
// any missing, truncated, corrupt or inconsistent file.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir);

// The same checks as LoadCheckpoint without keeping the data: files are hashed in a stream
// and only the safetensors headers are parsed, so memory stays small for large checkpoints.
absl::Status VerifyCheckpoint(const std::string& dir);

// Writes `dir`/config.json (atomically) describing `shape` as a Hugging Face GPT-2 model
// (model_type gpt2, GPT2LMHeadModel, gelu_new, layer_norm_epsilon 1e-5, tied embeddings), so
// a directory holding it and model.safetensors loads with transformers. INTERNAL on I/O error.
absl::Status WriteHfConfigJson(const std::string& dir, const ModelShape& shape);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_CHECKPOINT_H_
