#include "coordinator/data_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "coordinator/service.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::coordinator {
namespace {

using forge::v1::DataService;
using forge::v1::DatasetInfo;
using forge::v1::DatasetUpload;

// The caller: a tenant, or (when `admin_ok`) an admin.
absl::StatusOr<Principal> Authenticate(const AuthManager& auth,
                                       const grpc::ServerContextBase& ctx, bool admin_ok) {
  return RequireTenant(auth, ctx, admin_ok,
                       admin_ok ? "DataService needs a tenant or admin token"
                                : "registering a dataset needs the owning tenant's token (admin "
                                  "and worker tokens cannot own datasets)");
}

class DataServiceImpl final
    : public DataService::WithCallbackMethod_ListDatasets<DataService::Service> {
 public:
  DataServiceImpl(AuthManager* auth, StorageGateway* gateway) : auth_(auth), gateway_(gateway) {}

  grpc::Status RegisterDataset(grpc::ServerContext* ctx, grpc::ServerReader<DatasetUpload>* reader,
                               DatasetInfo* resp) override {
    absl::StatusOr<Principal> p = Authenticate(*auth_, *ctx, /*admin_ok=*/false);
    if (!p.ok()) return ToGrpcStatus(p.status());
    DatasetUpload first;
    if (!reader->Read(&first) || !first.has_header()) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "RegisterDataset: the first message must be a header (name and files)"));
    }
    absl::StatusOr<DatasetInfo> info = gateway_->RegisterDataset(
        p->tenant, first.header(), [reader](DatasetUpload* m) { return reader->Read(m); });
    if (!info.ok()) return ToGrpcStatus(info.status());  // the gateway logged it
    *resp = *std::move(info);
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* ctx,
                                         const forge::v1::ListDatasetsRequest* /*req*/,
                                         forge::v1::ListDatasetsResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Authenticate(*auth_, *ctx, /*admin_ok=*/true);
    if (!p.ok()) {
      reactor->Finish(ToGrpcStatus(p.status()));
      return reactor;
    }
    // An admin has no tenant: "" lists every tenant's.
    for (DatasetInfo& d : gateway_->ListDatasets(p->is_admin() ? "" : p->tenant)) {
      *resp->add_datasets() = std::move(d);
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  AuthManager* const auth_;
  StorageGateway* const gateway_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewDataService(AuthManager* auth, StorageGateway* gateway) {
  return std::make_unique<DataServiceImpl>(auth, gateway);
}

}  // namespace forge::coordinator
