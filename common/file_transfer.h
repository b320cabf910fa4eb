// Files over the coordinator's chunked streams (training.proto FileInfo / FileChunk): digests
// and chunked reads for uploads, verified temporary files for downloads, and a watchdog that
// ends a stalled transfer.
#ifndef FORGE_COMMON_FILE_TRANSFER_H_
#define FORGE_COMMON_FILE_TRANSFER_H_

#include <grpcpp/client_context.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forge/v1/training.pb.h"

namespace forge {

// The largest FileChunk.data the coordinator takes.
inline constexpr int64_t kChunkBytes = int64_t{1} << 20;

struct FileDigest {
  int64_t size = 0;
  std::string sha256;  // lower-case hex
};

// Size and SHA-256 of the file at `path`, read in a stream (memory stays small). NOT_FOUND or
// INTERNAL naming the path.
absl::StatusOr<FileDigest> DigestFile(const std::string& path);

// Reads `path` in pieces of at most kChunkBytes and calls `send(offset, data)` for each, in
// order, stopping at the first error `send` returns. FAILED_PRECONDITION when the file does not
// hold exactly `expected_size` bytes (it changed since it was digested).
absl::Status ForEachChunk(const std::string& path, int64_t expected_size,
                          absl::FunctionRef<absl::Status(int64_t, absl::string_view)> send);

// Whether `name` is a plain file name as FileInfo allows: [A-Za-z0-9._-]{1,128}, not "." or
// "..".
bool IsPlainFileName(absl::string_view name);

// Receives the files of one download into hidden temporary files in a directory, checking
// every chunk's file index and offset and each file's size and SHA-256 against the header,
// then moves the files wanted into place. Nothing but the temporaries is touched before
// Commit(), and the destructor removes every temporary left, so a failed download leaves no
// partial file under a real name. Owned by one thread.
class TransferReceiver {
 public:
  // REQUIRES: `dir` exists.
  explicit TransferReceiver(std::string dir);
  ~TransferReceiver();
  TransferReceiver(const TransferReceiver&) = delete;
  TransferReceiver& operator=(const TransferReceiver&) = delete;

  // Checks the header (plain, distinct names; sizes >= 0; 64-hex sha256) and opens one
  // temporary file per entry. DATA_LOSS naming the entry at fault.
  absl::Status Begin(const forge::v1::TransferHeader& header);
  // Appends a chunk. DATA_LOSS when its file index, offset or length is wrong.
  absl::Status Add(const forge::v1::FileChunk& chunk);
  // Every file complete, with its announced size and SHA-256 (DATA_LOSS naming it otherwise);
  // the data is fsync'ed.
  absl::Status Finish();

  // The header's files. Valid after Begin().
  const std::vector<forge::v1::FileInfo>& files() const { return files_; }
  // The received content of file `name`, for small files such as a manifest. REQUIRES:
  // Finish() succeeded.
  absl::StatusOr<std::string> Contents(absl::string_view name) const;
  // Renames the received files named in `keep` to their names in the directory (replacing
  // files there) and fsyncs the directory; the other temporaries are removed.
  // REQUIRES: Finish() succeeded.
  absl::Status Commit(const std::vector<std::string>& keep);

 private:
  struct Incoming;

  absl::Status CloseAll();

  const std::string dir_;
  std::vector<forge::v1::FileInfo> files_;
  std::vector<Incoming> incoming_;
};

// Cancels `context` when Kick() has not been called for `idle`, so a stream that stops
// moving ends with CANCELLED instead of hanging (streams of file data carry no deadline).
// Thread-safe.
class IdleWatchdog {
 public:
  // `context` must outlive the watchdog.
  IdleWatchdog(grpc::ClientContext* context, absl::Duration idle);
  ~IdleWatchdog();
  IdleWatchdog(const IdleWatchdog&) = delete;
  IdleWatchdog& operator=(const IdleWatchdog&) = delete;

  // Progress was made: the idle period starts again.
  void Kick();
  // Whether the watchdog cancelled the call.
  bool fired() const;

 private:
  void Run();

  grpc::ClientContext* const context_;
  const absl::Duration idle_;
  mutable absl::Mutex mu_;
  absl::Time last_kick_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the members above are set
};

}  // namespace forge

#endif  // FORGE_COMMON_FILE_TRANSFER_H_
