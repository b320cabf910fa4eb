#include "coordinator/storage_files.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace forge::coordinator::storage {
namespace {

namespace fs = std::filesystem;

using forge::v1::FileChunk;
using forge::v1::FileInfo;
using forge::v1::FileTransfer;
using Json = nlohmann::json;

constexpr size_t kMaxFileNameLength = 128;
constexpr char kCheckpointFormat[] = "forge.checkpoint";
constexpr char kManifestHashKey[] = "manifest_sha256";

bool IsLowerHex64(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

// --- Paths and durable directories ----------------------------------------------------------

absl::Status ErrnoStatus(absl::string_view what, absl::string_view path) {
  const int err = errno;
  std::string msg = absl::StrCat("storage: ", what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

std::string JoinPath(absl::string_view a, absl::string_view b) { return absl::StrCat(a, "/", b); }

std::string ParentOf(const std::string& path) { return path.substr(0, path.rfind('/')); }

absl::Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir);
  const int rc = ::fsync(fd);
  absl::Status s = rc == 0 ? absl::OkStatus() : ErrnoStatus("cannot fsync directory", dir);
  ::close(fd);
  return s;
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) {
    FORGE_LOG(WARNING) << "event=storage_remove_failed path=" << path << " error=\""
                       << ec.message() << "\"";
  }
}

absl::Status Place(const std::string& incoming, const std::string& dest) {
  const std::string parent = ParentOf(dest);
  RETURN_IF_ERROR(MakeDirs(parent));
  if (FileExists(dest)) {
    // No committed row names it (the caller holds the reservation and found no row).
    FORGE_LOG(WARNING) << "event=storage_garbage_removed path=" << dest
                       << " reason=uncommitted_leftover";
    RemoveTree(dest);
  }
  if (::rename(incoming.c_str(), dest.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("cannot rename ", incoming, " to"), dest);
  }
  RETURN_IF_ERROR(FsyncDir(parent));
  return FsyncDir(ParentOf(incoming));
}

absl::Status WriteAll(int fd, absl::string_view data, absl::string_view path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadAt(int fd, int64_t offset, int64_t n, absl::string_view path) {
  std::string out(static_cast<size_t>(n), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::pread(fd, out.data() + got, out.size() - got, offset + got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", path);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

// --- Messages ---------------------------------------------------------------------------------

std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, 200)), s.size() > 200 ? "..." : "",
                      "\"");
}

absl::Status WithPrefix(const absl::Status& s, absl::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// --- Upload headers ---------------------------------------------------------------------------

absl::Status ValidateFileName(absl::string_view field, absl::string_view name) {
  const bool ok = !name.empty() && name.size() <= kMaxFileNameLength && name != "." &&
                  name != ".." && std::all_of(name.begin(), name.end(), [](char c) {
                    return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
                  });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": ", Quote(name), " is not a plain file name; use 1..", kMaxFileNameLength,
      " characters of [A-Za-z0-9._-] (no \"/\"), other than \".\" and \"..\""));
}

absl::StatusOr<int64_t> ValidateFiles(const Files& files, int max_files, int64_t max_bytes,
                                      absl::string_view what) {
  if (files.empty() || files.size() > max_files) {
    return absl::InvalidArgumentError(absl::StrCat("header.files: a ", what, " upload announces 1..",
                                                   max_files, " files (got ", files.size(), ")"));
  }
  absl::flat_hash_set<std::string> names;
  int64_t total = 0;
  for (int i = 0; i < files.size(); ++i) {
    const FileInfo& f = files[i];
    const std::string field = absl::StrCat("header.files[", i, "]");
    RETURN_IF_ERROR(ValidateFileName(absl::StrCat(field, ".name"), f.name()));
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".name: ", Quote(f.name()),
                                                     " is announced twice; list each file once"));
    }
    if (f.size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".size must be >= 0 (got ", f.size(), ")"));
    }
    if (!IsLowerHex64(f.sha256())) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".sha256 must be 64 lowercase hex digits (got ", Quote(f.sha256()), ")"));
    }
    total += f.size();
    if (total > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "header.files: the ", what, " is larger than the limit of ", max_bytes,
          " bytes (at ", field, "); upload a smaller one"));
    }
  }
  return total;
}

