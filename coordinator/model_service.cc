#include "coordinator/model_service.h"

#include "common/grpc_status.h"
#include "coordinator/service.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::coordinator {
namespace {

class ModelServiceImpl final : public forge::v1::ModelService::CallbackService {
 public:
  ModelServiceImpl(AuthManager* auth, ModelCatalog* catalog) : auth_(auth), catalog_(catalog) {}

  grpc::ServerUnaryReactor* RegisterModel(grpc::CallbackServerContext* ctx,
                                          const forge::v1::RegisterModelRequest* req,
                                          forge::v1::ModelEntry* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    absl::StatusOr<forge::v1::ModelEntry> entry =
        p.ok() ? catalog_->Register(p->tenant, *req) : p.status();
    if (entry.ok()) *resp = *std::move(entry);
    reactor->Finish(ToGrpcStatus(entry.status()));
    return reactor;
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const forge::v1::ListModelsRequest* req,
                                       forge::v1::ListModelsResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    if (p.ok()) {
      for (auto& m : catalog_->ListModels(p->tenant)) *resp->add_models() = std::move(m);
      for (auto& c : catalog_->ListChannels(p->tenant)) *resp->add_channels() = std::move(c);
    }
    reactor->Finish(ToGrpcStatus(p.status()));
    return reactor;
  }

 private:
  absl::StatusOr<Principal> Caller(const grpc::ServerContextBase& ctx) const {
    return RequireTenant(*auth_, ctx, /*admin_ok=*/false,
                         "the model catalog belongs to a tenant: use a tenant token");
  }

  AuthManager* const auth_;
  ModelCatalog* const catalog_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewModelService(AuthManager* auth, ModelCatalog* catalog) {
  return std::make_unique<ModelServiceImpl>(auth, catalog);
}

}  // namespace forge::coordinator
