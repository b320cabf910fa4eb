// The storage gateway: everything the coordinator keeps under the storage root (datasets,
// checkpoints, job logs) and their catalog rows in the Store. One component behind its own
// interface (DESIGN.md "Storage root"), so it could later run as a separate service.
//
// Layout (every path built here from validated ids, never taken from a request):
//   tenants/<tenant>/datasets/<name>/...                       registered datasets
//   tenants/<tenant>/checkpoints/<job>/step-<%08d step>/...     committed checkpoints
//   tenants/<tenant>/logs/<job>.log                             trainer output, every attempt
//   tenants/<tenant>/.incoming/<random>/                        uploads in progress
//
// Uploads are received into .incoming, verified (each file's size and sha256 against the
// announced FileInfo; a dataset's manifest with Dataset::Open(kFull); a checkpoint's
// MANIFEST.json against the files), fsync'ed, renamed into place, and only then is the
// catalog row committed (the caller's answer comes after that commit). A directory with no
// committed row is garbage and is removed at start-up. Nothing half-written is ever listed.
//
// Checkpoint retention: after a commit, a job keeps its newest keep_last checkpoints; older
// ones are deleted (row first, then files) unless a non-terminal job names one as its base
// or resume point (`in_use`). The newest committed checkpoint of a job is never deleted.
//
// Thread safety: thread-safe.
#ifndef FORGE_COORDINATOR_STORAGE_GATEWAY_H_
#define FORGE_COORDINATOR_STORAGE_GATEWAY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/dataset.h"
#include "coordinator/store.h"
#include "forge/v1/training.pb.h"

namespace forge::coordinator {

// Pulls the next message of an upload stream; false at the end of the stream.
template <typename T>
using NextMessage = std::function<bool(T*)>;
// Pushes one message of a download stream; false when the client went away.
using WriteTransfer = std::function<bool(const forge::v1::FileTransfer&)>;

struct StorageGatewayOptions {
  std::string root;  // the storage root; created if missing
  int64_t max_dataset_bytes = int64_t{64} << 30;
  int64_t max_checkpoint_bytes = int64_t{256} << 30;
  int chunk_bytes = 1 << 20;  // download chunk size, 1 byte .. 1 MiB
  Clock* clock = nullptr;     // create_time of catalog rows; nullptr = RealClock()
};

class StorageGateway {
 public:
  // Creates the root if needed, loads the catalogs from `store` and removes uncommitted
  // directories (.incoming, checkpoint/dataset dirs without a row).
  static absl::StatusOr<std::unique_ptr<StorageGateway>> Open(StorageGatewayOptions options,
                                                              Store* store);
  ~StorageGateway();

  // --- Datasets ---------------------------------------------------------------------------
  // `next` yields the stream after its header (already read into `header`).
  absl::StatusOr<forge::v1::DatasetInfo> RegisterDataset(
      const std::string& tenant, const forge::v1::DatasetHeader& header,
      const NextMessage<forge::v1::DatasetUpload>& next);
  // Ordered by name; an admin passes tenant "" for every tenant's (ordered by tenant, name).
  std::vector<forge::v1::DatasetInfo> ListDatasets(const std::string& tenant) const;
  // NOT_FOUND naming the dataset when the tenant has none by that name.
  absl::StatusOr<forge::v1::DatasetInfo> GetDataset(const std::string& tenant,
                                                    absl::string_view name) const;
  absl::Status SendDataset(const std::string& tenant, absl::string_view name,
                           const WriteTransfer& write) const;
  // A registered dataset opened in place (headers verified; it was fully verified when it
  // was registered), for checks that read its documents on the coordinator.
  absl::StatusOr<Dataset> OpenDataset(const std::string& tenant, absl::string_view name) const;

  // --- Checkpoints ------------------------------------------------------------------------
  // Receives one checkpoint of `job_id` (owned by `tenant`) uploaded by `attempt`. A step is
  // checkpointed once: an upload of a committed step with the same model.safetensors (a lost
  // answer retried, or a restarted attempt replaying the step) returns the committed entry;
  // different weights are ALREADY_EXISTS.
  // keep_last: the job's retention. `in_use`: checkpoint ids that must not be deleted.
  // `lineage` (may be null): its stage, parent and shape are recorded in the catalog row.
  absl::StatusOr<forge::v1::CheckpointInfo> ReceiveCheckpoint(
      const std::string& tenant, const std::string& job_id, int32_t attempt, int keep_last,
      const forge::v1::CheckpointHeader& header,
      const NextMessage<forge::v1::CheckpointUpload>& next,
      const std::function<bool(const std::string& checkpoint_id)>& in_use,
      const forge::v1::CheckpointInfo* lineage = nullptr);
  // Newest first; job_id empty = every job of the tenant. An admin passes tenant "".
  std::vector<forge::v1::CheckpointInfo> ListCheckpoints(const std::string& tenant,
                                                         absl::string_view job_id) const;
  // NOT_FOUND for an unknown id or another tenant's checkpoint (tenant "" = any).
  absl::StatusOr<forge::v1::CheckpointInfo> GetCheckpoint(const std::string& tenant,
                                                          absl::string_view id) const;
  // Newest committed checkpoint of a job, if any.
  absl::StatusOr<forge::v1::CheckpointInfo> LatestCheckpoint(absl::string_view job_id) const;
  // `files` empty = every file.
  absl::Status SendCheckpoint(const std::string& tenant, absl::string_view id,
                              const std::vector<std::string>& files,
                              const WriteTransfer& write) const;

  // --- Job logs ---------------------------------------------------------------------------
  // Appends whole lines (already prefixed by the caller) to the job's log.
  absl::Status AppendLog(const std::string& tenant, const std::string& job_id,
                         absl::string_view lines);
  // Up to max_bytes of whole lines from `offset`; *next_offset = where to continue. A line
  // longer than max_bytes comes back whole (up to 1 MiB). A job with no log yet reads as
  // empty at offset 0; an offset past the end is OUT_OF_RANGE. The caller checks that the
  // tenant owns the job (the path is per tenant, so another tenant's job reads as empty).
  absl::StatusOr<std::string> ReadLog(const std::string& tenant, const std::string& job_id,
                                      int64_t offset, int64_t max_bytes,
                                      int64_t* next_offset) const;

  // The last whole lines of the job's log, at most max_bytes; *truncated when older lines
  // exist. Empty for a job with no log yet.
  absl::StatusOr<std::string> ReadLogTail(const std::string& tenant, const std::string& job_id,
                                          int64_t max_bytes, bool* truncated) const;

  const std::string& root() const;

 private:
  class Impl;
  explicit StorageGateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_STORAGE_GATEWAY_H_
