#include "worker/engine/sampler_state.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace forge::engine {
namespace {

constexpr int64_t kVersion = 1;

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("sampler state: ", field, " ", what));
}

// Reads obj[key] as an integer in [lo, hi]; `where` prefixes the field name in errors.
absl::StatusOr<int64_t> GetInt(const nlohmann::json& obj, const std::string& where, const char* key,
                               int64_t lo, int64_t hi) {
  const std::string field = absl::StrCat(where, key);
  auto it = obj.find(key);
  if (it == obj.end()) return FieldError(field, "is missing");
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return FieldError(field, "is out of range");
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return FieldError(field, absl::StrCat("must be in [", lo, ", ", hi, "] (got ", v, ")"));
  }
  return v;
}

}  // namespace

nlohmann::json SamplerStateToJson(const SamplerState& state) {
  nlohmann::json j = nlohmann::json::object();
  j["version"] = kVersion;
  j["seed"] = state.seed;
  j["world_size"] = state.world_size;
  j["rank"] = state.rank;
  j["next_step"] = state.next_step;
  nlohmann::json sources = nlohmann::json::array();
  for (const SourceCursor& c : state.sources) {
    nlohmann::json o = nlohmann::json::object();
    o["name"] = c.name;
    o["num_documents"] = c.num_documents;
    o["pass"] = c.pass;
    o["position"] = c.position;
    o["offset"] = c.offset;
    o["tokens"] = c.tokens;
    o["sequences"] = c.sequences;
    sources.push_back(std::move(o));
  }
  j["sources"] = std::move(sources);
  return j;
}

absl::StatusOr<SamplerState> SamplerStateFromJson(const nlohmann::json& json) {
  constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  if (!json.is_object()) return FieldError("(top level)", "must be a JSON object");
  ASSIGN_OR_RETURN(const int64_t version, GetInt(json, "", "version", 0, kMax64));
  if (version != kVersion) {
    return FieldError("version", absl::StrCat("must be ", kVersion, " (got ", version, ")"));
  }
  SamplerState st;
  auto seed = json.find("seed");
  if (seed == json.end()) return FieldError("seed", "is missing");
  if (seed->is_number_unsigned()) {
    st.seed = seed->get<uint64_t>();
  } else if (seed->is_number_integer() && seed->get<int64_t>() >= 0) {
    st.seed = static_cast<uint64_t>(seed->get<int64_t>());
  } else {
    return FieldError("seed", "must be a non-negative integer");
  }
  ASSIGN_OR_RETURN(st.world_size, GetInt(json, "", "world_size", 1, kMax32));
  ASSIGN_OR_RETURN(st.rank, GetInt(json, "", "rank", 0, kMax32));
  ASSIGN_OR_RETURN(st.next_step, GetInt(json, "", "next_step", 0, kMax64));
  auto sources = json.find("sources");
  if (sources == json.end() || !sources->is_array()) {
    return FieldError("sources", "must be an array");
  }
  for (size_t i = 0; i < sources->size(); ++i) {
    const nlohmann::json& o = (*sources)[i];
    const std::string where = absl::StrCat("sources[", i, "].");
    if (!o.is_object()) return FieldError(absl::StrCat("sources[", i, "]"), "must be an object");
    SourceCursor c;
    auto name = o.find("name");
    if (name == o.end() || !name->is_string()) {
      return FieldError(where + "name", "must be a string");
    }
    c.name = name->get<std::string>();
    ASSIGN_OR_RETURN(c.num_documents, GetInt(o, where, "num_documents", 1, kMax64));
    ASSIGN_OR_RETURN(c.pass, GetInt(o, where, "pass", 0, kMax64));
    ASSIGN_OR_RETURN(c.position, GetInt(o, where, "position", 0, kMax64));
    ASSIGN_OR_RETURN(c.offset, GetInt(o, where, "offset", 0, kMax64));
    ASSIGN_OR_RETURN(c.tokens, GetInt(o, where, "tokens", 0, kMax64));
    ASSIGN_OR_RETURN(c.sequences, GetInt(o, where, "sequences", 0, kMax64));
    st.sources.push_back(std::move(c));
  }
  return st;
}

}  // namespace forge::engine
