// manifest.json of a prepared dataset: its model, and reading and writing it.
//
// Internal to common/dataset.cc (the reader and the preparer); not a public API.
#ifndef FORGE_COMMON_DATASET_MANIFEST_H_
#define FORGE_COMMON_DATASET_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"

namespace forge::internal_dataset {

struct ShardEntry {
  std::string file, sha256;
  int64_t tokens = 0, documents = 0, bytes = 0;
};

struct ManifestDocument {
  std::string hash;
  int64_t tokens = 0;
  int shard = 0;
  int64_t index = 0;
  bool heldout = false;
};

struct Manifest {
  std::string name;
  std::string tokenizer = "bytes";
  int vocab_size = kBytesVocabSize;
  double heldout_fraction = 0;
  int64_t tokens = 0, heldout_tokens = 0, heldout_documents = 0;
  int64_t duplicates_dropped = 0, empty_dropped = 0;
  std::vector<ShardEntry> shards;
  std::vector<ManifestDocument> documents;
};

// The manifest as JSON text (top-level keys one a line, one array element a line).
std::string SerializeManifest(const Manifest& m);

// Parses and checks a manifest read from `path`; DATA_LOSS naming the field otherwise.
absl::StatusOr<Manifest> ParseManifest(const std::string& path, const std::string& text);

}  // namespace forge::internal_dataset

#endif  // FORGE_COMMON_DATASET_MANIFEST_H_
