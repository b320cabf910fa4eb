// Every RPC is authenticated except health: calls without a token, with a wrong or revoked
// token, with the wrong kind of token, and across tenants are refused.
#include <grpcpp/grpcpp.h>

#include "common/file_util.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace forge::testing {
namespace {

using forge::v1::AdminService;
using forge::v1::JobService;
using forge::v1::WorkerService;
using ::testing::HasSubstr;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator();
    acme_ = cluster_.CreateTenant("acme");
    globex_ = cluster_.CreateTenant("globex");
    cluster_.RegisterDataset(acme_, "d", 20);
    cluster_.RegisterDataset(globex_, "d", 20);
    worker_ = cluster_.CreateWorkerToken();
    jobs_ = JobService::NewStub(cluster_.channel());
    admin_ = AdminService::NewStub(cluster_.channel());
    workers_ = WorkerService::NewStub(cluster_.channel());
  }

  grpc::Status Submit(const std::string& token, std::string* id) {
    grpc::ClientContext ctx;
    if (!token.empty()) Cluster::Authorize(&ctx, token);
    forge::v1::SubmitJobRequest req;
    req.mutable_spec()->set_name("j");
    req.mutable_spec()->mutable_model()->set_preset("tiny");
    auto* m = req.mutable_spec()->mutable_data()->add_mixture();
    m->set_dataset("d");
    m->set_weight(1);
    forge::v1::SubmitJobResponse resp;
    grpc::Status s = jobs_->SubmitJob(&ctx, req, &resp);
    if (id) *id = resp.job().id();
    return s;
  }
  grpc::Status List(const std::string& token, forge::v1::ListJobsResponse* resp) {
    grpc::ClientContext ctx;
    if (!token.empty()) Cluster::Authorize(&ctx, token);
    return jobs_->ListJobs(&ctx, {}, resp);
  }

  Cluster cluster_;
  std::string acme_, globex_, worker_;
  std::unique_ptr<JobService::Stub> jobs_;
  std::unique_ptr<AdminService::Stub> admin_;
  std::unique_ptr<WorkerService::Stub> workers_;
};