int FindFile(const Files& files, absl::string_view name) {
  for (int i = 0; i < files.size(); ++i) {
    if (files[i].name() == name) return i;
  }
  return -1;
}

bool SameModel(const Files& a, const Files& b) {
  const int i = FindFile(a, "model.safetensors"), j = FindFile(b, "model.safetensors");
  return i >= 0 && j >= 0 && a[i].size() == b[j].size() && a[i].sha256() == b[j].sha256();
}

bool SameFiles(const Files& a, const Files& b) {
  if (a.size() != b.size()) return false;
  for (const FileInfo& f : a) {
    const int j = FindFile(b, f.name());
    if (j < 0 || b[j].size() != f.size() || b[j].sha256() != f.sha256()) return false;
  }
  return true;
}

// --- Receiving --------------------------------------------------------------------------------

UploadWriter::~UploadWriter() {
  if (fd_ >= 0) ::close(fd_);
  for (FileState& s : state_) EVP_MD_CTX_free(s.sha);
}

absl::Status UploadWriter::Add(const FileChunk& chunk) {
  if (chunk.file() < 0 || chunk.file() >= files_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk.file ", chunk.file(), " is not an index into header.files (0..",
                     files_.size() - 1, ")"));
  }
  const FileInfo& info = files_[chunk.file()];
  FileState& state = state_[chunk.file()];
  const int64_t n = static_cast<int64_t>(chunk.data().size());
  if (n < 1 || n > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat("chunk of ", info.name(), " at offset ",
                                                   chunk.offset(), ": data must be 1..",
                                                   kMaxChunkBytes, " bytes (got ", n, ")"));
  }
  if (chunk.offset() != state.received) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk of ", info.name(), ": offset ", chunk.offset(), " but ", state.received,
        " bytes of it were received so far; send each file's chunks in order without gaps"));
  }
  if (chunk.offset() + n > info.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk of ", info.name(), " at offset ", chunk.offset(), " with ", n,
                     " bytes goes past the announced size of ", info.size(),
                     " bytes; announce the file's real size in the header"));
  }
  RETURN_IF_ERROR(Open(chunk.file()));
  RETURN_IF_ERROR(WriteAll(fd_, chunk.data(), PathOf(chunk.file())));
  if (EVP_DigestUpdate(state.sha, chunk.data().data(), chunk.data().size()) != 1) {
    return absl::InternalError("storage: sha256 update failed");
  }
  state.received += n;
  return absl::OkStatus();
}

absl::Status UploadWriter::Finish() {
  RETURN_IF_ERROR(CloseCurrent());
  for (int i = 0; i < files_.size(); ++i) {
    const FileInfo& info = files_[i];
    if (state_[i].received != info.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("upload of ", info.name(), " ended after ", state_[i].received, " of ",
                       info.size(), " bytes; send every chunk of every announced file"));
    }
    if (state_[i].sha == nullptr) {  // empty: no chunk arrived
      RETURN_IF_ERROR(Open(i));
      RETURN_IF_ERROR(CloseCurrent());
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(state_[i].sha, digest, &len) != 1) {
      return absl::InternalError("storage: sha256 final failed");
    }
    const std::string got =
        HexEncode(absl::string_view(reinterpret_cast<const char*>(digest), len));
    if (got != info.sha256()) {
      return absl::DataLossError(absl::StrCat(
          "file ", info.name(), ": the received bytes have sha256 ", got,
          " but the header announced ", info.sha256(),
          "; the file changed or was damaged in transit, upload it again"));
    }
  }
  return FsyncDir(dir_);
}

