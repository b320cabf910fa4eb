// TrainerService: the RPCs trainer ranks make (rendezvous, progress, checkpoints, data,
// finish). Authenticated by rank tokens (rank_tokens.h) and checked against the job's
// current attempt, so a replaced or cancelled rank is told to stop on its next call.
//
// The synchronous gRPC API: rendezvous gets block (up to their timeout) and uploads and
// downloads stream files, both natural on a thread per call; trainer calls are few (one
// per rank per step).
#ifndef FORGE_COORDINATOR_TRAINER_SERVICE_H_
#define FORGE_COORDINATOR_TRAINER_SERVICE_H_

#include "coordinator/job_manager.h"
#include "coordinator/rank_tokens.h"
#include "coordinator/rendezvous.h"
#include "coordinator/storage_gateway.h"
#include <functional>
#include <string>

#include "forge/v1/training.grpc.pb.h"

namespace forge::coordinator {

class TrainerServiceImpl final : public forge::v1::TrainerService::Service {
 public:
  // `in_use` (may be empty): more checkpoints retention must keep (the model catalog's).
  // `on_checkpoint` (may be empty): told of each checkpoint committed by an upload, with the
  // time from the upload's first message to the commit.
  TrainerServiceImpl(
      const RankTokens* tokens, JobManager* jobs, StorageGateway* storage,
      RendezvousStore* rendezvous, std::function<bool(const std::string&)> in_use = {},
      std::function<void(const forge::v1::CheckpointInfo&, absl::Duration)> on_checkpoint = {})
      : tokens_(tokens),
        jobs_(jobs),
        storage_(storage),
        rendezvous_(rendezvous),
        in_use_(std::move(in_use)),
        on_checkpoint_(std::move(on_checkpoint)) {}

  grpc::Status RendezvousSet(grpc::ServerContext* ctx,
                             const forge::v1::RendezvousSetRequest* req,
                             forge::v1::RendezvousSetResponse* resp) override;
  grpc::Status RendezvousGet(grpc::ServerContext* ctx,
                             const forge::v1::RendezvousGetRequest* req,
                             forge::v1::RendezvousGetResponse* resp) override;
  grpc::Status ReportProgress(grpc::ServerContext* ctx, const forge::v1::ProgressReport* req,
                              forge::v1::ProgressResponse* resp) override;
  grpc::Status FinishJob(grpc::ServerContext* ctx, const forge::v1::FinishJobRequest* req,
                         forge::v1::FinishJobResponse* resp) override;
  grpc::Status UploadCheckpoint(grpc::ServerContext* ctx,
                                grpc::ServerReader<forge::v1::CheckpointUpload>* reader,
                                forge::v1::CheckpointInfo* resp) override;
  grpc::Status FetchDataset(grpc::ServerContext* ctx, const forge::v1::FetchDatasetRequest* req,
                            grpc::ServerWriter<forge::v1::FileTransfer>* writer) override;
  grpc::Status FetchCheckpoint(grpc::ServerContext* ctx,
                               const forge::v1::FetchCheckpointRequest* req,
                               grpc::ServerWriter<forge::v1::FileTransfer>* writer) override;

 private:
  // The rank token of `ref` (any attempt state: progress and finish answer stale ranks
  // themselves).
  absl::Status Authenticate(const grpc::ServerContext* ctx, const forge::v1::RankRef& ref) const;
  // Token, then the job's current attempt. Fills the job's tenant and spec.
  absl::Status Authorize(const grpc::ServerContext* ctx, const forge::v1::RankRef& ref,
                         std::string* tenant = nullptr, forge::v1::JobSpec* spec = nullptr) const;

  const RankTokens* const tokens_;
  JobManager* const jobs_;
  StorageGateway* const storage_;
  RendezvousStore* const rendezvous_;
  const std::function<bool(const std::string&)> in_use_;
  const std::function<void(const forge::v1::CheckpointInfo&, absl::Duration)> on_checkpoint_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_TRAINER_SERVICE_H_
