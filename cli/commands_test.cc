// The commands against an in-process fake coordinator, and the command line (app.cc).
#include "cli/commands.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cli/app.h"
#include "cli/client.h"
#include "cli/exit_codes.h"
#include "common/fake_clock.h"
#include "common/file_util.h"

namespace forge::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

// Records what the CLI sent and answers with canned responses. Thread-safe.
class FakeCoordinator final : public forge::v1::JobService::Service,
                              public forge::v1::WorkerService::Service,
                              public forge::v1::AdminService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext* context, const forge::v1::SubmitJobRequest* request,
                         forge::v1::SubmitJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    submit_request_ids_.push_back(request->request_id());
    submitted_ = request->spec();
    if (unavailable_submits_ > 0) {
      --unavailable_submits_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting up");
    }
    response->mutable_job()->set_id("j-00000000000000a1");
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* context, const forge::v1::ListJobsRequest* request,
                        forge::v1::ListJobsResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    list_request_ = *request;
    forge::v1::Job* job = response->add_jobs();
    job->set_id("j-1");
    job->set_state(forge::v1::JOB_STATE_QUEUED);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* context, const forge::v1::GetJobRequest* request,
                      forge::v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    if (request->job_id() != "j-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "job " + request->job_id() + " not found");
    }
    response->set_id("j-1");
    response->set_state(forge::v1::JOB_STATE_RUNNING);
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext* context, const forge::v1::CancelJobRequest* request,
                         forge::v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    response->set_id(request->job_id());
    response->set_state(forge::v1::JOB_STATE_CANCELLED);
    response->set_message("cancelled: " + request->reason());
    return grpc::Status::OK;
  }
  grpc::Status ListWorkers(grpc::ServerContext* context, const forge::v1::ListWorkersRequest*,
                           forge::v1::ListWorkersResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    forge::v1::Worker* w = response->add_workers();
    w->set_id("w-a");
    w->set_hostname("host-a");
    w->set_state(forge::v1::WORKER_STATE_ALIVE);
    w->add_devices()->set_id("cpu:0");
    return grpc::Status::OK;
  }
  grpc::Status CreateTenant(grpc::ServerContext* context,
                            const forge::v1::CreateTenantRequest* request,
                            forge::v1::CreateTenantResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    if (request->name() == "taken") {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "tenant taken already exists");
    }
    response->set_tenant(request->name());
    response->set_token("secret-tenant-token");
    response->set_token_id("tok-1");
    return grpc::Status::OK;
  }
  grpc::Status CreateToken(grpc::ServerContext* context,
                           const forge::v1::CreateTokenRequest* request,
                           forge::v1::CreateTokenResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    token_request_ = *request;
    response->set_token("secret-worker-token");
    response->set_token_id("tok-2");
    return grpc::Status::OK;
  }
  grpc::Status RevokeToken(grpc::ServerContext* context,
                           const forge::v1::RevokeTokenRequest* request,
                           forge::v1::RevokeTokenResponse*) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    revoked_ = request->token_id();
    return grpc::Status::OK;
  }

  void FailNextSubmits(int n) {
    absl::MutexLock lock(&mu_);
    unavailable_submits_ = n;
  }
  std::vector<std::string> submit_request_ids() {
    absl::MutexLock lock(&mu_);
    return submit_request_ids_;
  }
  forge::v1::JobSpec submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  std::vector<std::string> authorizations() {
    absl::MutexLock lock(&mu_);
    return authorizations_;
  }
  forge::v1::ListJobsRequest list_request() {
    absl::MutexLock lock(&mu_);
    return list_request_;
  }
  forge::v1::CreateTokenRequest token_request() {
    absl::MutexLock lock(&mu_);
    return token_request_;
  }
  std::string revoked() {
    absl::MutexLock lock(&mu_);
    return revoked_;
  }

 private:
  void Record(grpc::ServerContext* context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = context->client_metadata().find("authorization");
    authorizations_.push_back(it == context->client_metadata().end()
                                  ? "<none>"
                                  : std::string(it->second.data(), it->second.size()));
  }

  absl::Mutex mu_;
  int unavailable_submits_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> submit_request_ids_ ABSL_GUARDED_BY(mu_);
  forge::v1::JobSpec submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> authorizations_ ABSL_GUARDED_BY(mu_);
  forge::v1::ListJobsRequest list_request_ ABSL_GUARDED_BY(mu_);
  forge::v1::CreateTokenRequest token_request_ ABSL_GUARDED_BY(mu_);
  std::string revoked_ ABSL_GUARDED_BY(mu_);
};

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(static_cast<forge::v1::JobService::Service*>(&fake_));
    builder.RegisterService(static_cast<forge::v1::WorkerService::Service*>(&fake_));
    builder.RegisterService(static_cast<forge::v1::AdminService::Service*>(&fake_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ConnectionOptions options;
    options.coordinator = "in-process";
    options.token = "tok-secret";
    options.timeout = absl::Seconds(10);
    client_ = std::make_unique<CoordinatorClient>(
        options, server_->InProcessChannel(grpc::ChannelArguments()));
    env_.client = [this]() -> absl::StatusOr<CoordinatorClient*> {
      ++connects_;
      return client_.get();
    };
    env_.out = &out_;
    env_.err = &err_;
    env_.clock = &clock_;
    // A directory per test: ctest runs the tests of this file in parallel processes.
    std::string dir = ::testing::TempDir() + "/commands-XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    spec_path_ = dir + "/spec.yaml";
  }
  void TearDown() override { server_->Shutdown(); }

  void WriteSpec(absl::string_view yaml) { ASSERT_TRUE(WriteFileAtomic(spec_path_, yaml).ok()); }

  FakeCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<CoordinatorClient> client_;
  FakeClock clock_;
  std::ostringstream out_, err_;
  CommandEnv env_;
  int connects_ = 0;
  std::string spec_path_;
};

