#include "common/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unordered_set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "common/crypto.h"
#include "common/dataset_manifest.h"
#include "common/file_util.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace forge {
namespace {

namespace fs = std::filesystem;
using internal_dataset::Manifest;
using internal_dataset::ManifestDocument;
using internal_dataset::ParseManifest;
using internal_dataset::SerializeManifest;
using internal_dataset::ShardEntry;
using internal_dataset::ShardMapping;

static_assert(std::endian::native == std::endian::little,
              "Dataset::Document hands out the little-endian shard tokens as they are");

// --- shards --------------------------------------------------------------------------------

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Accumulates whole documents into shards of at most `cap` tokens (unless one document is
// longer) and writes each shard when it is full. Owned by one thread.
class ShardWriter {
 public:
  ShardWriter(std::string dir, int64_t cap) : dir_(std::move(dir)), cap_(cap) {}

  // Appends `text` as byte tokens; sets the shard and index it lands at.
  absl::Status Add(absl::string_view text, int* shard, int64_t* index) {
    const int64_t n = static_cast<int64_t>(text.size());
    if (offsets_.size() > 1 && static_cast<int64_t>(offsets_.back()) + n > cap_) {
      RETURN_IF_ERROR(Flush());
    }
    for (unsigned char c : text) {
      tokens_.push_back(static_cast<char>(c));
      tokens_.push_back('\0');
    }
    *shard = static_cast<int>(shards_.size());
    *index = static_cast<int64_t>(offsets_.size()) - 1;
    offsets_.push_back(offsets_.back() + static_cast<uint64_t>(n));
    return absl::OkStatus();
  }

  // Writes the last, partly filled shard.
  absl::Status Finish() { return offsets_.size() > 1 ? Flush() : absl::OkStatus(); }

  const std::vector<ShardEntry>& shards() const { return shards_; }
  const std::vector<std::string>& written() const { return written_; }

 private:
  absl::Status Flush() {
    const uint64_t docs = offsets_.size() - 1;
    std::string data(kShardMagic, 8);
    PutU32(&data, kShardFormatVersion);
    PutU32(&data, static_cast<uint32_t>(kShardFixedHeaderBytes + 8 * (docs + 1)));
    PutU64(&data, offsets_.back());
    PutU64(&data, docs);
    PutU32(&data, kBytesVocabSize);
    PutU32(&data, 0);
    PutU64(&data, 0);
    for (uint64_t offset : offsets_) PutU64(&data, offset);
    data += tokens_;
    ShardEntry entry;
    entry.file = ShardFileName(static_cast<int>(shards_.size()));
    entry.sha256 = Sha256Hex(data);
    entry.tokens = static_cast<int64_t>(offsets_.back());
    entry.documents = static_cast<int64_t>(docs);
    entry.bytes = static_cast<int64_t>(data.size());
    const std::string path = absl::StrCat(dir_, "/", entry.file);
    written_.push_back(path);
    RETURN_IF_ERROR(WriteFileAtomic(path, data));
    shards_.push_back(std::move(entry));
    tokens_.clear();
    offsets_.assign(1, 0);
    return absl::OkStatus();
  }

  const std::string dir_;
  const int64_t cap_;
  std::string tokens_;                 // the current shard's tokens, u16 little-endian
  std::vector<uint64_t> offsets_{0};   // the current shard's document offsets
  std::vector<ShardEntry> shards_;     // written so far
  std::vector<std::string> written_;   // paths, for cleaning up after a failure
};

// The files an input names: itself, or the *.txt and *.jsonl files under a directory.
absl::Status CollectFiles(const std::string& input, std::vector<std::string>* files) {
  std::error_code ec;
  const fs::file_status st = fs::status(input, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat("input ", input, " does not exist"));
  }
  auto supported = [](absl::string_view path) {
    return absl::EndsWith(path, ".txt") || absl::EndsWith(path, ".jsonl");
  };
  if (!fs::is_directory(st)) {
    if (!supported(input)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input ", input, " is neither a .txt nor a .jsonl file; rename it or convert it"));
    }
    files->push_back(input);
    return absl::OkStatus();
  }
  std::vector<std::string> found;
  fs::recursive_directory_iterator it(input, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string base = it->path().filename().string();
    if (!base.empty() && base[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && supported(base)) found.push_back(it->path().string());
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot list input ", input, ": ",
                                                         ec.message()));
  if (found.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input directory ", input, " holds no .txt or .jsonl files"));
  }
  std::sort(found.begin(), found.end());
  files->insert(files->end(), found.begin(), found.end());
  return absl::OkStatus();
}

bool IsBlank(absl::string_view line) {
  return absl::StripAsciiWhitespace(line).empty();
}

// Calls `emit` with each document of `path`, in file order.
template <typename Emit>
absl::Status ReadDocuments(const std::string& path, bool split_paragraphs, Emit emit) {
  ASSIGN_OR_RETURN(const std::string content, ReadFile(path));
  if (absl::EndsWith(path, ".jsonl")) {
    int line_no = 0;
    for (absl::string_view line : absl::StrSplit(content, '\n')) {
      ++line_no;
      if (IsBlank(line)) continue;
      nlohmann::json doc;
      try {
        doc = nlohmann::json::parse(line.begin(), line.end());
      } catch (const nlohmann::json::exception& e) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s:%d: not valid JSON (%s); each line must be an object with a string \"text\"",
            path, line_no, e.what()));
      }
      auto text = doc.is_object() ? doc.find("text") : doc.end();
      if (!doc.is_object() || text == doc.end() || !text->is_string()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s:%d: no string field \"text\"; each line must be an object like "
            "{\"text\": \"...\"}",
            path, line_no));
      }
      RETURN_IF_ERROR(emit(text->get_ref<const std::string&>()));
    }
    return absl::OkStatus();
  }
  if (!split_paragraphs) return emit(content);
  std::string paragraph;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    if (IsBlank(line)) {
      // A run of blank lines separates paragraphs; it is not a run of empty documents.
      if (!paragraph.empty()) RETURN_IF_ERROR(emit(paragraph));
      paragraph.clear();
      continue;
    }
    if (!paragraph.empty()) paragraph.push_back('\n');
    absl::StrAppend(&paragraph, absl::StripSuffix(line, "\r"));
  }
  return paragraph.empty() ? absl::OkStatus() : emit(paragraph);
}

