#include "coordinator/service.h"

#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "coordinator/job_state.h"

namespace forge::coordinator {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

absl::string_view AuthorizationHeader(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return "";
  return absl::string_view(it->second.data(), it->second.size());
}

absl::StatusOr<Principal> AuthenticateCall(const AuthManager& auth,
                                           const grpc::ServerContextBase* ctx) {
  return auth.Authenticate(AuthorizationHeader(*ctx));
}

absl::StatusOr<Principal> RequireTenant(const AuthManager& auth, const grpc::ServerContextBase& ctx,
                                        bool admin_ok, absl::string_view refusal) {
  absl::StatusOr<Principal> p = auth.Authenticate(AuthorizationHeader(ctx));
  if (!p.ok()) return p;
  if (p->is_tenant() || (admin_ok && p->is_admin())) return p;
  return absl::PermissionDeniedError(refusal);
}

namespace {

ServerUnaryReactor* FinishNow(CallbackServerContext* ctx, const absl::Status& status) {
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Tenant or admin (not worker) tokens.
absl::StatusOr<Principal> RequireUser(const AuthManager& auth, const CallbackServerContext* ctx) {
  absl::StatusOr<Principal> p = AuthenticateCall(auth, ctx);
  if (p.ok() && p->is_worker()) {
    return absl::PermissionDeniedError("worker tokens may only call WorkerService.Connect");
  }
  return p;
}

forge::v1::TokenInfo ToProto(const TokenRecord& t) {
  forge::v1::TokenInfo info;
  info.set_token_id(t.id);
  info.set_kind(t.kind);
  info.set_tenant(t.tenant);
  info.set_note(t.note);
  *info.mutable_create_time() = ToProtoTime(t.create_time);
  info.set_revoked(t.revoked);
  return info;
}

}  // namespace

// --- JobService ----------------------------------------------------------------------------

ServerUnaryReactor* JobServiceImpl::SubmitJob(CallbackServerContext* ctx,
                                              const forge::v1::SubmitJobRequest* req,
                                              forge::v1::SubmitJobResponse* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto done = [reactor, resp](absl::StatusOr<forge::v1::SubmitJobResponse> r) {
    if (r.ok()) *resp = *std::move(r);
    reactor->Finish(ToGrpcStatus(r.status()));
  };
  if (!p->is_tenant()) {  // refused by Submit, with the reason
    jobs_->Submit(*p, *req, std::move(done), nullptr, "");
    return reactor;
  }
  // A retry gets its job without the checks below (the base may resolve elsewhere by now).
  if (std::optional<absl::StatusOr<forge::v1::SubmitJobResponse>> d = jobs_->Deduplicate(*p, *req);
      d.has_value()) {
    done(*std::move(d));
    return reactor;
  }
  // The request, response and reactor stay valid until Finish.
  const bool posted = submissions_.Post([this, ctx, req, principal = *p, done]() mutable {
    if (ctx->IsCancelled()) return done(absl::CancelledError("the client cancelled the call"));
    absl::StatusOr<CheckedSubmission> c = checks_.Check(principal.tenant, req->spec());
    if (!c.ok()) return done(c.status());
    jobs_->Submit(principal, *req, std::move(done),
                  c->base.has_value() ? &*c->base : nullptr, std::move(c->contamination));
  });
  if (!posted) {
    done(absl::UnavailableError(absl::StrCat(
        "the coordinator is already checking ", submissions_.pending(),
        " submissions; nothing was accepted, retry shortly")));
  }
  return reactor;
}

ServerUnaryReactor* JobServiceImpl::ListJobs(CallbackServerContext* ctx,
                                             const forge::v1::ListJobsRequest* req,
                                             forge::v1::ListJobsResponse* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  absl::StatusOr<std::vector<forge::v1::Job>> jobs = jobs_->List(*p, *req);
  if (!jobs.ok()) return FinishNow(ctx, jobs.status());
  for (auto& j : *jobs) *resp->add_jobs() = std::move(j);
  return FinishNow(ctx, absl::OkStatus());
}

ServerUnaryReactor* JobServiceImpl::GetJob(CallbackServerContext* ctx,
                                           const forge::v1::GetJobRequest* req,
                                           forge::v1::Job* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  absl::StatusOr<forge::v1::Job> job = jobs_->Get(*p, req->job_id());
  if (job.ok()) *resp = *std::move(job);
  return FinishNow(ctx, job.status());
}

ServerUnaryReactor* JobServiceImpl::CancelJob(CallbackServerContext* ctx,
                                              const forge::v1::CancelJobRequest* req,
                                              forge::v1::Job* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  jobs_->Cancel(*p, req->job_id(), req->reason(),
                [reactor, resp](absl::StatusOr<forge::v1::Job> job) {
                  if (job.ok()) *resp = *std::move(job);
                  reactor->Finish(ToGrpcStatus(job.status()));
                });
  return reactor;
}

ServerUnaryReactor* JobServiceImpl::GetJobLogs(CallbackServerContext* ctx,
                                               const forge::v1::GetJobLogsRequest* req,
                                               forge::v1::GetJobLogsResponse* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  absl::StatusOr<forge::v1::Job> job = jobs_->Get(*p, req->job_id());
  if (!job.ok()) return FinishNow(ctx, job.status());
  const int64_t max_bytes = req->max_bytes() == 0 ? (1 << 20) : req->max_bytes();
  if (max_bytes < 1 || max_bytes > (4 << 20) || req->offset() < 0) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "max_bytes must be in 1..4194304 and offset >= 0 (got ",
                              req->max_bytes(), ", ", req->offset(), ")")));
  }
  int64_t next = req->offset();
  absl::StatusOr<std::string> data =
      storage_->ReadLog(job->tenant(), job->id(), req->offset(), max_bytes, &next);
  if (!data.ok()) return FinishNow(ctx, data.status());
  // Workers forward a trainer's last lines just after it exits, so a terminal job's log is
  // complete only a little after the end.
  const bool settled = IsTerminal(job->state()) && job->has_end_time() &&
                       absl::Now() - FromProtoTime(job->end_time()) > absl::Seconds(3);
  resp->set_job_finished(settled && data->empty());
  resp->set_data(*std::move(data));
  resp->set_next_offset(next);
  return FinishNow(ctx, absl::OkStatus());
}

