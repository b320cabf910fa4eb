#include "coordinator/service.h"

#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "coordinator/contamination.h"
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
  std::optional<ResolvedBase> base;
  std::string contamination;
  if (p->is_tenant()) {
    if (absl::Status s = CheckReferences(p->tenant, req->spec()); !s.ok()) return FinishNow(ctx, s);
    absl::StatusOr<std::string> held_out = CheckHeldOut(p->tenant, req->spec());
    if (!held_out.ok()) return FinishNow(ctx, held_out.status());
    contamination = *std::move(held_out);
    if (req->spec().has_base()) {
      absl::StatusOr<ResolvedBase> resolved = ResolveBase(p->tenant, req->spec());
      if (!resolved.ok()) return FinishNow(ctx, resolved.status());
      base = *std::move(resolved);
    }
  }
  ServerUnaryReactor* reactor = ctx->DefaultReactor();
  jobs_->Submit(
      *p, *req,
      [reactor, resp](absl::StatusOr<forge::v1::SubmitJobResponse> r) {
        if (r.ok()) *resp = *std::move(r);
        reactor->Finish(ToGrpcStatus(r.status()));
      },
      base.has_value() ? &*base : nullptr, std::move(contamination));
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

absl::Status JobServiceImpl::CheckReferences(const std::string& tenant,
                                             const forge::v1::JobSpec& spec) const {
  auto check = [&](const std::string& field, const std::string& name) -> absl::Status {
    if (name.empty() || storage_->GetDataset(tenant, name).ok()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: ", field, ": dataset \"", name, "\" is not registered for tenant ", tenant,
        "; register it first (forge data register ", name, " DIR) or fix the name (forge data "
        "list shows what is registered)"));
  };
  for (int i = 0; i < spec.data().mixture_size(); ++i) {
    RETURN_IF_ERROR(check(absl::StrCat("data.mixture[", i, "].dataset"),
                          spec.data().mixture(i).dataset()));
  }
  for (int i = 0; i < spec.eval().suites_size(); ++i) {
    RETURN_IF_ERROR(check(absl::StrCat("eval.suites[", i, "]"), spec.eval().suites(i)));
  }
  if (!spec.base().checkpoint().empty() &&
      !storage_->GetCheckpoint(tenant, spec.base().checkpoint()).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: base.checkpoint: checkpoint ", spec.base().checkpoint(),
        " is not a committed checkpoint of tenant ", tenant, "; forge checkpoints lists them"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobServiceImpl::CheckHeldOut(const std::string& tenant,
                                                         const forge::v1::JobSpec& spec) const {
  if (spec.eval().suites().empty() || spec.data().mixture().empty()) return std::string();
  // Each dataset opened once, whether it is a suite, a source or both.
  std::map<std::string, Dataset> open;
  auto get = [&](const std::string& name) -> absl::StatusOr<const Dataset*> {
    if (auto it = open.find(name); it != open.end()) return &it->second;
    ASSIGN_OR_RETURN(Dataset d, storage_->OpenDataset(tenant, name));
    return &open.emplace(name, std::move(d)).first->second;
  };
  std::vector<const Dataset*> suites, sources;
  std::set<std::string> seen;
  for (const std::string& s : spec.eval().suites()) {
    if (!seen.insert("s/" + s).second) continue;
    ASSIGN_OR_RETURN(const Dataset* d, get(s));
    suites.push_back(d);
  }
  for (const auto& m : spec.data().mixture()) {
    if (!seen.insert("t/" + m.dataset()).second) continue;
    ASSIGN_OR_RETURN(const Dataset* d, get(m.dataset()));
    sources.push_back(d);
  }
  ASSIGN_OR_RETURN(ContaminationReport report,
                   CheckContamination(suites, sources, ContaminationOptions{}));
  const std::string summary = report.Summary();
  if (report.contaminated() && !spec.eval().allow_contamination()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job spec: eval.suites: held-out data is contaminated by the training data, so its "
        "evals could not be trusted; the job was not accepted.\n",
        summary,
        "\nfix: remove those documents from the training sources (or the suites), or set "
        "eval.allow_contamination: true to run with the overlap reported"));
  }
  return summary;
}

absl::StatusOr<ResolvedBase> JobServiceImpl::ResolveBase(const std::string& tenant,
                                                         const forge::v1::JobSpec& spec) const {
  const forge::v1::BaseSpec& b = spec.base();
  std::string checkpoint_id = b.checkpoint();
  if (!b.model().empty()) {
    if (catalog_ == nullptr) {
      return absl::UnimplementedError("base.model: this coordinator has no model catalog");
    }
    absl::StatusOr<forge::v1::ModelEntry> entry = catalog_->Resolve(tenant, b.model(), b.stage());
    if (!entry.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("job spec: ", entry.status().message()));
    }
    checkpoint_id = entry->checkpoint();
  }
  absl::StatusOr<forge::v1::CheckpointInfo> info = storage_->GetCheckpoint(tenant, checkpoint_id);
  if (!info.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: base: checkpoint ", checkpoint_id, " is not a committed checkpoint of tenant ",
        tenant, "; forge checkpoints lists them"));
  }
  if (info->shape().layers() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job spec: base: checkpoint ", checkpoint_id,
        " records no model shape (it predates the catalog's lineage); start from a newer "
        "checkpoint"));
  }
  ResolvedBase r;
  r.checkpoint = checkpoint_id;
  r.stage = !b.model().empty() ? b.stage() : info->stage();
  r.shape = info->shape();
  return r;
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
