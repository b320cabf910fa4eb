#include "common/dataset_manifest.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "common/names.h"
#include "common/status_macros.h"

namespace forge::internal_dataset {
namespace {

using OrderedJson = nlohmann::ordered_json;

// Reads typed fields out of a manifest's JSON, naming the field in every error.
class FieldReader {
 public:
  explicit FieldReader(std::string where) : where_(std::move(where)) {}

  absl::Status Error(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(where_, ": ", what));
  }
  absl::StatusOr<const nlohmann::json*> Get(const nlohmann::json& obj, absl::string_view field,
                                            absl::string_view path) const {
    auto it = obj.find(std::string(field));
    if (it == obj.end()) return Error(absl::StrCat(path, " is missing"));
    return &*it;
  }
  absl::StatusOr<int64_t> Int(const nlohmann::json& obj, absl::string_view field,
                              absl::string_view path) const {
    ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, field, path));
    if (!v->is_number_integer() || v->get<int64_t>() < 0) {
      return Error(absl::StrCat(path, " must be a non-negative integer, got ", v->dump()));
    }
    return v->get<int64_t>();
  }
  absl::StatusOr<std::string> String(const nlohmann::json& obj, absl::string_view field,
                                     absl::string_view path) const {
    ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, field, path));
    if (!v->is_string()) return Error(absl::StrCat(path, " must be a string, got ", v->dump()));
    return v->get<std::string>();
  }
  absl::StatusOr<const nlohmann::json*> Array(const nlohmann::json& obj, absl::string_view field,
                                              absl::string_view path) const {
    ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, field, path));
    if (!v->is_array()) return Error(absl::StrCat(path, " must be an array"));
    return v;
  }

 private:
  const std::string where_;
};

bool IsSha256Hex(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}


}  // namespace

std::string SerializeManifest(const Manifest& m) {
  OrderedJson shards = OrderedJson::array();
  for (const ShardEntry& s : m.shards) {
    shards.push_back({{"file", s.file},
                      {"sha256", s.sha256},
                      {"tokens", s.tokens},
                      {"documents", s.documents},
                      {"bytes", s.bytes}});
  }
  OrderedJson docs = OrderedJson::array();
  for (const ManifestDocument& d : m.documents) {
    docs.push_back({{"hash", d.hash},
                    {"tokens", d.tokens},
                    {"shard", d.shard},
                    {"index", d.index},
                    {"split", d.heldout ? "heldout" : "train"}});
  }
  OrderedJson top = {{"format", "forge.dataset"},
                     {"format_version", kManifestFormatVersion},
                     {"name", m.name},
                     {"tokenizer", m.tokenizer},
                     {"vocab_size", m.vocab_size},
                     {"documents", static_cast<int64_t>(m.documents.size())},
                     {"tokens", m.tokens},
                     {"heldout_fraction", m.heldout_fraction},
                     {"heldout_documents", m.heldout_documents},
                     {"heldout_tokens", m.heldout_tokens},
                     {"duplicates_dropped", m.duplicates_dropped},
                     {"empty_dropped", m.empty_dropped},
                     {"shards", std::move(shards)},
                     {"document_list", std::move(docs)}};
  std::string out = "{\n";
  size_t i = 0;
  for (const auto& [key, value] : top.items()) {
    absl::StrAppend(&out, "  ", OrderedJson(key).dump(), ": ");
    if (value.is_array()) {
      out += "[";
      for (size_t k = 0; k < value.size(); ++k) {
        absl::StrAppend(&out, k == 0 ? "\n    " : ",\n    ", value[k].dump());
      }
      out += value.empty() ? "]" : "\n  ]";
    } else {
      out += value.dump();
    }
    out += ++i < top.size() ? ",\n" : "\n";
  }
  out += "}\n";
  return out;
}


