// Token datasets (DESIGN.md "Datasets"): PrepareDataset() turns text into token shards plus a
// manifest; Dataset reads them back after checking them against the manifest.
//
// A dataset is a directory:
//
//   manifest.json       written last (atomically); a directory without it is not a dataset
//   shard-00000.bin     token shards, each holding whole documents in order
//   shard-00001.bin ...
//
// Shard file (every integer little-endian; offsets in bytes from the start of the file):
//
//   0   char[8]  magic "FRGSHRD1"
//   8   u32      format version (kShardFormatVersion = 1)
//   12  u32      header size H = 48 + 8 * (D + 1): where the tokens start
//   16  u64      token count T
//   24  u64      document count D
//   32  u32      vocab size (256 for the "bytes" tokenizer)
//   36  u32      reserved, 0
//   40  u64      reserved, 0
//   48  u64[D+1] document offsets, in tokens: document k of the shard is tokens
//                [offset[k], offset[k+1]); offset[0] = 0, non-decreasing, offset[D] = T
//   H   u16[T]   the tokens; the file is exactly H + 2 * T bytes
//
// manifest.json:
//
//   {"format": "forge.dataset", "format_version": 1, "name": "brown", "tokenizer": "bytes",
//    "vocab_size": 256, "documents": D, "tokens": T, "heldout_fraction": 0.05,
//    "heldout_documents": n, "heldout_tokens": t, "duplicates_dropped": k, "empty_dropped": e,
//    "shards": [{"file": "shard-00000.bin", "sha256": "<hex>", "tokens": T0, "documents": D0,
//                "bytes": B0}, ...],
//    "document_list": [{"hash": "<hex sha256 of the text>", "tokens": 812, "shard": 0,
//                       "index": 0, "split": "train" | "heldout"}, ...]}
//
// document_list is in dataset order: shard by shard, and within a shard by index. A
// document's split depends on its hash alone (IsHeldOut), so it does not change with the
// order in which documents arrive.
#ifndef FORGE_COMMON_DATASET_H_
#define FORGE_COMMON_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace forge {

inline constexpr char kShardMagic[] = "FRGSHRD1";  // 8 bytes, without the terminating NUL
inline constexpr uint32_t kShardFormatVersion = 1;
inline constexpr uint32_t kShardFixedHeaderBytes = 48;
inline constexpr int kManifestFormatVersion = 1;
inline constexpr char kManifestFileName[] = "manifest.json";
inline constexpr int kBytesVocabSize = 256;
inline constexpr int64_t kMaxShardTokens = int64_t{1} << 28;  // keeps the header size a u32

// "shard-00042.bin" for 42.
std::string ShardFileName(int shard);

// Whether the document whose text has SHA-256 `hash_hex` (64 lower-case hex characters) is
// held out at `fraction`: the hash's first 8 bytes, read as a big-endian integer u, satisfy
// u < fraction * 2^64. fraction <= 0 holds out nothing; fraction >= 1 everything.
bool IsHeldOut(absl::string_view hash_hex, double fraction);

struct PrepareOptions {
  // Files or directories. A directory is walked recursively in name order for *.txt and
  // *.jsonl files (hidden entries skipped). A *.txt file is one document, or one per
  // paragraph (blocks separated by blank lines) with split_paragraphs; a *.jsonl file has one
  // document per non-blank line, its string field "text". Other extensions are refused.
  std::vector<std::string> inputs;
  std::string name;     // a resource name (common/names.h)
  std::string out_dir;  // created if missing
  double heldout_fraction = 0.05;  // [0, 1): the share of documents held out, by hash
  bool split_paragraphs = false;   // *.txt only
  bool overwrite = false;  // replace manifest.json and shard-*.bin in a non-empty out_dir
  int64_t shard_tokens = int64_t{16} << 20;  // cap per shard, [1, kMaxShardTokens]; a
                                             // longer document gets a shard of its own
};

struct PrepareSummary {
  std::string manifest_path;
  int64_t input_files = 0;
  int64_t documents = 0;  // kept, after dropping duplicates and blank texts
  int64_t tokens = 0;
  int64_t heldout_documents = 0;
  int64_t duplicates_dropped = 0;  // same hash as a document already kept (first one wins)
  int64_t empty_dropped = 0;       // blank: only whitespace, e.g. "text": "" (in JSONL)
  int shards = 0;
};

// Writes the dataset described above into options.out_dir: documents in input order (files
// in the order given), shards first, manifest.json last. Fails with INVALID_ARGUMENT for bad
// options or input (a JSONL line without a string "text" names FILE:LINE), NOT_FOUND for a
// missing input, FAILED_PRECONDITION when out_dir is not empty and !overwrite, or when no
// document remains. With overwrite, the old manifest is removed before anything is written,
// so an interrupted run never leaves a manifest that disagrees with its shards.
absl::StatusOr<PrepareSummary> PrepareDataset(const PrepareOptions& options);

namespace internal_dataset {
struct ShardMapping;  // one mmap'ed shard file
}  // namespace internal_dataset

enum class VerifyMode {
  kHeaders,  // manifest, and each shard's header, offsets and size against it
  kFull,     // kHeaders, plus each shard's sha256 and every token < vocab_size
};

enum class Split { kTrain, kHeldOut };

// A prepared dataset, read-only. Shards are memory-mapped. Thread-safe: after Open nothing
// changes, and copies share the mappings.
class Dataset {
 public:
  // Reads `dir`/manifest.json and checks every shard against it (see VerifyMode). NOT_FOUND
  // when there is no manifest; DATA_LOSS naming the file and what is wrong when a manifest or
  // shard is malformed, truncated, corrupt or disagrees with the other.
  static absl::StatusOr<Dataset> Open(const std::string& dir, VerifyMode mode);

  const std::string& dir() const { return dir_; }
  const std::string& name() const { return name_; }
  // Lower-case hex SHA-256 of manifest.json: identifies this exact dataset (for lineage).
  const std::string& manifest_sha256() const { return manifest_sha256_; }
  int vocab_size() const { return vocab_size_; }
  double heldout_fraction() const { return heldout_fraction_; }
  int64_t num_documents() const { return static_cast<int64_t>(docs_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

  // Indices of the documents in `split`, ascending.
  const std::vector<int64_t>& Documents(Split split) const {
    return split == Split::kTrain ? train_ : heldout_;
  }
  int64_t SplitTokens(Split split) const;

  // The tokens of document i. REQUIRES: 0 <= i < num_documents(). Valid while any copy of
  // this Dataset lives.
  absl::Span<const uint16_t> Document(int64_t i) const;
  const std::string& DocumentHash(int64_t i) const { return docs_[i].hash; }
  Split DocumentSplit(int64_t i) const { return docs_[i].split; }

 private:
  struct DocRef {
    int shard = 0;
    int64_t begin = 0;   // first token, within the shard
    int64_t length = 0;  // tokens
    std::string hash;
    Split split = Split::kTrain;
  };

  Dataset() = default;

  // Constant after Open.
  std::string dir_, name_, manifest_sha256_;
  int vocab_size_ = 0;
  double heldout_fraction_ = 0;
  int64_t num_tokens_ = 0;
  std::vector<std::shared_ptr<const internal_dataset::ShardMapping>> shards_;
  std::vector<DocRef> docs_;
  std::vector<int64_t> train_, heldout_;
};

}  // namespace forge

#endif  // FORGE_COMMON_DATASET_H_
