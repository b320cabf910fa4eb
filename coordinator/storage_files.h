// Files on disk and in transit for the storage gateway (storage_gateway.h): receiving an
// upload's chunks into a directory (each file's size and sha256 checked on the way),
// validating the files an upload header announces, verifying a dataset's manifest.json
// shards and a checkpoint's MANIFEST.json against the uploaded files, making a verified
// directory durable and renaming it into place, and streaming files back out in chunks.
// Nothing here knows the catalog, the Store or the layout of the storage root: the caller
// passes every directory and path (built from validated ids, never taken from a request).
//
// Thread safety: the free functions share no state and are thread-safe (concurrent calls on
// the same directory are the caller's to prevent); an UploadWriter is owned by one thread.
#ifndef FORGE_COORDINATOR_STORAGE_FILES_H_
#define FORGE_COORDINATOR_STORAGE_FILES_H_

#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dataset.h"
#include "common/status_macros.h"
#include "coordinator/storage_gateway.h"  // NextMessage, WriteTransfer
#include "forge/v1/training.pb.h"

namespace forge::coordinator::storage {

using Files = google::protobuf::RepeatedPtrField<forge::v1::FileInfo>;

// The largest chunk an upload may send and a download may be configured to send.
inline constexpr int64_t kMaxChunkBytes = int64_t{1} << 20;
// A checkpoint's manifest, written last by the trainer (worker/engine/checkpoint.h).
inline constexpr char kCheckpointManifest[] = "MANIFEST.json";

// --- Paths and durable directories ----------------------------------------------------------

// "storage: <what> <path>: <strerror(errno)>" as NOT_FOUND (ENOENT), RESOURCE_EXHAUSTED
// (ENOSPC, EDQUOT) or INTERNAL. REQUIRES: called right after the failing call set errno.
absl::Status ErrnoStatus(absl::string_view what, absl::string_view path);

// "a/b".
std::string JoinPath(absl::string_view a, absl::string_view b);
// `path` up to its last '/'. REQUIRES: path contains a '/'.
std::string ParentOf(const std::string& path);

// Makes the entries of `dir` (creations, renames) durable.
absl::Status FsyncDir(const std::string& dir);

// Removes `path` and everything under it; a missing path is fine. Failures are logged: the
// next start-up removes what is left.
void RemoveTree(const std::string& path);

// Renames a verified upload directory `incoming` to `dest` (creating dest's parent, and
// removing an uncommitted leftover at `dest` first) and makes the rename durable in both
// parents. REQUIRES: no committed catalog row names `dest` and the caller holds the
// reservation for it, so whatever is there is garbage.
absl::Status Place(const std::string& incoming, const std::string& dest);

// Writes all of `data` to `fd` (retrying short writes and EINTR); `path` is for errors.
absl::Status WriteAll(int fd, absl::string_view data, absl::string_view path);

// Reads up to `n` bytes at `offset` (fewer only at the end of the file).
absl::StatusOr<std::string> ReadAt(int fd, int64_t offset, int64_t n, absl::string_view path);

// --- Messages ---------------------------------------------------------------------------------

// A request's name, quoted and escaped for an error message (it may hold anything).
std::string Quote(absl::string_view s);

// `s` with `prefix` in front of its message; OK stays OK.
absl::Status WithPrefix(const absl::Status& s, absl::string_view prefix);

// --- Upload headers ---------------------------------------------------------------------------

// INVALID_ARGUMENT naming `field` unless `name` is a plain file name: 1..128 characters of
// [A-Za-z0-9._-], other than "." and "..".
absl::Status ValidateFileName(absl::string_view field, absl::string_view name);

// Checks an upload's announced files (1..max_files, plain distinct names, size >= 0, sha256
// as 64 lowercase hex digits, total <= max_bytes); returns their total size. `what`
// ("dataset", "checkpoint") names the upload in errors.
absl::StatusOr<int64_t> ValidateFiles(const Files& files, int max_files, int64_t max_bytes,
                                      absl::string_view what);

// The index of the file called `name` in `files`, or -1.
int FindFile(const Files& files, absl::string_view name);

// Whether `a` and `b` announce the same files (name, size, sha256), in any order.
bool SameFiles(const Files& a, const Files& b);
// Both lists hold a model.safetensors with the same size and sha256.
bool SameModel(const Files& a, const Files& b);

// --- Receiving --------------------------------------------------------------------------------

// Writes one upload's files into a directory as chunks arrive, hashing them on the way.
// At most one file is open at a time (a dataset may have 10,000); a file is fsync'ed when
// the stream moves on to another one and at the end.
// Thread safety: owned by one thread.
class UploadWriter {
 public:
  // `dir` exists and is empty; `files` (the validated header) must outlive the writer.
  UploadWriter(std::string dir, const Files& files)
      : dir_(std::move(dir)), files_(files), state_(files.size()) {}
  ~UploadWriter();

