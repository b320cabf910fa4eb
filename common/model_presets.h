// Model shapes: the named presets, resolving a ModelSpec (preset plus per-field overrides)
// to a shape, and the parameter count of a shape.
#ifndef FORGE_COMMON_MODEL_PRESETS_H_
#define FORGE_COMMON_MODEL_PRESETS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "forge/v1/job.pb.h"

namespace forge {

// A GPT-style decoder (DESIGN.md "Model"): pre-LayerNorm, GELU MLP, learned positions, tied
// embeddings.
struct ModelShape {
  int layers = 0;
  int heads = 0;
  int width = 0;    // embedding dimension
  int context = 0;  // maximum sequence length, tokens
  int vocab = 0;    // tokens

  friend bool operator==(const ModelShape&, const ModelShape&) = default;
};

// Inclusive bounds of each field (job.proto ModelSpec). Heads must also divide width.
inline constexpr int kMinLayers = 1, kMaxLayers = 96;
inline constexpr int kMinHeads = 1, kMaxHeads = 128;
inline constexpr int kMinWidth = 8, kMaxWidth = 16384;
inline constexpr int kMinContext = 8, kMaxContext = 65536;
inline constexpr int kMinVocab = 2, kMaxVocab = 1048576;

// The GPU backend's matmuls (cuBLASLt) need 16-byte aligned bias vectors, and every bias in the
// packed parameter buffer starts at a multiple of width: in bf16 that takes a width that is a
// multiple of 8. A cuda job of another width is refused at submission (a fresh model's by
// spec validation, a base checkpoint's once it is resolved) and by the backend itself.
inline constexpr int kCudaWidthMultiple = 8;

// The GPU attention runs a grid row per (sequence, head) pair of a micro-batch, and CUDA caps
// a grid's second dimension at 65535: micro_batch x heads may not exceed it on cuda (spec
// validation, the trainer's default micro-batch and the backend all apply it).
inline constexpr int kCudaMaxSequenceHeads = 65535;

// The largest micro-batch the GPU attention takes for a model of `heads` heads (>= 1 taken for
// anything smaller): kCudaMaxSequenceHeads / heads, so m <= it exactly when m x heads fits.
inline int CudaMaxMicroBatch(int heads) { return kCudaMaxSequenceHeads / (heads < 1 ? 1 : heads); }

// The preset names, in a fixed order: {"tiny", "gpt2-124m-shape"}.
const std::vector<std::string>& PresetNames();

// The shape of preset `name`; INVALID_ARGUMENT listing the known presets when there is none.
absl::StatusOr<ModelShape> PresetShape(absl::string_view name);

// The shape `spec` describes: the preset's numbers with each field that is set in `spec`
// overriding its own; without a preset, all five numbers must be set. Checks every field's
// range and that heads divides width. INVALID_ARGUMENT lists every problem, joined by "; ",
// each naming its field as the user writes it ("model.heads must divide model.width...").
absl::StatusOr<ModelShape> ResolveModelShape(const forge::v1::ModelSpec& spec);

// The same, for callers that collect the problems of a larger message: appends one message
// per problem to `*problems` and returns nullopt when there was any. REQUIRES: problems.
std::optional<ModelShape> ResolveModelShape(const forge::v1::ModelSpec& spec,
                                            std::vector<std::string>* problems);

// Trainable parameters of `shape`: token and position embeddings, per layer two LayerNorms
// (scale and bias), attention qkv and output projections with biases and a 4x-wide MLP with
// biases, a final LayerNorm; the output head is tied to the token embedding (no extra
// parameters). GPT-2 small (12, 12, 768, context 1024, vocab 50257) has 124,439,808.
// REQUIRES: every field >= 0.
int64_t ParameterCount(const ModelShape& shape);

// Training FLOPs per token at sequence length `seq_len` (forward and backward), nanoGPT's
// estimate_mfu and PaLM's appendix B: 6·N for the parameters' products (N without the
// position embeddings, which are looked up, not multiplied) plus 12·L·C·T for attention's
// scores and weighted sums. GPT-2 small at 1024: about 855 MFLOP. What MFU (model FLOPs
// utilisation) divides by the device's peak.
double TrainingFlopsPerToken(const ModelShape& shape, int seq_len);

}  // namespace forge

#endif  // FORGE_COMMON_MODEL_PRESETS_H_
