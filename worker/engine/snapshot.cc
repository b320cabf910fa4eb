#include "worker/engine/snapshot.h"

#include <cstring>

#include "absl/types/span.h"
#include "worker/engine/checkpoint.h"

namespace forge::engine {

absl::Status WriteCheckpointSnapshot(const CheckpointSnapshot& snapshot, const std::string& dir,
                                     const nlohmann::json& extra) {
  const size_t n = snapshot.params.size();
  if (snapshot.adam_m.size() != n || snapshot.adam_v.size() != n) {
    return absl::InvalidArgumentError(
        "checkpoint snapshot: parameters and AdamW moments differ in size");
  }
  CheckpointData data;
  data.step = snapshot.step;
  for (const ParamInfo& p : snapshot.tensors) {
    if (p.offset + p.count > n) {
      return absl::InvalidArgumentError("checkpoint snapshot: tensor " + p.name +
                                        " lies outside the parameter buffer");
    }
    data.model.push_back({p.name, p.shape, absl::MakeConstSpan(snapshot.params).subspan(p.offset, p.count)});
    data.adam_m.push_back({p.name, p.shape, absl::MakeConstSpan(snapshot.adam_m).subspan(p.offset, p.count)});
    data.adam_v.push_back({p.name, p.shape, absl::MakeConstSpan(snapshot.adam_v).subspan(p.offset, p.count)});
  }
  data.state = extra.is_object() ? extra : nlohmann::json::object();
  data.state["trainer"] = snapshot.trainer_state;
  data.hf_config = snapshot.shape;
  return WriteCheckpoint(dir, data);
}

uint64_t ParamBytesChecksum(const float* data, size_t n) {
  // Four independent lanes over 32-byte blocks keep the multiply latency off the critical
  // path (~4x faster than byte-wise FNV-1a), then fold with the length.
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(data);
  const size_t len = n * sizeof(float);
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  uint64_t lane[4] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL, 0x9e3779b97f4a7c15ULL,
                      0xc2b2ae3d27d4eb4fULL};
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, bytes + i + 8 * k, 8);
      lane[k] = (lane[k] ^ w) * kPrime;
    }
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; i < len; ++i) h = (h ^ bytes[i]) * kPrime;
  for (int k = 0; k < 4; ++k) h = (h ^ lane[k] ^ (lane[k] >> 29)) * kPrime;
  h ^= len;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

}  // namespace forge::engine