  UploadWriter(const UploadWriter&) = delete;
  UploadWriter& operator=(const UploadWriter&) = delete;

  // Appends one chunk. INVALID_ARGUMENT for a chunk that names no announced file, is empty or
  // over kMaxChunkBytes, leaves a gap, or goes past the announced size.
  absl::Status Add(const forge::v1::FileChunk& chunk);

  // Checks that every file arrived whole with its announced sha256, and makes the files and
  // the directory durable. DATA_LOSS names a file whose bytes do not match.
  absl::Status Finish();

 private:
  struct FileState {
    int64_t received = 0;
    EVP_MD_CTX* sha = nullptr;  // created with the file
  };

  std::string PathOf(int i) const { return JoinPath(dir_, files_[i].name()); }

  // Makes file `i` the open one (creating it on first use).
  absl::Status Open(int i);
  absl::Status CloseCurrent();

  const std::string dir_;
  const Files& files_;
  std::vector<FileState> state_;
  int current_ = -1;
  int fd_ = -1;
};

// Feeds the rest of an upload stream (after its header) to `writer`, then Finish()es it.
template <typename Upload>
absl::Status ReceiveChunks(UploadWriter& writer, const NextMessage<Upload>& next) {
  Upload msg;
  while (next(&msg)) {
    if (!msg.has_chunk()) {
      return absl::InvalidArgumentError(
          "upload: only the first message is a header; every later one must be a chunk");
    }
    RETURN_IF_ERROR(writer.Add(msg.chunk()));
    msg.Clear();
  }
  return writer.Finish();
}

// --- Manifests --------------------------------------------------------------------------------

// Checks a received MANIFEST.json against the files of the upload: format
// "forge.checkpoint", its own manifest_sha256 if present, and every listed file uploaded with
// the listed size and sha256. INVALID_ARGUMENT for a malformed manifest or a missing file,
// DATA_LOSS for a mismatch.
absl::Status VerifyCheckpointManifest(const std::string& text, const Files& files);

// The shard files (name, size, sha256) listed in a dataset's manifest.json.
// REQUIRES: the manifest was already verified by Dataset::Open.
absl::StatusOr<std::vector<forge::v1::FileInfo>> DatasetShards(const std::string& manifest_text);

// Opens a received dataset directory `dir` with Dataset::Open(kFull) (the manifest against
// every shard) and checks that the upload's `files` are that manifest.json and its shards
// only. Those two checks' errors start with `prefix` (Dataset::Open's with `dir` cut out: the
// client must not see server paths); an error reading the manifest comes back as it is.
absl::StatusOr<Dataset> VerifyDatasetUpload(const std::string& dir, const Files& files,
                                            absl::string_view prefix);

// --- Sending ----------------------------------------------------------------------------------

// Streams `files` of `dir`: a header, then chunks of `chunk_bytes`. CANCELLED when `write`
// reports the client gone; DATA_LOSS when a file is shorter than its FileInfo says.
absl::Status SendFiles(const std::string& dir, const std::vector<forge::v1::FileInfo>& files,
                       int64_t chunk_bytes, const WriteTransfer& write);

// Streams a committed dataset directory with SendFiles: its manifest.json first, then the
// shards it lists (sizes and sha256 from the manifest, so nothing is hashed again).
absl::Status SendDatasetFiles(const std::string& dir, int64_t chunk_bytes,
                              const WriteTransfer& write);

}  // namespace forge::coordinator::storage

#endif  // FORGE_COORDINATOR_STORAGE_FILES_H_
