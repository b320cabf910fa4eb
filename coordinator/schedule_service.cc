#include "coordinator/schedule_service.h"

#include "common/grpc_status.h"
#include "coordinator/service.h"
#include "forge/v1/coordinator.grpc.pb.h"

namespace forge::coordinator {
namespace {

class ScheduleServiceImpl final : public forge::v1::ScheduleService::CallbackService {
 public:
  ScheduleServiceImpl(AuthManager* auth, ScheduleManager* schedules)
      : auth_(auth), schedules_(schedules) {}

  grpc::ServerUnaryReactor* CreateSchedule(grpc::CallbackServerContext* ctx,
                                           const forge::v1::CreateScheduleRequest* req,
                                           forge::v1::Schedule* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    absl::StatusOr<forge::v1::Schedule> s = p.ok() ? schedules_->Create(*p, *req) : p.status();
    if (s.ok()) *resp = *std::move(s);
    reactor->Finish(ToGrpcStatus(s.status()));
    return reactor;
  }

  grpc::ServerUnaryReactor* ListSchedules(grpc::CallbackServerContext* ctx,
                                          const forge::v1::ListSchedulesRequest* req,
                                          forge::v1::ListSchedulesResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    if (p.ok()) {
      for (auto& s : schedules_->List(*p)) *resp->add_schedules() = std::move(s);
    }
    reactor->Finish(ToGrpcStatus(p.status()));
    return reactor;
  }

  grpc::ServerUnaryReactor* DeleteSchedule(grpc::CallbackServerContext* ctx,
                                           const forge::v1::DeleteScheduleRequest* req,
                                           forge::v1::DeleteScheduleResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    absl::Status s = p.ok() ? schedules_->Delete(*p, req->schedule_id()) : p.status();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }

  grpc::ServerUnaryReactor* ListScheduleRuns(grpc::CallbackServerContext* ctx,
                                             const forge::v1::ListScheduleRunsRequest* req,
                                             forge::v1::ListScheduleRunsResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<Principal> p = Caller(*ctx);
    const int limit = req->limit() == 0 ? 1000 : req->limit();
    absl::StatusOr<std::vector<forge::v1::ScheduleRun>> runs =
        !p.ok() ? p.status()
        : limit < 1 || limit > 10000
            ? absl::InvalidArgumentError(
                  absl::StrCat("limit must be in 1..10000 (got ", req->limit(), ")"))
            : schedules_->Runs(*p, req->schedule_id(), limit);
    if (runs.ok()) {
      for (auto& r : *runs) *resp->add_runs() = std::move(r);
    }
    reactor->Finish(ToGrpcStatus(runs.status()));
    return reactor;
  }

 private:
  absl::StatusOr<Principal> Caller(const grpc::ServerContextBase& ctx) const {
    return RequireTenant(*auth_, ctx, /*admin_ok=*/false,
                         "schedules belong to a tenant: use a tenant token");
  }

  AuthManager* const auth_;
  ScheduleManager* const schedules_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewScheduleService(AuthManager* auth, ScheduleManager* schedules) {
  return std::make_unique<ScheduleServiceImpl>(auth, schedules);
}

}  // namespace forge::coordinator
