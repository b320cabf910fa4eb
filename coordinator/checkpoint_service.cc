#include "coordinator/checkpoint_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "coordinator/service.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::coordinator {
namespace {

using forge::v1::CheckpointService;
using forge::v1::FileTransfer;

// The caller: a tenant, or (when `admin_ok`) an admin.
absl::StatusOr<Principal> Authenticate(const AuthManager& auth,
                                       const grpc::ServerContextBase& ctx, bool admin_ok) {
  return RequireTenant(auth, ctx, admin_ok,
                       admin_ok ? "CheckpointService needs a tenant or admin token"
                                : "downloading a checkpoint needs the owning tenant's token");
}

class CheckpointServiceImpl final
    : public CheckpointService::WithCallbackMethod_ListCheckpoints<CheckpointService::Service> {
 public:
  CheckpointServiceImpl(AuthManager* auth, StorageGateway* gateway)
      : auth_(auth), gateway_(gateway) {}

  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* ctx,
                                            const forge::v1::ListCheckpointsRequest* req,
                                            forge::v1::ListCheckpointsResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Authenticate(*auth_, *ctx, /*admin_ok=*/true);
    if (!p.ok()) {
      reactor->Finish(ToGrpcStatus(p.status()));
      return reactor;
    }
    // An admin has no tenant: "" lists every tenant's. Another tenant's job lists as empty.
    for (forge::v1::CheckpointInfo& c :
         gateway_->ListCheckpoints(p->is_admin() ? "" : p->tenant, req->job_id())) {
      *resp->add_checkpoints() = std::move(c);
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::Status DownloadCheckpoint(grpc::ServerContext* ctx,
                                  const forge::v1::DownloadCheckpointRequest* req,
                                  grpc::ServerWriter<FileTransfer>* writer) override {
    absl::StatusOr<Principal> p = Authenticate(*auth_, *ctx, /*admin_ok=*/false);
    if (!p.ok()) return ToGrpcStatus(p.status());
    const std::vector<std::string> files(req->files().begin(), req->files().end());
    absl::Status s = gateway_->SendCheckpoint(
        p->tenant, req->checkpoint_id(), files,
        [writer](const FileTransfer& m) { return writer->Write(m); });
    if (!s.ok() && !absl::IsCancelled(s) && !absl::IsNotFound(s)) {
      FORGE_LOG(WARNING) << "event=checkpoint_download_failed tenant=" << p->tenant
                         << " checkpoint=" << req->checkpoint_id().substr(0, 64)
                         << " code=" << absl::StatusCodeToString(s.code()) << " error=\""
                         << s.message() << "\"";
    }
    return ToGrpcStatus(s);
  }

 private:
  AuthManager* const auth_;
  StorageGateway* const gateway_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewCheckpointService(AuthManager* auth, StorageGateway* gateway) {
  return std::make_unique<CheckpointServiceImpl>(auth, gateway);
}

}  // namespace forge::coordinator
