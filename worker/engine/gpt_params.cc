#include "worker/engine/gpt_params.h"

#include <cmath>
#include <numbers>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace forge::engine {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

// A uniform in (0, 1] from 53 hashed bits.
double UniformAt(uint64_t seed, uint64_t counter) {
  const uint64_t h = Mix(Mix(seed + 0x9E3779B97F4A7C15ULL) ^ (counter * 0x9E3779B97F4A7C15ULL));
  return static_cast<double>((h >> 11) + 1) * 0x1.0p-53;
}

class LayoutBuilder {
 public:
  size_t Add(std::string name, std::vector<int64_t> shape) {
    size_t count = 1;
    for (int64_t d : shape) count *= static_cast<size_t>(d);
    const size_t offset = next_;
    infos_.push_back({std::move(name), std::move(shape), offset, count});
    next_ += count;
    return offset;
  }
  size_t total() const { return next_; }
  std::vector<ParamInfo> Take() { return std::move(infos_); }

 private:
  std::vector<ParamInfo> infos_;
  size_t next_ = 0;
};

GptOffsets Build(const ModelShape& s, LayoutBuilder& b) {
  const int64_t C = s.width;
  GptOffsets o;
  o.wte = b.Add("wte.weight", {s.vocab, C});
  o.wpe = b.Add("wpe.weight", {s.context, C});
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = absl::StrCat("h.", i, ".");
    GptLayerOffsets l;
    l.ln1_w = b.Add(p + "ln_1.weight", {C});
    l.ln1_b = b.Add(p + "ln_1.bias", {C});
    l.qkv_w = b.Add(p + "attn.c_attn.weight", {C, 3 * C});
    l.qkv_b = b.Add(p + "attn.c_attn.bias", {3 * C});
    l.attn_proj_w = b.Add(p + "attn.c_proj.weight", {C, C});
    l.attn_proj_b = b.Add(p + "attn.c_proj.bias", {C});
    l.ln2_w = b.Add(p + "ln_2.weight", {C});
    l.ln2_b = b.Add(p + "ln_2.bias", {C});
    l.fc_w = b.Add(p + "mlp.c_fc.weight", {C, 4 * C});
    l.fc_b = b.Add(p + "mlp.c_fc.bias", {4 * C});
    l.fc_proj_w = b.Add(p + "mlp.c_proj.weight", {4 * C, C});
    l.fc_proj_b = b.Add(p + "mlp.c_proj.bias", {C});
    o.layers.push_back(l);
  }
  o.lnf_w = b.Add("ln_f.weight", {C});
  o.lnf_b = b.Add("ln_f.bias", {C});
  o.total = b.total();
  return o;
}

}  // namespace

double NormalAt(uint64_t seed, uint64_t index) {
  const double u1 = UniformAt(seed, 2 * index), u2 = UniformAt(seed, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::vector<ParamInfo> GptParameterLayout(const ModelShape& shape) {
  LayoutBuilder b;
  Build(shape, b);
  return b.Take();
}

GptOffsets GptParameterOffsets(const ModelShape& shape) {
  LayoutBuilder b;
  return Build(shape, b);
}

template <typename T>
void InitGptParameters(T* params, const ModelShape& shape, uint64_t seed) {
  const double residual_std = 0.02 / std::sqrt(2.0 * shape.layers);
  for (const ParamInfo& p : GptParameterLayout(shape)) {
    const absl::string_view name = p.name;
    double std = 0.0, constant = 0.0;
    if (absl::EndsWith(name, ".bias")) {
      constant = 0.0;
    } else if (absl::StrContains(name, "ln_")) {
      constant = 1.0;
    } else if (absl::EndsWith(name, "c_proj.weight")) {
      std = residual_std;
    } else {
      std = 0.02;
    }
    for (size_t i = 0; i < p.count; ++i) {
      params[p.offset + i] =
          static_cast<T>(std == 0.0 ? constant : std * NormalAt(seed, p.offset + i));
    }
  }
}

template void InitGptParameters<float>(float*, const ModelShape&, uint64_t);
template void InitGptParameters<double>(double*, const ModelShape&, uint64_t);

}  // namespace forge::engine
