// Where each GPT-2 tensor lives in the flat parameter buffer, and how it is initialised.
//
// Order (Hugging Face GPT2Model state-dict order, names without the "transformer." prefix):
//   wte.weight [V,C], wpe.weight [T,C],
//   per layer i: h.i.ln_1.weight [C], h.i.ln_1.bias [C], h.i.attn.c_attn.weight [C,3C],
//     h.i.attn.c_attn.bias [3C], h.i.attn.c_proj.weight [C,C], h.i.attn.c_proj.bias [C],
//     h.i.ln_2.weight [C], h.i.ln_2.bias [C], h.i.mlp.c_fc.weight [C,4C],
//     h.i.mlp.c_fc.bias [4C], h.i.mlp.c_proj.weight [4C,C], h.i.mlp.c_proj.bias [C],
//   ln_f.weight [C], ln_f.bias [C].
// Linear weights use the Conv1D layout [in, out]. The total is ParameterCount(shape).
#ifndef FORGE_WORKER_ENGINE_GPT_PARAMS_H_
#define FORGE_WORKER_ENGINE_GPT_PARAMS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/model_presets.h"
#include "worker/engine/param_info.h"

namespace forge::engine {

// Offsets (in elements) of one layer's tensors.
struct GptLayerOffsets {
  size_t ln1_w, ln1_b, qkv_w, qkv_b, attn_proj_w, attn_proj_b;
  size_t ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
};

struct GptOffsets {
  size_t wte, wpe;
  std::vector<GptLayerOffsets> layers;
  size_t lnf_w, lnf_b;
  size_t total;
};

// The tensors of `shape` in buffer order. REQUIRES: shape fields >= 1.
std::vector<ParamInfo> GptParameterLayout(const ModelShape& shape);

// The same layout as typed offsets, for the model's own use.
GptOffsets GptParameterOffsets(const ModelShape& shape);

// GPT-2's initialisation: weights and embeddings N(0, 0.02), the two residual projections
// (attn.c_proj.weight, mlp.c_proj.weight) N(0, 0.02 / sqrt(2 · layers)), biases 0, LayerNorm
// weight 1 and bias 0. Element i's value is a function of (seed, i) alone (a counter-based
// generator), so the same seed gives the same bits, and float and double models initialised
// from one seed hold the same values up to rounding. REQUIRES: params holds
// ParameterCount(shape) values.
template <typename T>
void InitGptParameters(T* params, const ModelShape& shape, uint64_t seed);

// The standard normal sample number `index` of the stream `seed` (Box-Muller on a
// splitmix64 hash of the pair).
double NormalAt(uint64_t seed, uint64_t index);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_GPT_PARAMS_H_