TEST_F(CommandsTest, SubmitPrintsTheJobIdAloneAndSendsTheToken) {
  WriteSpec("name: j\nmodel: {preset: tiny}\nresources: {ranks: 2, device: cpu}\n");
  ASSERT_TRUE(RunSubmit(env_, spec_path_).ok());
  EXPECT_EQ(out_.str(), "j-00000000000000a1\n");
  EXPECT_EQ(fake_.submitted().resources().ranks(), 2);
  EXPECT_EQ(fake_.submitted().model().preset(), "tiny");
  EXPECT_THAT(fake_.authorizations(), ElementsAre("Bearer tok-secret"));
  ASSERT_EQ(fake_.submit_request_ids().size(), 1u);
  EXPECT_THAT(fake_.submit_request_ids()[0], MatchesRegex("r-[0-9a-f]{24}"));
}

TEST_F(CommandsTest, SubmitRetriesUnavailableWithTheSameRequestId) {
  WriteSpec("name: j\n");
  fake_.FailNextSubmits(2);
  SubmitOptions options;
  options.first_backoff = absl::Milliseconds(1);
  ASSERT_TRUE(RunSubmit(env_, spec_path_, options).ok());
  EXPECT_EQ(out_.str(), "j-00000000000000a1\n");
  const std::vector<std::string> ids = fake_.submit_request_ids();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(ids[1], ids[2]);
  EXPECT_THAT(err_.str(), HasSubstr("unavailable; retrying"));
}

TEST_F(CommandsTest, SubmitGivesUpAfterTheRetryWindow) {
  WriteSpec("name: j\n");
  fake_.FailNextSubmits(1000);
  SubmitOptions options;
  // A window well past one call (the first connects, which takes long on a loaded machine),
  // so that the test sees retries; the capped backoff keeps it short.
  options.retry_for = absl::Milliseconds(400);
  options.first_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(40);
  const absl::Status status = RunSubmit(env_, spec_path_, options);
  EXPECT_EQ(ExitCodeFor(status), kExitUnreachable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("starting up"));
  EXPECT_GE(fake_.submit_request_ids().size(), 2u);
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, SubmitRejectsAnInvalidSpecBeforeConnecting) {
  WriteSpec("name: j\ntrain: {lerning_rate: 1}\n");
  const absl::Status status = RunSubmit(env_, spec_path_);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()),
              StartsWith(spec_path_ + ":2:9: unknown key \"lerning_rate\""));
  EXPECT_EQ(connects_, 0);
  EXPECT_TRUE(fake_.submit_request_ids().empty());
}