ServerUnaryReactor* JobServiceImpl::GetJobMetrics(CallbackServerContext* ctx,
                                                  const forge::v1::GetJobMetricsRequest* req,
                                                  forge::v1::GetJobMetricsResponse* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  absl::StatusOr<forge::v1::Job> job = jobs_->Get(*p, req->job_id());
  if (!job.ok()) return FinishNow(ctx, job.status());
  absl::StatusOr<std::vector<forge::v1::MetricPoint>> points =
      store_->LoadMetrics(job->id(), req->after_step());
  if (!points.ok()) return FinishNow(ctx, points.status());
  for (auto& pt : *points) *resp->add_points() = std::move(pt);
  return FinishNow(ctx, absl::OkStatus());
}

// --- WorkerService -------------------------------------------------------------------------

ServerUnaryReactor* WorkerServiceImpl::ListWorkers(CallbackServerContext* ctx,
                                                   const forge::v1::ListWorkersRequest* req,
                                                   forge::v1::ListWorkersResponse* resp) {
  absl::StatusOr<Principal> p = RequireUser(*auth_, ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  for (forge::v1::Worker& w : workers_->List()) {
    if (!p->is_admin()) {
      // A tenant sees the fleet but only its own jobs' ranks.
      google::protobuf::RepeatedPtrField<forge::v1::RankInfo> mine;
      for (const auto& r : w.ranks()) {
        if (jobs_->TenantOf(r.job_id()) == p->tenant) *mine.Add() = r;
      }
      w.mutable_ranks()->Swap(&mine);
    }
    *resp->add_workers() = std::move(w);
  }
  return FinishNow(ctx, absl::OkStatus());
}

// --- AdminService --------------------------------------------------------------------------

absl::StatusOr<Principal> AdminServiceImpl::RequireAdmin(const CallbackServerContext* ctx) const {
  absl::StatusOr<Principal> p = AuthenticateCall(*auth_, ctx);
  if (p.ok() && !p->is_admin()) {
    return absl::PermissionDeniedError(
        "this call needs an admin token (the coordinator writes one to STATE_DIR/admin.token)");
  }
  return p;
}

ServerUnaryReactor* AdminServiceImpl::CreateTenant(CallbackServerContext* ctx,
                                                   const forge::v1::CreateTenantRequest* req,
                                                   forge::v1::CreateTenantResponse* resp) {
  absl::StatusOr<Principal> p = RequireAdmin(ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auth_->CreateTenant(req->name(), [reactor, resp, name = req->name()](
                                       absl::StatusOr<CreatedToken> t) {
    if (t.ok()) {
      resp->set_tenant(name);
      resp->set_token(t->secret);
      resp->set_token_id(t->token_id);
    }
    reactor->Finish(ToGrpcStatus(t.status()));
  });
  return reactor;
}

ServerUnaryReactor* AdminServiceImpl::ListTenants(CallbackServerContext* ctx,
                                                  const forge::v1::ListTenantsRequest* req,
                                                  forge::v1::ListTenantsResponse* resp) {
  absl::StatusOr<Principal> p = RequireAdmin(ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  for (const TenantRecord& t : auth_->ListTenants()) {
    auto* out = resp->add_tenants();
    out->set_name(t.name);
    *out->mutable_create_time() = ToProtoTime(t.create_time);
  }
  return FinishNow(ctx, absl::OkStatus());
}

ServerUnaryReactor* AdminServiceImpl::CreateToken(CallbackServerContext* ctx,
                                                  const forge::v1::CreateTokenRequest* req,
                                                  forge::v1::CreateTokenResponse* resp) {
  absl::StatusOr<Principal> p = RequireAdmin(ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auth_->CreateToken(req->kind(), req->tenant(), req->note(),
                     [reactor, resp](absl::StatusOr<CreatedToken> t) {
                       if (t.ok()) {
                         resp->set_token(t->secret);
                         resp->set_token_id(t->token_id);
                       }
                       reactor->Finish(ToGrpcStatus(t.status()));
                     });
  return reactor;
}

ServerUnaryReactor* AdminServiceImpl::RevokeToken(CallbackServerContext* ctx,
                                                  const forge::v1::RevokeTokenRequest* req,
                                                  forge::v1::RevokeTokenResponse* resp) {
  absl::StatusOr<Principal> p = RequireAdmin(ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  if (req->token_id() == p->token_id) {
    return FinishNow(ctx, absl::FailedPreconditionError(
                              "refusing to revoke the token making this call; use another "
                              "admin token"));
  }
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auth_->RevokeToken(req->token_id(), [reactor](absl::Status s) {
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

ServerUnaryReactor* AdminServiceImpl::ListTokens(CallbackServerContext* ctx,
                                                 const forge::v1::ListTokensRequest* req,
                                                 forge::v1::ListTokensResponse* resp) {
  absl::StatusOr<Principal> p = RequireAdmin(ctx);
  if (!p.ok()) return FinishNow(ctx, p.status());
  for (const TokenRecord& t : auth_->ListTokens()) *resp->add_tokens() = ToProto(t);
  return FinishNow(ctx, absl::OkStatus());
}

}  // namespace forge::coordinator
