#include "coordinator/trainer_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/service.h"

namespace forge::coordinator {
namespace {

std::string Scope(const forge::v1::RankRef& ref) {
  return absl::StrCat(ref.job_id(), "/", ref.attempt());
}

}  // namespace

absl::Status TrainerServiceImpl::Authenticate(const grpc::ServerContext* ctx,
                                              const forge::v1::RankRef& ref) const {
  absl::Status s =
      tokens_->Verify(AuthorizationHeader(*ctx), ref.job_id(), ref.attempt(), ref.rank());
  if (!s.ok()) {
    FORGE_LOG(WARNING) << "event=rank_token_refused job=" << ref.job_id()
                       << " attempt=" << ref.attempt() << " rank=" << ref.rank();
  }
  return s;
}

absl::Status TrainerServiceImpl::Authorize(const grpc::ServerContext* ctx,
                                           const forge::v1::RankRef& ref, std::string* tenant,
                                           forge::v1::JobSpec* spec) const {
  RETURN_IF_ERROR(Authenticate(ctx, ref));
  return jobs_->CheckRank(ref, tenant, spec);
}

grpc::Status TrainerServiceImpl::RendezvousSet(grpc::ServerContext* ctx,
                                               const forge::v1::RendezvousSetRequest* req,
                                               forge::v1::RendezvousSetResponse*) {
  if (absl::Status s = Authorize(ctx, req->rank()); !s.ok()) return ToGrpcStatus(s);
  // This attempt is current: earlier attempts of the job will never rendezvous again.
  rendezvous_->DropOtherScopes(absl::StrCat(req->rank().job_id(), "/"), Scope(req->rank()));
  return ToGrpcStatus(rendezvous_->Set(Scope(req->rank()), req->key(), req->value()));
}

grpc::Status TrainerServiceImpl::RendezvousGet(grpc::ServerContext* ctx,
                                               const forge::v1::RendezvousGetRequest* req,
                                               forge::v1::RendezvousGetResponse* resp) {
  if (absl::Status s = Authorize(ctx, req->rank()); !s.ok()) return ToGrpcStatus(s);
  if (req->timeout_ms() < 0 || req->timeout_ms() > 600000) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("timeout_ms must be in 0..600000 (got ", req->timeout_ms(), ")")));
  }
  absl::StatusOr<std::string> v = rendezvous_->Get(Scope(req->rank()), req->key(),
                                                   absl::Milliseconds(req->timeout_ms()));
  if (!v.ok()) return ToGrpcStatus(v.status());
  resp->set_value(*std::move(v));
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::ReportProgress(grpc::ServerContext* ctx,
                                                const forge::v1::ProgressReport* req,
                                                forge::v1::ProgressResponse* resp) {
  if (absl::Status s = Authenticate(ctx, req->rank()); !s.ok()) return ToGrpcStatus(s);
  // A stale attempt is answered with stop=true rather than an error: the rank learns why.
  *resp = jobs_->OnProgress(*req);
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::FinishJob(grpc::ServerContext* ctx,
                                           const forge::v1::FinishJobRequest* req,
                                           forge::v1::FinishJobResponse*) {
  if (absl::Status s = Authenticate(ctx, req->rank()); !s.ok()) return ToGrpcStatus(s);
  // The final checkpoint must be a committed checkpoint of this job at its last step.
  std::string tenant;
  forge::v1::JobSpec spec;
  if (absl::Status s = jobs_->CheckRank(req->rank(), &tenant, &spec); !s.ok()) {
    // Not running any more: a retried finish of a job that already succeeded is answered by
    // Finish itself.
    if (!jobs_->IsFinished(req->rank().job_id())) return ToGrpcStatus(s);
  } else {
    absl::StatusOr<forge::v1::CheckpointInfo> c =
        storage_->GetCheckpoint(tenant, req->final_checkpoint());
    if (!c.ok() || c->job_id() != req->rank().job_id() || c->step() != spec.train().steps()) {
      return ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
          "final_checkpoint ", req->final_checkpoint(), " is not a committed checkpoint of job ",
          req->rank().job_id(), " at step ", spec.train().steps())));
    }
  }
  absl::Notification done;
  absl::Status result;
  jobs_->Finish(*req, [&](absl::Status s) {
    result = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  if (result.ok()) rendezvous_->DropScopes(absl::StrCat(req->rank().job_id(), "/"));
  return ToGrpcStatus(result);
}

grpc::Status TrainerServiceImpl::UploadCheckpoint(
    grpc::ServerContext* ctx, grpc::ServerReader<forge::v1::CheckpointUpload>* reader,
    forge::v1::CheckpointInfo* resp) {
  const absl::Time start = absl::Now();
  forge::v1::CheckpointUpload first;
  if (!reader->Read(&first) || !first.has_header()) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        "UploadCheckpoint: the first message must be `header` (rank, step, files)"));
  }
  const forge::v1::CheckpointHeader& header = first.header();
  std::string tenant;
  forge::v1::JobSpec spec;
  if (absl::Status s = Authorize(ctx, header.rank(), &tenant, &spec); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (header.rank().rank() != 0) {
    return ToGrpcStatus(absl::PermissionDeniedError(
        "only rank 0 uploads checkpoints (every rank holds the same weights)"));
  }
  absl::StatusOr<forge::v1::CheckpointInfo> lineage =
      jobs_->CheckpointLineage(header.rank().job_id());
  if (!lineage.ok()) return ToGrpcStatus(lineage.status());
  absl::StatusOr<forge::v1::CheckpointInfo> info = storage_->ReceiveCheckpoint(
      tenant, header.rank().job_id(), header.rank().attempt(),
      std::max(1, spec.checkpoint().keep_last()), header,
      [reader](forge::v1::CheckpointUpload* m) { return reader->Read(m); },
      [this](const std::string& id) {
        return jobs_->CheckpointInUse(id) || (in_use_ && in_use_(id));
      },
      &*lineage);
  if (!info.ok()) {
    FORGE_LOG(WARNING) << "event=checkpoint_refused job=" << header.rank().job_id()
                       << " step=" << header.step() << " error=" << info.status();
    return ToGrpcStatus(info.status());
  }
  jobs_->OnCheckpointCommitted(*info);
  if (on_checkpoint_) on_checkpoint_(*info, absl::Now() - start);
  *resp = *std::move(info);
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::FetchDataset(grpc::ServerContext* ctx,
                                              const forge::v1::FetchDatasetRequest* req,
                                              grpc::ServerWriter<forge::v1::FileTransfer>* writer) {
  std::string tenant;
  forge::v1::JobSpec spec;
  if (absl::Status s = Authorize(ctx, req->rank(), &tenant, &spec); !s.ok()) {
    return ToGrpcStatus(s);
  }
  bool named = false;
  for (const auto& m : spec.data().mixture()) named |= m.dataset() == req->dataset();
  for (const auto& s : spec.eval().suites()) named |= s == req->dataset();
  if (!named) {
    return ToGrpcStatus(absl::PermissionDeniedError(absl::StrCat(
        "dataset ", req->dataset(), " is not named by job ", req->rank().job_id(), "'s spec")));
  }
  return ToGrpcStatus(storage_->SendDataset(
      tenant, req->dataset(),
      [writer](const forge::v1::FileTransfer& m) { return writer->Write(m); }));
}

grpc::Status TrainerServiceImpl::FetchCheckpoint(
    grpc::ServerContext* ctx, const forge::v1::FetchCheckpointRequest* req,
    grpc::ServerWriter<forge::v1::FileTransfer>* writer) {
  std::string tenant;
  forge::v1::JobSpec spec;
  if (absl::Status s = Authorize(ctx, req->rank(), &tenant, &spec); !s.ok()) {
    return ToGrpcStatus(s);
  }
  // The job's own checkpoints (resume) and its base; nothing else of the tenant.
  absl::StatusOr<forge::v1::CheckpointInfo> c = storage_->GetCheckpoint(tenant, req->checkpoint_id());
  absl::StatusOr<forge::v1::CheckpointInfo> lineage = jobs_->CheckpointLineage(req->rank().job_id());
  const bool is_base = lineage.ok() && !lineage->parent().empty() &&
                       req->checkpoint_id() == lineage->parent();
  if (!c.ok() || (c->job_id() != req->rank().job_id() && !is_base)) {
    return ToGrpcStatus(absl::NotFoundError(absl::StrCat(
        "checkpoint ", req->checkpoint_id(), " is neither job ", req->rank().job_id(),
        "'s own nor its base")));
  }
  return ToGrpcStatus(storage_->SendCheckpoint(
      tenant, req->checkpoint_id(), {},
      [writer](const forge::v1::FileTransfer& m) { return writer->Write(m); }));
}

}  // namespace forge::coordinator