TEST_F(CommandsTest, SubmitOfAMissingFileIsAUsageError) {
  const absl::Status status = RunSubmit(env_, spec_path_ + ".missing");
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), HasSubstr("cannot read the job spec"));
}

TEST_F(CommandsTest, JobsPassesTheStatesAndPrintsATable) {
  ASSERT_TRUE(RunJobs(env_, {"queued", "RUNNING"}, OutputFormat::kTable).ok());
  EXPECT_THAT(fake_.list_request().states(),
              ElementsAre(forge::v1::JOB_STATE_QUEUED, forge::v1::JOB_STATE_RUNNING));
  EXPECT_THAT(out_.str(), StartsWith("ID   NAME  STATE   RANKS"));
  EXPECT_THAT(out_.str(), HasSubstr("j-1"));
}

TEST_F(CommandsTest, JobsWithAnUnknownStateIsAUsageError) {
  EXPECT_EQ(ExitCodeFor(RunJobs(env_, {"done"}, OutputFormat::kTable)), kExitUsage);
  EXPECT_EQ(connects_, 0);
}

TEST_F(CommandsTest, StatusOfAnUnknownJobIsNotFound) {
  const absl::Status status = RunStatus(env_, "j-404", OutputFormat::kTable);
  EXPECT_EQ(ExitCodeFor(status), kExitNotFound);
  EXPECT_EQ(status.message(), "job j-404 not found");
}

TEST_F(CommandsTest, StatusAsJsonIsTheWholeJob) {
  ASSERT_TRUE(RunStatus(env_, "j-1", OutputFormat::kJson).ok());
  forge::v1::Job job;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &job).ok()) << out_.str();
  EXPECT_EQ(job.id(), "j-1");
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_RUNNING);
}

TEST_F(CommandsTest, CancelSendsTheReason) {
  ASSERT_TRUE(RunCancel(env_, "j-1", "wrong data", OutputFormat::kTable).ok());
  EXPECT_EQ(out_.str(), "job j-1 CANCELLED: cancelled: wrong data\n");
}

TEST_F(CommandsTest, WorkersAsJson) {
  ASSERT_TRUE(RunWorkers(env_, OutputFormat::kJson).ok());
  forge::v1::ListWorkersResponse response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &response).ok());
  ASSERT_EQ(response.workers_size(), 1);
  EXPECT_EQ(response.workers(0).hostname(), "host-a");
  EXPECT_THAT(out_.str(), HasSubstr("\"memory_bytes\": \"0\""));  // defaults shown
}

TEST_F(CommandsTest, TenantCreatePrintsTheTokenAloneAndANoteOnStderr) {
  ASSERT_TRUE(RunTenantCreate(env_, "acme").ok());
  EXPECT_EQ(out_.str(), "secret-tenant-token\n");
  EXPECT_THAT(err_.str(), HasSubstr("shown only this once"));
  EXPECT_THAT(err_.str(), Not(HasSubstr("secret")));
  EXPECT_EQ(ExitCodeFor(RunTenantCreate(env_, "taken")), kExitRefused);
}

TEST_F(CommandsTest, TokenCreateAndRevoke) {
  ASSERT_TRUE(RunTokenCreate(env_, forge::v1::TOKEN_KIND_WORKER, "", "rack-7").ok());
  EXPECT_EQ(out_.str(), "secret-worker-token\n");
  EXPECT_EQ(fake_.token_request().kind(), forge::v1::TOKEN_KIND_WORKER);
  EXPECT_EQ(fake_.token_request().note(), "rack-7");
  ASSERT_TRUE(RunTokenRevoke(env_, "tok-2").ok());
  EXPECT_EQ(fake_.revoked(), "tok-2");
}

