// TrainerClient: a trainer rank's calls to the coordinator's TrainerService, with the rank
// token of its attempt on every call.
//
// Transient failures (UNAVAILABLE: the coordinator restarting; DEADLINE_EXCEEDED of a single
// call) are retried with backoff for up to `patience`, so a coordinator restart does not
// fail a running job. FAILED_PRECONDITION (the attempt is over) and UNAUTHENTICATED are
// returned at once: the rank must stop.
//
// Thread safety: thread-safe (the stub is).
#ifndef FORGE_WORKER_TRAINER_TRAINER_CLIENT_H_
#define FORGE_WORKER_TRAINER_TRAINER_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::trainer {

struct TrainerClientOptions {
  std::string coordinator;  // HOST:PORT
  std::string rank_token;
  forge::v1::RankRef rank;
  absl::Duration patience = absl::Seconds(120);  // retrying transient failures
  absl::Duration call_timeout = absl::Seconds(30);  // unary calls
};

class TrainerClient {
 public:
  explicit TrainerClient(TrainerClientOptions options);

  const forge::v1::RankRef& rank() const { return options_.rank; }

  absl::Status RendezvousSet(const std::string& key, const std::string& value);
  absl::StatusOr<std::string> RendezvousGet(const std::string& key, absl::Duration timeout);
  // One attempt, short deadline: progress is best effort (the next step reports again).
  absl::StatusOr<forge::v1::ProgressResponse> ReportProgress(forge::v1::ProgressReport report);
  absl::Status FinishJob(forge::v1::FinishJobRequest request);
  // Uploads every file the checkpoint's MANIFEST.json lists, plus the manifest, to the
  // coordinator; returns the committed catalog entry. Retried from scratch when transient.
  absl::StatusOr<forge::v1::CheckpointInfo> UploadCheckpoint(const std::string& dir,
                                                             int64_t step);
  // Downloads into `dir` (created; files written to temporary names, sha256 verified against
  // the transfer header, then renamed). Does nothing when `dir`/.complete exists.
  absl::Status FetchDataset(const std::string& name, const std::string& dir);
  absl::Status FetchCheckpoint(const std::string& id, const std::string& dir);

 private:
  void Prepare(grpc::ClientContext* ctx, absl::Duration timeout) const;
  // Runs `call` until it succeeds, fails permanently, or patience runs out.
  absl::Status Retry(const std::string& what, const std::function<absl::Status()>& call) const;
  absl::Status Download(const std::string& what, const std::string& dir,
                        const std::function<std::unique_ptr<grpc::ClientReader<
                            forge::v1::FileTransfer>>(grpc::ClientContext*)>& open);

  const TrainerClientOptions options_;
  std::unique_ptr<forge::v1::TrainerService::Stub> stub_;
};

}  // namespace forge::trainer

#endif  // FORGE_WORKER_TRAINER_TRAINER_CLIENT_H_