absl::Status UploadWriter::Open(int i) {
  if (current_ == i) return absl::OkStatus();
  RETURN_IF_ERROR(CloseCurrent());
  const std::string path = PathOf(i);
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return ErrnoStatus("cannot create", path);
  current_ = i;
  if (state_[i].sha == nullptr) {
    state_[i].sha = EVP_MD_CTX_new();
    if (state_[i].sha == nullptr || EVP_DigestInit_ex(state_[i].sha, EVP_sha256(), nullptr) != 1) {
      return absl::InternalError("storage: sha256 init failed");
    }
  }
  return absl::OkStatus();
}

absl::Status UploadWriter::CloseCurrent() {
  if (fd_ < 0) return absl::OkStatus();
  const std::string path = PathOf(current_);
  absl::Status s = ::fsync(fd_) == 0 ? absl::OkStatus() : ErrnoStatus("cannot fsync", path);
  ::close(fd_);
  fd_ = -1;
  current_ = -1;
  return s;
}

// --- Manifests --------------------------------------------------------------------------------

absl::Status VerifyCheckpointManifest(const std::string& text, const Files& files) {
  auto invalid = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(
        kCheckpointManifest, ": ", what, "; upload the manifest the trainer wrote (",
        "{\"format\":\"forge.checkpoint\",\"files\":[{\"name\",\"bytes\",\"sha256\"}...]})"));
  };
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid("not a JSON object");
  if (j.value("format", Json()) != kCheckpointFormat) {
    return invalid(absl::StrCat("\"format\" is not \"", kCheckpointFormat, "\""));
  }
  if (auto hash = j.find(kManifestHashKey); hash != j.end()) {
    Json rest = j;
    rest.erase(kManifestHashKey);
    if (!hash->is_string() || hash->get<std::string>() != Sha256Hex(rest.dump())) {
      return absl::DataLossError(absl::StrCat(kCheckpointManifest, ": its ", kManifestHashKey,
                                              " does not match its content (the manifest is "
                                              "damaged); write the checkpoint again"));
    }
  }
  auto listed = j.find("files");
  if (listed == j.end() || !listed->is_array()) return invalid("\"files\" is not an array");
  std::set<std::string> seen;
  for (const Json& f : *listed) {
    if (!f.is_object() || !f.value("name", Json()).is_string() ||
        !f.value("bytes", Json()).is_number_unsigned() || !f.value("sha256", Json()).is_string()) {
      return invalid(absl::StrCat("files entry ", f.dump(), " is not {name, bytes, sha256}"));
    }
    const std::string name = f["name"].get<std::string>();
    if (name == kCheckpointManifest || !seen.insert(name).second) {
      return invalid(absl::StrCat("files entry ", Quote(name), " lists the manifest or repeats"));
    }
    const int i = FindFile(files, name);
    if (i < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kCheckpointManifest, " lists ", Quote(name),
                       " but the upload does not include it; upload every file it lists"));
    }
    const uint64_t bytes = f["bytes"].get<uint64_t>();
    const std::string sha = f["sha256"].get<std::string>();
    if (bytes != static_cast<uint64_t>(files[i].size()) || sha != files[i].sha256()) {
      return absl::DataLossError(absl::StrCat(
          "file ", name, ": ", kCheckpointManifest, " says ", bytes, " bytes with sha256 ", sha,
          " but the uploaded file has ", files[i].size(), " bytes with sha256 ",
          files[i].sha256(), "; the checkpoint directory is damaged, write it again"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FileInfo>> DatasetShards(const std::string& manifest_text) {
  Json j = Json::parse(manifest_text, nullptr, /*allow_exceptions=*/false);
  auto bad = absl::DataLossError(absl::StrCat(kManifestFileName, ": \"shards\" is malformed"));
  if (j.is_discarded() || !j.is_object()) return bad;
  auto shards = j.find("shards");
  if (shards == j.end() || !shards->is_array()) return bad;
  std::vector<FileInfo> out;
  for (const Json& s : *shards) {
    if (!s.is_object() || !s.value("file", Json()).is_string() ||
        !s.value("bytes", Json()).is_number_integer() || !s.value("sha256", Json()).is_string()) {
      return bad;
    }
    FileInfo& f = out.emplace_back();
    f.set_name(s["file"].get<std::string>());
    f.set_size(s["bytes"].get<int64_t>());
    f.set_sha256(s["sha256"].get<std::string>());
    RETURN_IF_ERROR(ValidateFileName("manifest.json shards[].file", f.name()));
  }
  return out;
}

absl::StatusOr<Dataset> VerifyDatasetUpload(const std::string& dir, const Files& files,
                                            absl::string_view prefix) {
  absl::StatusOr<Dataset> ds = Dataset::Open(dir, VerifyMode::kFull);
  if (!ds.ok()) {
    // Do not show the server's paths to the client.
    std::string msg = absl::StrReplaceAll(ds.status().message(),
                                          {{dir + "/", ""}, {dir, "."}});
    return absl::Status(ds.status().code(), absl::StrCat(prefix, msg));
  }
  ASSIGN_OR_RETURN(std::string manifest_text, ReadFile(JoinPath(dir, kManifestFileName)));
  ASSIGN_OR_RETURN(std::vector<FileInfo> shards, DatasetShards(manifest_text));
  std::set<std::string> expected = {kManifestFileName};
  for (const FileInfo& s : shards) expected.insert(s.name());
  for (const FileInfo& f : files) {
    if (!expected.count(f.name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "file ", f.name(), " is not listed in ", kManifestFileName,
          "; upload only the manifest and its shards"));
    }
  }
  return ds;
}

// --- Sending ----------------------------------------------------------------------------------

absl::Status SendFiles(const std::string& dir, const std::vector<FileInfo>& files,
                       int64_t chunk_bytes, const WriteTransfer& write) {
  FileTransfer header;
  for (const FileInfo& f : files) *header.mutable_header()->add_files() = f;
  if (!write(header)) return absl::CancelledError("download: the client went away");
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = JoinPath(dir, files[i].name());
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open", path);
    absl::Cleanup close_fd = [fd] { ::close(fd); };
    int64_t offset = 0;
    while (offset < files[i].size()) {
      ASSIGN_OR_RETURN(std::string data,
                       ReadAt(fd, offset, std::min(chunk_bytes, files[i].size() - offset), path));
      if (data.empty()) {
        return absl::DataLossError(absl::StrCat("storage: ", path, " is shorter (", offset,
                                                " bytes) than its catalog entry (",
                                                files[i].size(), " bytes)"));
      }
      FileTransfer msg;
      FileChunk* chunk = msg.mutable_chunk();
      chunk->set_file(static_cast<int32_t>(i));
      chunk->set_offset(offset);
      offset += static_cast<int64_t>(data.size());
      chunk->set_data(std::move(data));
      if (!write(msg)) return absl::CancelledError("download: the client went away");
    }
  }
  return absl::OkStatus();
}

absl::Status SendDatasetFiles(const std::string& dir, int64_t chunk_bytes,
                              const WriteTransfer& write) {
  ASSIGN_OR_RETURN(std::string manifest_text, ReadFile(JoinPath(dir, kManifestFileName)));
  // The manifest carries each shard's size and sha256: nothing needs hashing again.
  ASSIGN_OR_RETURN(std::vector<FileInfo> files, DatasetShards(manifest_text));
  FileInfo manifest;
  manifest.set_name(kManifestFileName);
  manifest.set_size(static_cast<int64_t>(manifest_text.size()));
  manifest.set_sha256(Sha256Hex(manifest_text));
  files.insert(files.begin(), std::move(manifest));
  return SendFiles(dir, files, chunk_bytes, write);
}

}  // namespace forge::coordinator::storage