TEST(ResolveTokenTest, FileWinsAndIsTrimmed) {
  const std::string path = ::testing::TempDir() + "/token";
  ASSERT_TRUE(WriteFileAtomic(path, "  abc123\n").ok());
  EXPECT_EQ(*ResolveToken(path, "from-env"), "abc123");
  EXPECT_EQ(*ResolveToken("", " from-env\n"), "from-env");
}

TEST(ResolveTokenTest, MissingTokenIsAUsageErrorNamingBothWays) {
  for (const char* env : {static_cast<const char*>(nullptr), "  "}) {
    absl::StatusOr<std::string> token = ResolveToken("", env);
    ASSERT_FALSE(token.ok());
    EXPECT_EQ(ExitCodeFor(token.status()), kExitUsage);
    EXPECT_THAT(std::string(token.status().message()), HasSubstr("--token-file"));
    EXPECT_THAT(std::string(token.status().message()), HasSubstr("FORGE_TOKEN"));
  }
  const std::string empty = ::testing::TempDir() + "/empty.token";
  ASSERT_TRUE(WriteFileAtomic(empty, "\n").ok());
  EXPECT_EQ(ExitCodeFor(ResolveToken(empty, "x").status()), kExitUsage);
  EXPECT_EQ(ExitCodeFor(ResolveToken(empty + ".missing", "x").status()), kExitUsage);
}

// Runs the command line with FORGE_TOKEN=token (unset when null).
int RunCli(std::vector<const char*> args, const char* token, std::string* out, std::string* err) {
  if (token == nullptr) {
    unsetenv("FORGE_TOKEN");
  } else {
    setenv("FORGE_TOKEN", token, 1);
  }
  unsetenv("FORGE_COORDINATOR");
  args.insert(args.begin(), "forge");
  std::ostringstream o, e;
  const int code = RunForgeCli(static_cast<int>(args.size()), args.data(), o, e);
  *out = o.str();
  *err = e.str();
  return code;
}

TEST(AppTest, HelpListsCommandsAndExitCodes) {
  std::string out, err;
  EXPECT_EQ(RunCli({"--help"}, nullptr, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("submit"));
  EXPECT_THAT(out, HasSubstr("Exit codes:"));
  EXPECT_EQ(RunCli({"admin", "token", "create", "--help"}, nullptr, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("--worker"));
}

TEST(AppTest, UsageErrorsExitTwo) {
  std::string out, err;
  EXPECT_EQ(RunCli({}, "t", &out, &err), kExitUsage);
  EXPECT_EQ(RunCli({"jobs", "--bogus"}, "t", &out, &err), kExitUsage);
  EXPECT_THAT(err, StartsWith("forge: "));
  EXPECT_EQ(RunCli({"jobs", "-o", "yaml"}, "t", &out, &err), kExitUsage);
  EXPECT_EQ(RunCli({"status"}, "t", &out, &err), kExitUsage);
  EXPECT_EQ(RunCli({"admin", "token", "create", "--worker", "--admin"}, "t", &out, &err),
            kExitUsage);
  EXPECT_EQ(RunCli({"admin", "token", "create"}, "t", &out, &err), kExitUsage);
  EXPECT_THAT(err, HasSubstr("exactly one of --worker, --tenant NAME or --admin"));
  EXPECT_EQ(RunCli({"jobs"}, nullptr, &out, &err), kExitUsage);
  EXPECT_THAT(err, HasSubstr("no token"));
}

TEST(AppTest, UnreachableCoordinatorExitsSix) {
  std::string out, err;
  // Port 1 on loopback refuses connections; the global option may follow the command.
  EXPECT_EQ(RunCli({"jobs", "--coordinator", "127.0.0.1:1", "--timeout", "5"}, "t", &out, &err),
            kExitUnreachable);
  EXPECT_THAT(err, StartsWith("forge: cannot reach the coordinator at 127.0.0.1:1"));
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace forge::cli
