// One named tensor inside a model's flat parameter buffer.
#ifndef FORGE_WORKER_ENGINE_PARAM_INFO_H_
#define FORGE_WORKER_ENGINE_PARAM_INFO_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace forge::engine {

struct ParamInfo {
  std::string name;            // Hugging Face GPT-2 name, e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // row-major, as Hugging Face stores it
  size_t offset = 0;           // elements from the start of the buffer
  size_t count = 0;            // product of shape
};

// Weight decay applies to the 2-D tensors (matmul weights and the embeddings), not to biases
// or LayerNorm parameters (GPT-2 / nanoGPT practice).
inline bool IsDecayed(const ParamInfo& p) { return p.shape.size() >= 2; }

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_PARAM_INFO_H_