absl::StatusOr<Manifest> ParseManifest(const std::string& path, const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(path, ": not valid JSON (", e.what(), "); prepare the dataset again"));
  }
  FieldReader r(path);
  if (!j.is_object()) return r.Error("not a JSON object");
  ASSIGN_OR_RETURN(const std::string format, r.String(j, "format", "format"));
  if (format != "forge.dataset") {
    return r.Error(absl::StrCat("format is \"", format, "\", not \"forge.dataset\""));
  }
  ASSIGN_OR_RETURN(const int64_t version, r.Int(j, "format_version", "format_version"));
  if (version != kManifestFormatVersion) {
    return r.Error(absl::StrCat("format_version ", version, " is not supported (this build reads ",
                                kManifestFormatVersion, "); use a matching forge"));
  }
  Manifest m;
  ASSIGN_OR_RETURN(m.name, r.String(j, "name", "name"));
  if (absl::Status s = ValidateResourceName("name", m.name); !s.ok()) return r.Error(s.message());
  ASSIGN_OR_RETURN(m.tokenizer, r.String(j, "tokenizer", "tokenizer"));
  ASSIGN_OR_RETURN(const int64_t vocab, r.Int(j, "vocab_size", "vocab_size"));
  if (m.tokenizer != "bytes" || vocab != kBytesVocabSize) {
    return r.Error(absl::StrCat("tokenizer \"", m.tokenizer, "\" with vocab_size ", vocab,
                                " is unknown to this build (it reads \"bytes\", 256)"));
  }
  ASSIGN_OR_RETURN(const nlohmann::json* fraction,
                   r.Get(j, "heldout_fraction", "heldout_fraction"));
  if (!fraction->is_number() || !(fraction->get<double>() >= 0 && fraction->get<double>() < 1)) {
    return r.Error(absl::StrCat("heldout_fraction must be a number in [0, 1), got ",
                                fraction->dump()));
  }
  m.heldout_fraction = fraction->get<double>();
  ASSIGN_OR_RETURN(const int64_t num_docs, r.Int(j, "documents", "documents"));
  ASSIGN_OR_RETURN(m.tokens, r.Int(j, "tokens", "tokens"));

  ASSIGN_OR_RETURN(const nlohmann::json* shards, r.Array(j, "shards", "shards"));
  for (size_t i = 0; i < shards->size(); ++i) {
    const nlohmann::json& s = (*shards)[i];
    const std::string at = absl::StrCat("shards[", i, "]");
    if (!s.is_object()) return r.Error(absl::StrCat(at, " must be an object"));
    ShardEntry e;
    ASSIGN_OR_RETURN(e.file, r.String(s, "file", at + ".file"));
    // Paths are built here, never taken from the file: a manifest cannot point elsewhere.
    if (e.file != ShardFileName(static_cast<int>(i))) {
      return r.Error(absl::StrCat(at, ".file is \"", e.file, "\"; expected \"",
                                  ShardFileName(static_cast<int>(i)), "\""));
    }
    ASSIGN_OR_RETURN(e.sha256, r.String(s, "sha256", at + ".sha256"));
    if (!IsSha256Hex(e.sha256)) return r.Error(at + ".sha256 is not 64 lower-case hex digits");
    ASSIGN_OR_RETURN(e.tokens, r.Int(s, "tokens", at + ".tokens"));
    ASSIGN_OR_RETURN(e.documents, r.Int(s, "documents", at + ".documents"));
    ASSIGN_OR_RETURN(e.bytes, r.Int(s, "bytes", at + ".bytes"));
    if (e.documents == 0) return r.Error(at + ".documents is 0; shards are never empty");
    m.shards.push_back(std::move(e));
  }

  ASSIGN_OR_RETURN(const nlohmann::json* docs, r.Array(j, "document_list", "document_list"));
  if (static_cast<int64_t>(docs->size()) != num_docs) {
    return r.Error(absl::StrCat("document_list has ", docs->size(), " entries but documents is ",
                                num_docs));
  }
  std::vector<int64_t> shard_tokens(m.shards.size(), 0), shard_docs(m.shards.size(), 0);
  size_t shard = 0;
  int64_t index = 0;
  for (size_t i = 0; i < docs->size(); ++i) {
    const nlohmann::json& d = (*docs)[i];
    const std::string at = absl::StrCat("document_list[", i, "]");
    if (!d.is_object()) return r.Error(absl::StrCat(at, " must be an object"));
    while (shard < m.shards.size() && index == m.shards[shard].documents) ++shard, index = 0;
    if (shard == m.shards.size()) {
      return r.Error(absl::StrCat(at, " is beyond the documents the shards hold"));
    }
    ManifestDocument doc;
    ASSIGN_OR_RETURN(doc.hash, r.String(d, "hash", at + ".hash"));
    if (!IsSha256Hex(doc.hash)) return r.Error(at + ".hash is not 64 lower-case hex digits");
    ASSIGN_OR_RETURN(doc.tokens, r.Int(d, "tokens", at + ".tokens"));
    ASSIGN_OR_RETURN(const int64_t doc_shard, r.Int(d, "shard", at + ".shard"));
    ASSIGN_OR_RETURN(doc.index, r.Int(d, "index", at + ".index"));
    if (doc_shard != static_cast<int64_t>(shard) || doc.index != index) {
      return r.Error(absl::StrCat(at, " is shard ", doc_shard, " index ", doc.index,
                                  "; expected shard ", shard, " index ", index,
                                  " (the list follows shard order)"));
    }
    doc.shard = static_cast<int>(shard);
    ASSIGN_OR_RETURN(const std::string split, r.String(d, "split", at + ".split"));
    if (split != "train" && split != "heldout") {
      return r.Error(absl::StrCat(at, ".split must be \"train\" or \"heldout\", got \"", split,
                                  "\""));
    }
    doc.heldout = split == "heldout";
    if (doc.heldout != IsHeldOut(doc.hash, m.heldout_fraction)) {
      return r.Error(absl::StrCat(at, ".split is \"", split, "\" but its hash puts it in the ",
                                  doc.heldout ? "train" : "heldout", " split at fraction ",
                                  m.heldout_fraction));
    }
    shard_tokens[shard] += doc.tokens;
    ++shard_docs[shard];
    ++index;
    m.documents.push_back(std::move(doc));
  }
  int64_t total = 0;
  for (size_t s = 0; s < m.shards.size(); ++s) {
    if (shard_docs[s] != m.shards[s].documents || shard_tokens[s] != m.shards[s].tokens) {
      return r.Error(absl::StrCat("shards[", s, "] claims ", m.shards[s].documents,
                                  " documents and ", m.shards[s].tokens, " tokens; document_list "
                                  "has ", shard_docs[s], " documents and ", shard_tokens[s],
                                  " tokens there"));
    }
    total += m.shards[s].tokens;
  }
  if (total != m.tokens) {
    return r.Error(absl::StrCat("tokens is ", m.tokens, " but the shards hold ", total));
  }
  return m;
}


}  // namespace forge::internal_dataset