// Makes `dir` ready for a new dataset (see PrepareDataset).
absl::Status PrepareOutDir(const std::string& dir, bool overwrite) {
  RETURN_IF_ERROR(MakeDirs(dir));
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  if (entries.empty()) return absl::OkStatus();
  if (!overwrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "out dir ", dir, " is not empty; choose an empty or new directory, or overwrite the "
        "dataset there (--overwrite)"));
  }
  // The manifest goes first: shards without a manifest are not a dataset.
  fs::remove(fs::path(dir) / kManifestFileName, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot remove ", dir, "/", kManifestFileName,
                                                  ": ", ec.message()));
  for (const fs::path& p : entries) {
    const std::string base = p.filename().string();
    if (absl::StartsWith(base, "shard-") && absl::EndsWith(base, ".bin")) {
      fs::remove(p, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot remove ", p.string(), ": ",
                                                      ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const PrepareOptions& options) {
  RETURN_IF_ERROR(ValidateResourceName("dataset name", options.name));
  if (options.inputs.empty()) {
    return absl::InvalidArgumentError("no inputs: give at least one .txt or .jsonl file or a "
                                      "directory of them");
  }
  if (options.out_dir.empty()) return absl::InvalidArgumentError("out dir is required");
  if (!(options.heldout_fraction >= 0 && options.heldout_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heldout fraction must be in [0, 1), got ", options.heldout_fraction));
  }
  if (options.shard_tokens < 1 || options.shard_tokens > kMaxShardTokens) {
    return absl::InvalidArgumentError(absl::StrCat("shard tokens must be in [1, ",
                                                   kMaxShardTokens, "], got ",
                                                   options.shard_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<PrepareSummary> Prepare(const PrepareOptions& options,
                                       const std::vector<std::string>& files,
                                       ShardWriter* writer) {
  Manifest manifest;
  manifest.name = options.name;
  manifest.heldout_fraction = options.heldout_fraction;
  std::unordered_set<std::string> seen;
  auto emit = [&](absl::string_view text) -> absl::Status {
    if (IsBlank(text)) {
      ++manifest.empty_dropped;
      return absl::OkStatus();
    }
    ManifestDocument doc;
    doc.hash = Sha256Hex(text);
    if (!seen.insert(doc.hash).second) {
      ++manifest.duplicates_dropped;
      return absl::OkStatus();
    }
    doc.tokens = static_cast<int64_t>(text.size());
    doc.heldout = IsHeldOut(doc.hash, options.heldout_fraction);
    RETURN_IF_ERROR(writer->Add(text, &doc.shard, &doc.index));
    manifest.documents.push_back(std::move(doc));
    return absl::OkStatus();
  };
  for (const std::string& file : files) {
    RETURN_IF_ERROR(ReadDocuments(file, options.split_paragraphs, emit));
  }
  if (manifest.documents.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the inputs hold no documents (", manifest.empty_dropped, " empty, ",
        manifest.duplicates_dropped, " duplicates); nothing to prepare"));
  }
  RETURN_IF_ERROR(writer->Finish());
  manifest.shards = writer->shards();

  PrepareSummary summary;
  summary.manifest_path = absl::StrCat(options.out_dir, "/", kManifestFileName);
  summary.input_files = static_cast<int64_t>(files.size());
  summary.documents = static_cast<int64_t>(manifest.documents.size());
  for (const ManifestDocument& doc : manifest.documents) {
    manifest.tokens += doc.tokens;
    manifest.heldout_documents += doc.heldout ? 1 : 0;
    manifest.heldout_tokens += doc.heldout ? doc.tokens : 0;
  }
  summary.tokens = manifest.tokens;
  summary.heldout_documents = manifest.heldout_documents;
  summary.duplicates_dropped = manifest.duplicates_dropped;
  summary.empty_dropped = manifest.empty_dropped;
  summary.shards = static_cast<int>(manifest.shards.size());
  RETURN_IF_ERROR(WriteFileAtomic(summary.manifest_path, SerializeManifest(manifest)));
  return summary;
}

}  // namespace

namespace {

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

struct internal_dataset::ShardMapping {
  ShardMapping(const uint8_t* b, size_t n) : bytes(b), size(n) {}
  ~ShardMapping() { ::munmap(const_cast<uint8_t*>(bytes), size); }
  ShardMapping(const ShardMapping&) = delete;
  ShardMapping& operator=(const ShardMapping&) = delete;

  const uint8_t* const bytes;
  const size_t size;
  const uint16_t* tokens = nullptr;  // bytes + header size, once checked
};

namespace {

absl::StatusOr<std::shared_ptr<ShardMapping>> MapFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::DataLossError(absl::StrCat(path, ": cannot open (", std::strerror(errno),
                                            "); the dataset is incomplete"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < kShardFixedHeaderBytes) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", size,
                                            " bytes, shorter than the ", kShardFixedHeaderBytes,
                                            "-byte header"));
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(err)));
  }
  return std::make_shared<ShardMapping>(static_cast<const uint8_t*>(addr), size);
}

// Checks the shard at `path` against its manifest entry and the manifest's documents
// [first_doc, first_doc + entry.documents); sets map->tokens.
absl::Status CheckShard(const std::string& path, const ShardEntry& entry, const Manifest& m,
                        size_t first_doc, VerifyMode mode, ShardMapping* map) {
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what));
  };
  const uint8_t* p = map->bytes;
  if (std::memcmp(p, kShardMagic, 8) != 0) {
    return bad(absl::StrCat("bad magic \"", absl::CHexEscape(absl::string_view(
                                                reinterpret_cast<const char*>(p), 8)),
                            "\" (expected \"", kShardMagic, "\"): not a Forge token shard"));
  }
  if (const uint32_t version = LoadU32(p + 8); version != kShardFormatVersion) {
    return bad(absl::StrCat("format version ", version, " is not supported (this build reads ",
                            kShardFormatVersion, "); use a matching forge"));
  }
  const uint64_t header = LoadU32(p + 12), tokens = LoadU64(p + 16), docs = LoadU64(p + 24);
  const uint32_t vocab = LoadU32(p + 32);
  if (tokens != static_cast<uint64_t>(entry.tokens) ||
      docs != static_cast<uint64_t>(entry.documents) ||
      vocab != static_cast<uint32_t>(m.vocab_size)) {
    return bad(absl::StrCat("header says ", tokens, " tokens, ", docs, " documents, vocab ", vocab,
                            " but ", kManifestFileName, " says ", entry.tokens, ", ",
                            entry.documents, ", ", m.vocab_size,
                            "; the shard does not belong to this manifest"));
  }
  if (header != kShardFixedHeaderBytes + 8 * (docs + 1)) {
    return bad(absl::StrCat("header size ", header, " does not fit ", docs, " documents"));
  }
  const uint64_t expected = header + 2 * tokens;
  if (map->size != expected || static_cast<uint64_t>(entry.bytes) != expected) {
    return bad(absl::StrCat(map->size < expected ? "truncated: " : "wrong size: ", map->size,
                            " bytes; the header needs ", expected, " and ", kManifestFileName,
                            " says ", entry.bytes));
  }
  uint64_t prev = 0;
  for (uint64_t k = 0; k <= docs; ++k) {
    const uint64_t offset = LoadU64(p + kShardFixedHeaderBytes + 8 * k);
    if ((k == 0 && offset != 0) || offset < prev || (k == docs && offset != tokens)) {
      return bad(absl::StrCat("document offset ", k, " is ", offset,
                              "; offsets must rise from 0 to the token count ", tokens));
    }
    if (k > 0 && static_cast<int64_t>(offset - prev) != m.documents[first_doc + k - 1].tokens) {
      return bad(absl::StrCat("document ", k - 1, " has ", offset - prev, " tokens but ",
                              kManifestFileName, " document_list[", first_doc + k - 1, "] says ",
                              m.documents[first_doc + k - 1].tokens));
    }
    prev = offset;
  }
  map->tokens = reinterpret_cast<const uint16_t*>(p + header);
  if (mode == VerifyMode::kFull) {
    const std::string sha = Sha256Hex(
        absl::string_view(reinterpret_cast<const char*>(p), map->size));
    if (sha != entry.sha256) {
      return bad(absl::StrCat("sha256 is ", sha, " but ", kManifestFileName, " says ",
                              entry.sha256, ": the shard is corrupt; prepare or copy it again"));
    }
    for (uint64_t t = 0; t < tokens; ++t) {
      if (map->tokens[t] >= vocab) {
        return bad(absl::StrCat("token ", t, " is ", map->tokens[t], ", outside the vocabulary of ",
                                vocab));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> Dataset::Open(const std::string& dir, VerifyMode mode) {
  const std::string manifest_path = absl::StrCat(dir, "/", kManifestFileName);
  absl::StatusOr<std::string> text = ReadFile(manifest_path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        dir, " has no ", kManifestFileName, ": not a prepared dataset, or its preparation did "
        "not finish; run `forge data prepare`"));
  }
  if (!text.ok()) return text.status();
  ASSIGN_OR_RETURN(const Manifest m, ParseManifest(manifest_path, *text));

  Dataset ds;
  ds.dir_ = dir;
  ds.name_ = m.name;
  ds.manifest_sha256_ = Sha256Hex(*text);
  ds.vocab_size_ = m.vocab_size;
  ds.heldout_fraction_ = m.heldout_fraction;
  ds.num_tokens_ = m.tokens;
  size_t first_doc = 0;
  for (size_t s = 0; s < m.shards.size(); ++s) {
    const ShardEntry& entry = m.shards[s];
    const std::string path = absl::StrCat(dir, "/", entry.file);
    ASSIGN_OR_RETURN(std::shared_ptr<ShardMapping> map, MapFile(path));
    RETURN_IF_ERROR(CheckShard(path, entry, m, first_doc, mode, map.get()));
    int64_t begin = 0;
    for (int64_t k = 0; k < entry.documents; ++k) {
      const ManifestDocument& doc = m.documents[first_doc + k];
      const int64_t i = static_cast<int64_t>(ds.docs_.size());
      (doc.heldout ? ds.heldout_ : ds.train_).push_back(i);
      ds.docs_.push_back({static_cast<int>(s), begin, doc.tokens, doc.hash,
                          doc.heldout ? Split::kHeldOut : Split::kTrain});
      begin += doc.tokens;
    }
    first_doc += static_cast<size_t>(entry.documents);
    ds.shards_.push_back(std::move(map));
  }
  return ds;
}

int64_t Dataset::SplitTokens(Split split) const {
  int64_t total = 0;
  for (int64_t i : Documents(split)) total += docs_[i].length;
  return total;
}

absl::Span<const uint16_t> Dataset::Document(int64_t i) const {
  const DocRef& doc = docs_[i];
  return absl::Span<const uint16_t>(shards_[doc.shard]->tokens + doc.begin,
                                    static_cast<size_t>(doc.length));
}

std::string ShardFileName(int shard) { return absl::StrFormat("shard-%05d.bin", shard); }

bool IsHeldOut(absl::string_view hash_hex, double fraction) {
  if (!(fraction > 0)) return false;
  if (fraction >= 1) return true;
  uint64_t u = 0;
  for (size_t i = 0; i < 16 && i < hash_hex.size(); ++i) {
    const char c = absl::ascii_tolower(hash_hex[i]);
    u = (u << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  // Exact: ldexp only changes the exponent, and the product is below 2^64.
  return u < static_cast<uint64_t>(std::ldexp(fraction, 64));
}

absl::StatusOr<PrepareSummary> PrepareDataset(const PrepareOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  std::vector<std::string> files;
  for (const std::string& input : options.inputs) RETURN_IF_ERROR(CollectFiles(input, &files));
  RETURN_IF_ERROR(PrepareOutDir(options.out_dir, options.overwrite));
  ShardWriter writer(options.out_dir, options.shard_tokens);
  absl::StatusOr<PrepareSummary> summary = Prepare(options, files, &writer);
  if (!summary.ok()) {
    // Leave the directory as empty as we found it, so a fixed input can be rerun as is.
    for (const std::string& path : writer.written()) ::unlink(path.c_str());
    return summary.status();
  }
  return summary;
}

}  // namespace forge