TEST_F(AuthTest, MissingAndWrongTokensAreUnauthenticated) {
  forge::v1::ListJobsResponse list;
  EXPECT_EQ(List("", &list).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(List("forge_tenant_AAAA", &list).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Submit("", nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Basic abc");
    forge::v1::ListWorkersResponse resp;
    EXPECT_EQ(workers_->ListWorkers(&ctx, {}, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    forge::v1::CreateTenantRequest req;
    req.set_name("evil");
    forge::v1::CreateTenantResponse resp;
    EXPECT_EQ(admin_->CreateTenant(&ctx, req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {  // A stream without a token ends before anything is exchanged.
    grpc::ClientContext ctx;
    auto stream = workers_->Connect(&ctx);
    forge::v1::CoordinatorMessage msg;
    EXPECT_FALSE(stream->Read(&msg));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_F(AuthTest, HealthIsOpenButReflectionIsNot) {
  auto health = grpc::health::v1::Health::NewStub(cluster_.channel());
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(cluster_.channel());
  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("");
  {  // Without a token: refused.
    grpc::ClientContext rctx;
    auto stream = reflection->ServerReflectionInfo(&rctx);
    stream->Write(list);
    stream->WritesDone();
    grpc::reflection::v1alpha::ServerReflectionResponse out;
    EXPECT_FALSE(stream->Read(&out));
    EXPECT_FALSE(stream->Finish().ok());
  }
  {  // With one: our services are listed.
    grpc::ClientContext rctx;
    Cluster::Authorize(&rctx, acme_);
    auto stream = reflection->ServerReflectionInfo(&rctx);
    stream->Write(list);
    stream->WritesDone();
    grpc::reflection::v1alpha::ServerReflectionResponse out;
    ASSERT_TRUE(stream->Read(&out));
    std::vector<std::string> names;
    for (const auto& s : out.list_services_response().service()) names.push_back(s.name());
    EXPECT_THAT(names, ::testing::Contains("forge.v1.JobService"));
    EXPECT_TRUE(stream->Finish().ok());
  }
}

TEST_F(AuthTest, TenantsCannotSeeEachOthersJobs) {
  std::string id;
  ASSERT_TRUE(Submit(acme_, &id).ok());
  {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, globex_);
    forge::v1::GetJobRequest req;
    req.set_job_id(id);
    forge::v1::Job job;
    grpc::Status s = jobs_->GetJob(&ctx, req, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, globex_);
    forge::v1::CancelJobRequest req;
    req.set_job_id(id);
    forge::v1::Job job;
    EXPECT_EQ(jobs_->CancelJob(&ctx, req, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  forge::v1::ListJobsResponse list;
  ASSERT_TRUE(List(globex_, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
  ASSERT_TRUE(List(acme_, &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  EXPECT_EQ(list.jobs(0).tenant(), "acme");
  // The admin sees every tenant's jobs.
  forge::v1::ListJobsResponse all;
  ASSERT_TRUE(List(cluster_.admin_token(), &all).ok());
  EXPECT_EQ(all.jobs_size(), 1);
  // Still acme's and still QUEUED: the refused cancel changed nothing.
  EXPECT_EQ(all.jobs(0).state(), forge::v1::JOB_STATE_QUEUED);
}

TEST_F(AuthTest, WorkerTokensOnlyActAsWorkers) {
  EXPECT_EQ(Submit(worker_, nullptr).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  forge::v1::ListJobsResponse list;
  EXPECT_EQ(List(worker_, &list).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, worker_);
  forge::v1::CreateTokenRequest req;
  req.set_kind(forge::v1::TOKEN_KIND_ADMIN);
  forge::v1::CreateTokenResponse resp;
  EXPECT_EQ(admin_->CreateToken(&ctx, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, TenantTokensCannotActAsWorkersOrAdmins) {
  {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, acme_);
    auto stream = workers_->Connect(&ctx);
    forge::v1::CoordinatorMessage msg;
    EXPECT_FALSE(stream->Read(&msg));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, acme_);
  forge::v1::CreateTenantRequest req;
  req.set_name("sneaky");
  forge::v1::CreateTenantResponse resp;
  EXPECT_EQ(admin_->CreateTenant(&ctx, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Admin tokens do not own jobs.
  EXPECT_EQ(Submit(cluster_.admin_token(), nullptr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, RevokedTokenStopsWorkingAndSecretsAreStoredHashed) {
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, cluster_.admin_token());
  forge::v1::ListTokensResponse tokens;
  ASSERT_TRUE(admin_->ListTokens(&ctx, {}, &tokens).ok());
  std::string acme_id;
  for (const auto& t : tokens.tokens()) {
    if (t.tenant() == "acme") acme_id = t.token_id();
  }
  ASSERT_FALSE(acme_id.empty());

  // No secret appears anywhere in the state directory's database files.
  for (const char* f : {"/state/forge.db", "/state/forge.db-wal"}) {
    auto content = ReadFile(cluster_.dir() + f);
    if (!content.ok()) continue;
    EXPECT_EQ(content->find(acme_), std::string::npos) << f;
    EXPECT_EQ(content->find(worker_), std::string::npos) << f;
  }

  grpc::ClientContext rctx;
  Cluster::Authorize(&rctx, cluster_.admin_token());
  forge::v1::RevokeTokenRequest req;
  req.set_token_id(acme_id);
  forge::v1::RevokeTokenResponse resp;
  ASSERT_TRUE(admin_->RevokeToken(&rctx, req, &resp).ok());
  forge::v1::ListJobsResponse list;
  grpc::Status s = List(acme_, &list);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("revoked"));
}

}  // namespace
}  // namespace forge::testing
