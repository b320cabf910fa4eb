// The gRPC surface of the coordinator. Each service only authenticates, translates proto <->
// manager calls and absl::Status <-> grpc::Status; the logic lives in the managers.
//
// Every RPC here is authenticated (grpc.health.v1 is the only unauthenticated service).
#ifndef FORGE_COORDINATOR_SERVICE_H_
#define FORGE_COORDINATOR_SERVICE_H_

#include <functional>

#include "common/work_queue.h"
#include "coordinator/auth.h"
#include "coordinator/job_manager.h"
#include "coordinator/model_catalog.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "coordinator/submission.h"
#include "coordinator/worker_manager.h"
#include "forge/v1/coordinator.grpc.pb.h"

namespace forge::coordinator {

// The call's "authorization" metadata value ("" when absent).
absl::string_view AuthorizationHeader(const grpc::ServerContextBase& ctx);

// Reads "authorization" from the call's metadata and authenticates it.
absl::StatusOr<Principal> AuthenticateCall(const AuthManager& auth,
                                           const grpc::ServerContextBase* ctx);

// A tenant token (or, when admin_ok, an admin token); PERMISSION_DENIED with `refusal`
// for the other kinds.
absl::StatusOr<Principal> RequireTenant(const AuthManager& auth, const grpc::ServerContextBase& ctx,
                                        bool admin_ok, absl::string_view refusal);

class JobServiceImpl final : public forge::v1::JobService::CallbackService {
 public:
  JobServiceImpl(AuthManager* auth, JobManager* jobs, StorageGateway* storage, Store* store,
                 ModelCatalog* catalog = nullptr)
      : auth_(auth), jobs_(jobs), storage_(storage), store_(store), catalog_(catalog),
        checks_(storage, catalog) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx,
                                      const forge::v1::SubmitJobRequest* req,
                                      forge::v1::SubmitJobResponse* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const forge::v1::ListJobsRequest* req,
                                     forge::v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const forge::v1::GetJobRequest* req,
                                   forge::v1::Job* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const forge::v1::CancelJobRequest* req,
                                      forge::v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetJobLogs(grpc::CallbackServerContext* ctx,
                                       const forge::v1::GetJobLogsRequest* req,
                                       forge::v1::GetJobLogsResponse* resp) override;
  grpc::ServerUnaryReactor* GetJobMetrics(grpc::CallbackServerContext* ctx,
                                          const forge::v1::GetJobMetricsRequest* req,
                                          forge::v1::GetJobMetricsResponse* resp) override;

 private:
  AuthManager* const auth_;
  JobManager* const jobs_;
  StorageGateway* const storage_;
  Store* const store_;
  ModelCatalog* const catalog_;
  const SubmissionChecks checks_;
  // A submission's checks (the contamination check reads every training token) run here,
  // not on a gRPC callback thread. Declared last: destroyed first, after it has run what it
  // accepted (the server's Wait already waited for those calls to finish).
  WorkQueue submissions_{{.threads = 2, .max_pending = 256}};
};

class WorkerServiceImpl final : public forge::v1::WorkerService::CallbackService {
 public:
  // `storage` receives the trainers' log lines the workers forward (may be null in tests).
  WorkerServiceImpl(AuthManager* auth, WorkerManager* workers, JobManager* jobs,
                    StorageGateway* storage, std::function<void()> wake_scheduler)
      : auth_(auth), workers_(workers), jobs_(jobs), storage_(storage),
        wake_(std::move(wake_scheduler)) {}

  grpc::ServerBidiReactor<forge::v1::WorkerMessage, forge::v1::CoordinatorMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const forge::v1::ListWorkersRequest* req,
                                        forge::v1::ListWorkersResponse* resp) override;

 private:
  AuthManager* const auth_;
  WorkerManager* const workers_;
  JobManager* const jobs_;
  StorageGateway* const storage_;
  const std::function<void()> wake_;
};

class AdminServiceImpl final : public forge::v1::AdminService::CallbackService {
 public:
  explicit AdminServiceImpl(AuthManager* auth) : auth_(auth) {}

  grpc::ServerUnaryReactor* CreateTenant(grpc::CallbackServerContext* ctx,
                                         const forge::v1::CreateTenantRequest* req,
                                         forge::v1::CreateTenantResponse* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* ctx,
                                        const forge::v1::ListTenantsRequest* req,
                                        forge::v1::ListTenantsResponse* resp) override;
  grpc::ServerUnaryReactor* CreateToken(grpc::CallbackServerContext* ctx,
                                        const forge::v1::CreateTokenRequest* req,
                                        forge::v1::CreateTokenResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* ctx,
                                        const forge::v1::RevokeTokenRequest* req,
                                        forge::v1::RevokeTokenResponse* resp) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* ctx,
                                       const forge::v1::ListTokensRequest* req,
                                       forge::v1::ListTokensResponse* resp) override;

 private:
  // The admin principal, or a Status (UNAUTHENTICATED / PERMISSION_DENIED).
  absl::StatusOr<Principal> RequireAdmin(const grpc::CallbackServerContext* ctx) const;
  AuthManager* const auth_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SERVICE_H_
