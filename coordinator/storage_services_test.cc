// DataService and CheckpointService over a real in-process gRPC server: authentication,
// the mixed sync/callback methods, and status translation.
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "coordinator/auth.h"
#include "coordinator/checkpoint_service.h"
#include "coordinator/data_service.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "coordinator/test_util.h"
#include "forge/v1/training.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

namespace fs = std::filesystem;
using namespace forge::v1;  // NOLINT: test brevity

std::map<std::string, std::string> ReadDir(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    out[e.path().filename().string()] = *ReadFile(e.path().string());
  }
  return out;
}

class StorageServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("storage_services_test");
    store_ = OpenTestStore(dir_);
    auth_ = std::make_unique<AuthManager>(store_.get(), RealClock());
    ASSERT_TRUE(auth_->Recover().ok());
    StorageGatewayOptions go;
    go.root = dir_ + "/storage";
    gateway_ = *StorageGateway::Open(go, store_.get());
    acme_ = CreateTenant("acme");
    beta_ = CreateTenant("beta");
    worker_ = CreateToken(TOKEN_KIND_WORKER);
    admin_ = CreateToken(TOKEN_KIND_ADMIN);

    data_service_ = NewDataService(auth_.get(), gateway_.get());
    checkpoint_service_ = NewCheckpointService(auth_.get(), gateway_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(data_service_.get());
    builder.RegisterService(checkpoint_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel = server_->InProcessChannel(grpc::ChannelArguments());
    data_ = DataService::NewStub(channel);
    checkpoints_ = CheckpointService::NewStub(channel);
  }
  void TearDown() override {
    server_->Shutdown();
    server_.reset();
    gateway_.reset();
    auth_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  std::string CreateTenant(const std::string& name) {
    absl::Notification done;
    std::string secret;
    auth_->CreateTenant(name, [&](absl::StatusOr<CreatedToken> t) {
      EXPECT_TRUE(t.ok()) << t.status();
      if (t.ok()) secret = t->secret;
      done.Notify();
    });
    done.WaitForNotification();
    return secret;
  }
  std::string CreateToken(TokenKind kind) {
    absl::Notification done;
    std::string secret;
    auth_->CreateToken(kind, "", "test", [&](absl::StatusOr<CreatedToken> t) {
      EXPECT_TRUE(t.ok()) << t.status();
      if (t.ok()) secret = t->secret;
      done.Notify();
    });
    done.WaitForNotification();
    return secret;
  }

  static void Auth(grpc::ClientContext* ctx, const std::string& token) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }

  std::map<std::string, std::string> Prepare() {
    const std::string in = dir_ + "/in";
    EXPECT_TRUE(MakeDirs(in).ok());
    EXPECT_TRUE(WriteFileAtomic(in + "/a.txt", "first document\n\nsecond document\n").ok());
    PrepareOptions o;
    o.inputs = {in};
    o.name = "books";
    o.out_dir = dir_ + "/prepared";
    o.split_paragraphs = true;
    EXPECT_TRUE(PrepareDataset(o).ok());
    return ReadDir(o.out_dir);
  }

  grpc::Status Register(const std::string& token, const std::string& name,
                        const std::map<std::string, std::string>& files, DatasetInfo* info) {
    grpc::ClientContext ctx;
    Auth(&ctx, token);
    auto writer = data_->RegisterDataset(&ctx, info);
    DatasetUpload header;
    header.mutable_header()->set_name(name);
    for (const auto& [n, d] : files) {
      FileInfo* f = header.mutable_header()->add_files();
      f->set_name(n);
      f->set_size(static_cast<int64_t>(d.size()));
      f->set_sha256(Sha256Hex(d));
    }
    writer->Write(header);
    int i = 0;
    for (const auto& [n, d] : files) {
      DatasetUpload chunk;
      chunk.mutable_chunk()->set_file(i++);
      chunk.mutable_chunk()->set_data(d);
      if (!d.empty() && !writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  std::string dir_, acme_, beta_, worker_, admin_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<AuthManager> auth_;
  std::unique_ptr<StorageGateway> gateway_;
  std::unique_ptr<grpc::Service> data_service_, checkpoint_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<DataService::Stub> data_;
  std::unique_ptr<CheckpointService::Stub> checkpoints_;
};

TEST_F(StorageServicesTest, RegisterAndListDatasets) {
  const auto files = Prepare();
  DatasetInfo info;
  grpc::Status s = Register(acme_, "books", files, &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.tenant(), "acme");
  EXPECT_EQ(info.documents(), 2);

  for (const auto& [token, want] :
       std::vector<std::pair<std::string, size_t>>{{acme_, 1}, {beta_, 0}, {admin_, 1}}) {
    grpc::ClientContext ctx;
    Auth(&ctx, token);
    ListDatasetsResponse resp;
    ASSERT_TRUE(data_->ListDatasets(&ctx, ListDatasetsRequest(), &resp).ok());
    EXPECT_EQ(resp.datasets_size(), static_cast<int>(want));
  }

  std::map<std::string, std::string> other = files;
  other["manifest.json"] += " ";
  EXPECT_EQ(Register(acme_, "books", other, &info).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Register(worker_, "x", files, &info).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register(admin_, "x", files, &info).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register("forge_tenant_bogus", "x", files, &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(StorageServicesTest, ListAndDownloadCheckpoints) {
  std::map<std::string, std::string> files = {{"model.safetensors", std::string(5000, 'w')}};
  nlohmann::json manifest = {
      {"format", "forge.checkpoint"},
      {"files",
       {{{"name", "model.safetensors"}, {"bytes", 5000}, {"sha256", Sha256Hex(files.begin()->second)}}}}};
  files["MANIFEST.json"] = manifest.dump();
  CheckpointHeader header;
  header.set_step(10);
  std::vector<FileChunk> chunks;
  for (const auto& [n, d] : files) {
    FileInfo* f = header.add_files();
    f->set_name(n);
    f->set_size(static_cast<int64_t>(d.size()));
    f->set_sha256(Sha256Hex(d));
    FileChunk& c = chunks.emplace_back();
    c.set_file(header.files_size() - 1);
    c.set_data(d);
  }
  size_t next = 0;
  absl::StatusOr<CheckpointInfo> c = gateway_->ReceiveCheckpoint(
      "acme", "j-1", 1, 3, header,
      [&](CheckpointUpload* m) {
        if (next == chunks.size()) return false;
        *m->mutable_chunk() = chunks[next++];
        return true;
      },
      nullptr);
  ASSERT_TRUE(c.ok()) << c.status();

  {
    grpc::ClientContext ctx;
    Auth(&ctx, acme_);
    ListCheckpointsResponse resp;
    ListCheckpointsRequest req;
    req.set_job_id("j-1");
    ASSERT_TRUE(checkpoints_->ListCheckpoints(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.checkpoints_size(), 1);
    EXPECT_EQ(resp.checkpoints(0).id(), c->id());
  }
  {
    grpc::ClientContext ctx;
    Auth(&ctx, acme_);
    DownloadCheckpointRequest req;
    req.set_checkpoint_id(c->id());
    auto reader = checkpoints_->DownloadCheckpoint(&ctx, req);
    FileTransfer m;
    std::vector<FileInfo> announced;
    std::map<std::string, std::string> got;
    while (reader->Read(&m)) {
      if (m.has_header()) {
        announced.assign(m.header().files().begin(), m.header().files().end());
      } else {
        got[announced.at(m.chunk().file()).name()] += m.chunk().data();
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(got, files);
  }
  {
    grpc::ClientContext ctx;
    Auth(&ctx, beta_);
    DownloadCheckpointRequest req;
    req.set_checkpoint_id(c->id());
    auto reader = checkpoints_->DownloadCheckpoint(&ctx, req);
    FileTransfer m;
    EXPECT_FALSE(reader->Read(&m));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    Auth(&ctx, worker_);
    ListCheckpointsResponse resp;
    EXPECT_EQ(checkpoints_->ListCheckpoints(&ctx, ListCheckpointsRequest(), &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
}

}  // namespace
}  // namespace forge::coordinator
