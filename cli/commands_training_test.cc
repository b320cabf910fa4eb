// forge data register / list, checkpoints, export, watch, logs and the training part of
// status, against an in-process fake coordinator that records what it was sent.
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cli/app.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/fake_clock.h"
#include "common/file_util.h"
#include "forge/v1/training.grpc.pb.h"

namespace forge::cli {
namespace {

namespace fs = std::filesystem;
using forge::v1::Job;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// What the fake received in one RegisterDataset stream.
struct ReceivedUpload {
  forge::v1::DatasetHeader header;
  std::map<int, std::string> data;  // file index -> bytes, reassembled
  std::vector<int64_t> chunk_sizes;
  std::string error;  // the first out-of-order chunk, if any
};

// Records what the CLI sent and answers from what the test set up. Thread-safe.
class FakeTrainingCoordinator final : public forge::v1::JobService::Service,
                                      public forge::v1::DataService::Service,
                                      public forge::v1::CheckpointService::Service {
 public:
  // --- JobService: GetJob answers the scripted snapshots in turn (the last one repeats).
  grpc::Status GetJob(grpc::ServerContext*, const forge::v1::GetJobRequest* request,
                      Job* response) override {
    absl::MutexLock lock(&mu_);
    ++get_job_calls_;
    if (script_.empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    const Snapshot s = script_.front();
    if (script_.size() > 1) script_.pop_front();
    if (s.code != grpc::StatusCode::OK) return grpc::Status(s.code, "coordinator restarting");
    *response = s.job;
    response->set_id(request->job_id());
    return grpc::Status::OK;
  }
  grpc::Status GetJobLogs(grpc::ServerContext*, const forge::v1::GetJobLogsRequest* request,
                          forge::v1::GetJobLogsResponse* response) override {
    absl::MutexLock lock(&mu_);
    log_offsets_.push_back(request->offset());
    if (unavailable_logs_ > 0) {
      --unavailable_logs_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    const size_t offset = std::min<size_t>(request->offset(), log_.size());
    const std::string data = log_.substr(offset, 16);  // small pages: exercises paging
    response->set_data(data);
    response->set_next_offset(static_cast<int64_t>(offset + data.size()));
    response->set_job_finished(log_finished_);
    return grpc::Status::OK;
  }

  // --- DataService.
  grpc::Status RegisterDataset(grpc::ServerContext*,
                               grpc::ServerReader<forge::v1::DatasetUpload>* reader,
                               forge::v1::DatasetInfo* response) override {
    ReceivedUpload got;
    forge::v1::DatasetUpload message;
    while (reader->Read(&message)) {
      if (message.has_header()) {
        got.header = message.header();
        continue;
      }
      const forge::v1::FileChunk& c = message.chunk();
      got.chunk_sizes.push_back(static_cast<int64_t>(c.data().size()));
      if (c.offset() != static_cast<int64_t>(got.data[c.file()].size()) && got.error.empty()) {
        got.error = absl::StrCat("file ", c.file(), " chunk at ", c.offset());
      }
      got.data[c.file()] += c.data();
    }
    absl::MutexLock lock(&mu_);
    uploads_.push_back(got);
    if (unavailable_uploads_ > 0) {
      --unavailable_uploads_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    response->set_name(got.header.name());
    response->set_documents(42);
    response->set_tokens(123456);
    response->set_bytes(2 << 20);
    return grpc::Status::OK;
  }
  grpc::Status ListDatasets(grpc::ServerContext*, const forge::v1::ListDatasetsRequest*,
                            forge::v1::ListDatasetsResponse* response) override {
    forge::v1::DatasetInfo* d = response->add_datasets();
    d->set_name("acme-tickets");
    d->set_documents(1200);
    d->set_tokens(3400000);
    d->set_held_out_documents(60);
    d->set_bytes(6800000);
    d->mutable_create_time()->set_seconds(1'800'000'000 - 120);
    return grpc::Status::OK;
  }

  // --- CheckpointService.
  grpc::Status ListCheckpoints(grpc::ServerContext*, const forge::v1::ListCheckpointsRequest* r,
                               forge::v1::ListCheckpointsResponse* response) override {
    absl::MutexLock lock(&mu_);
    list_checkpoints_job_ = r->job_id();
    for (int step : {200, 600, 400}) {  // not in order: the CLI sorts
      forge::v1::CheckpointInfo* c = response->add_checkpoints();
      c->set_id(absl::StrCat("c-", step));
      c->set_job_id("j-1");
      c->set_step(step);
      c->set_attempt(step == 600 ? 2 : 1);
      c->set_bytes(int64_t{step} << 20);
      c->mutable_create_time()->set_seconds(1'800'000'000 - 1000 + step);
    }
    return grpc::Status::OK;
  }
  grpc::Status DownloadCheckpoint(grpc::ServerContext* context,
                                  const forge::v1::DownloadCheckpointRequest* request,
                                  grpc::ServerWriter<forge::v1::FileTransfer>* writer) override {
    if (stall_download_) {  // set before the test starts; never changes while serving
      forge::v1::FileTransfer empty_header;
      empty_header.mutable_header();
      writer->Write(empty_header);
      while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    absl::MutexLock lock(&mu_);
    download_request_ = *request;
    forge::v1::FileTransfer header;
    std::vector<std::string> contents;
    for (const std::string& name : request->files()) {
      auto it = checkpoint_files_.find(name);
      if (it == checkpoint_files_.end()) continue;
      forge::v1::FileInfo* f = header.mutable_header()->add_files();
      f->set_name(name);
      f->set_size(static_cast<int64_t>(it->second.size()));
      f->set_sha256(Sha256Hex(it->second));
      contents.push_back(it->second);
    }
    writer->Write(header);
    for (int i = 0; i < static_cast<int>(contents.size()); ++i) {
      std::string& data = contents[i];
      if (corrupt_in_transit_ && header.header().files(i).name() == "model.safetensors") {
        data[data.size() / 2] ^= 1;
      }
      for (size_t off = 0; off < data.size(); off += 1 << 20) {
        forge::v1::FileTransfer chunk;
        chunk.mutable_chunk()->set_file(i);
        chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off));
        chunk.mutable_chunk()->set_data(data.substr(off, 1 << 20));
        writer->Write(chunk);
      }
    }
    return grpc::Status::OK;
  }

  // Makes DownloadCheckpoint send a header and then nothing until the client gives up.
  void StallDownloads() { stall_download_ = true; }

  struct Snapshot {
    grpc::StatusCode code = grpc::StatusCode::OK;
    Job job;
  };
  void Script(std::vector<Snapshot> snapshots) {
    absl::MutexLock lock(&mu_);
    script_.assign(snapshots.begin(), snapshots.end());
  }
  void AppendLog(absl::string_view text, bool finished) {
    absl::MutexLock lock(&mu_);
    absl::StrAppend(&log_, text);
    log_finished_ = finished;
  }
  void FailLogs(int n) {
    absl::MutexLock lock(&mu_);
    unavailable_logs_ = n;
  }
  void FailUploads(int n) {
    absl::MutexLock lock(&mu_);
    unavailable_uploads_ = n;
  }
  void SetCheckpointFiles(std::map<std::string, std::string> files, bool corrupt_in_transit) {
    absl::MutexLock lock(&mu_);
    checkpoint_files_ = std::move(files);
    corrupt_in_transit_ = corrupt_in_transit;
  }
  std::vector<ReceivedUpload> uploads() {
    absl::MutexLock lock(&mu_);
    return uploads_;
  }
  std::vector<int64_t> log_offsets() {
    absl::MutexLock lock(&mu_);
    return log_offsets_;
  }
  int get_job_calls() {
    absl::MutexLock lock(&mu_);
    return get_job_calls_;
  }
  std::string list_checkpoints_job() {
    absl::MutexLock lock(&mu_);
    return list_checkpoints_job_;
  }
  forge::v1::DownloadCheckpointRequest download_request() {
    absl::MutexLock lock(&mu_);
    return download_request_;
  }

 private:
  absl::Mutex mu_;
  std::deque<Snapshot> script_ ABSL_GUARDED_BY(mu_);
  int get_job_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::string log_ ABSL_GUARDED_BY(mu_);
  bool log_finished_ ABSL_GUARDED_BY(mu_) = false;
  int unavailable_logs_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> log_offsets_ ABSL_GUARDED_BY(mu_);
  int unavailable_uploads_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<ReceivedUpload> uploads_ ABSL_GUARDED_BY(mu_);
  std::string list_checkpoints_job_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> checkpoint_files_ ABSL_GUARDED_BY(mu_);
  bool corrupt_in_transit_ ABSL_GUARDED_BY(mu_) = false;
  forge::v1::DownloadCheckpointRequest download_request_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stall_download_{false};
};

class TrainingCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/commands_training_test/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    ASSERT_TRUE(MakeDirs(root_).ok());
    grpc::ServerBuilder builder;
    builder.RegisterService(static_cast<forge::v1::JobService::Service*>(&fake_));
    builder.RegisterService(static_cast<forge::v1::DataService::Service*>(&fake_));
    builder.RegisterService(static_cast<forge::v1::CheckpointService::Service*>(&fake_));
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
    // No real waiting: time moves on the fake clock, and the test may act between polls.
    env_.sleep = [this](absl::Duration d) {
      clock_.Advance(d);
      ++sleeps_;
      if (on_sleep_) on_sleep_();
    };
  }
  void TearDown() override { server_->Shutdown(); }

  // A prepared dataset of ~1.9 MB in two shards, the first over 1 MiB (two chunks).
  std::string PrepareDatasetDir() {
    std::string text;
    for (int i = 0; i < 240; ++i) {
      absl::StrAppend(&text, "Document ", i, ": ");
      for (int w = 0; w < 500; ++w) absl::StrAppend(&text, "word", (i * 31 + w * 7) % 997, " ");
      absl::StrAppend(&text, "\n\n");
    }
    const std::string input = root_ + "/input.txt";
    EXPECT_TRUE(WriteFileAtomic(input, text).ok());
    PrepareOptions options;
    options.inputs = {input};
    options.name = "tickets";
    options.out_dir = root_ + "/prepared";
    options.split_paragraphs = true;
    options.shard_tokens = 600'000;
    EXPECT_TRUE(PrepareDataset(options).ok());
    return options.out_dir;
  }

  FakeTrainingCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<CoordinatorClient> client_;
  FakeClock clock_;
  std::ostringstream out_, err_;
  CommandEnv env_;
  int connects_ = 0;
  int sleeps_ = 0;
  std::function<void()> on_sleep_;
  std::string root_;
};

// --- data register / list ---------------------------------------------------------------

TEST_F(TrainingCommandsTest, RegisterStreamsTheHeaderThenChunksInFileOrder) {
  const std::string dir = PrepareDatasetDir();
  ASSERT_TRUE(WriteFileAtomic(dir + "/notes.txt", "not part of it").ok());
  ASSERT_TRUE(MakeDirs(dir + "/subdir").ok());
  ASSERT_TRUE(RunDataRegister(env_, "tickets", dir, OutputFormat::kTable).ok()) << err_.str();

  const std::vector<ReceivedUpload> uploads = fake_.uploads();
  ASSERT_EQ(uploads.size(), 1u);
  const ReceivedUpload& got = uploads[0];
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.header.name(), "tickets");
  std::vector<std::string> names;
  for (const auto& f : got.header.files()) names.push_back(f.name());
  EXPECT_THAT(names, ElementsAre("manifest.json", "shard-00000.bin", "shard-00001.bin"));
  for (int i = 0; i < got.header.files_size(); ++i) {
    const forge::v1::FileInfo& f = got.header.files(i);
    const std::string local = *ReadFile(dir + "/" + f.name());
    EXPECT_EQ(f.size(), static_cast<int64_t>(local.size())) << f.name();
    EXPECT_EQ(f.sha256(), Sha256Hex(local)) << f.name();
    EXPECT_EQ(Sha256Hex(got.data.at(i)), f.sha256()) << f.name() << " arrived intact";
  }
  ASSERT_GT(got.header.files(1).size(), 1 << 20) << "the test needs a file over one chunk";
  for (int64_t size : got.chunk_sizes) {
    EXPECT_GT(size, 0);
    EXPECT_LE(size, 1 << 20);
  }
  EXPECT_EQ(got.chunk_sizes[1], 1 << 20) << "full chunks before the last one";
  EXPECT_THAT(out_.str(), StartsWith("NAME     DOCUMENTS  TOKENS  HELD-OUT  SIZE"));
  EXPECT_THAT(out_.str(), HasSubstr("tickets  42         123456"));
  EXPECT_THAT(err_.str(), HasSubstr("skipping " + dir + "/notes.txt"));
}

TEST_F(TrainingCommandsTest, RegisterRefusesACorruptDirBeforeSendingAnything) {
  const std::string dir = PrepareDatasetDir();
  std::string shard = *ReadFile(dir + "/shard-00001.bin");
  shard[shard.size() - 3] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomic(dir + "/shard-00001.bin", shard).ok());
  const absl::Status status = RunDataRegister(env_, "tickets", dir, OutputFormat::kTable);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), HasSubstr("refusing to register " + dir));
  EXPECT_THAT(std::string(status.message()), HasSubstr("shard-00001.bin"));
  EXPECT_EQ(connects_, 0);
  EXPECT_TRUE(fake_.uploads().empty());
}

TEST_F(TrainingCommandsTest, RegisterOfADirWithoutManifestOrABadNameIsAUsageError) {
  const absl::Status status = RunDataRegister(env_, "tickets", root_, OutputFormat::kTable);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), HasSubstr("forge data prepare"));
  EXPECT_EQ(ExitCodeFor(RunDataRegister(env_, "Bad Name", root_, OutputFormat::kTable)),
            kExitUsage);
  EXPECT_EQ(connects_, 0);
}

TEST_F(TrainingCommandsTest, RegisterRetriesAnUnavailableCoordinator) {
  const std::string dir = PrepareDatasetDir();
  fake_.FailUploads(1);
  ASSERT_TRUE(RunDataRegister(env_, "tickets", dir, OutputFormat::kJson).ok()) << err_.str();
  ASSERT_EQ(fake_.uploads().size(), 2u);
  EXPECT_EQ(fake_.uploads()[1].header.SerializeAsString(),
            fake_.uploads()[0].header.SerializeAsString());
  EXPECT_EQ(sleeps_, 1);
  EXPECT_THAT(err_.str(), HasSubstr("uploading again"));
  forge::v1::DatasetInfo info;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &info).ok()) << out_.str();
  EXPECT_EQ(info.name(), "tickets");
}

TEST_F(TrainingCommandsTest, DataListTableAndJson) {
  ASSERT_TRUE(RunDataList(env_, OutputFormat::kTable).ok());
  EXPECT_EQ(out_.str(),
            "NAME          DOCUMENTS  TOKENS   HELD-OUT  SIZE      CREATED\n"
            "acme-tickets  1200       3400000  60        6.48 MiB  2m ago\n");
  out_.str("");
  ASSERT_TRUE(RunDataList(env_, OutputFormat::kJson).ok());
  EXPECT_THAT(out_.str(), HasSubstr("\"held_out_documents\": \"60\""));
}

// --- checkpoints / export ---------------------------------------------------------------

TEST_F(TrainingCommandsTest, CheckpointsNewestFirst) {
  ASSERT_TRUE(RunCheckpoints(env_, "j-1", OutputFormat::kTable).ok());
  EXPECT_EQ(fake_.list_checkpoints_job(), "j-1");
  EXPECT_EQ(out_.str(),
            "ID     JOB  STEP  STAGE  PARENT  ATTEMPT  SIZE     CREATED\n"
            "c-600  j-1  600   -      -       2        600 MiB  6m ago\n"
            "c-400  j-1  400   -      -       1        400 MiB  10m ago\n"
            "c-200  j-1  200   -      -       1        200 MiB  13m ago\n");
}

// The three files of an exportable checkpoint; MANIFEST.json lists the model (and what
// `manifest_model_sha` says its sha256 is).
std::map<std::string, std::string> CheckpointFiles(std::string manifest_model_sha = "") {
  std::string model(1'500'000, '\0');
  for (size_t i = 0; i < model.size(); ++i) model[i] = static_cast<char>(i * 7 % 251);
  const std::string config = "{\"model_type\": \"gpt2\", \"n_layer\": 2}\n";
  nlohmann::json manifest = {
      {"format", "forge.checkpoint"},
      {"format_version", 1},
      {"files",
       {{{"name", "model.safetensors"},
         {"bytes", model.size()},
         {"sha256", manifest_model_sha.empty() ? Sha256Hex(model) : manifest_model_sha}},
        {{"name", "optimizer.safetensors"}, {"bytes", 10}, {"sha256", std::string(64, 'a')}}}}};
  manifest["manifest_sha256"] = Sha256Hex(manifest.dump());
  return {
      {"model.safetensors", model}, {"config.json", config}, {"MANIFEST.json", manifest.dump()}};
}

TEST_F(TrainingCommandsTest, ExportWritesVerifiedFilesAndNothingElse) {
  const std::map<std::string, std::string> files = CheckpointFiles();
  fake_.SetCheckpointFiles(files, /*corrupt_in_transit=*/false);
  const std::string dir = root_ + "/hf/model";
  ASSERT_TRUE(RunExport(env_, "c-600", dir, /*force=*/false).ok()) << err_.str();
  EXPECT_THAT(fake_.download_request().files(),
              ElementsAre("model.safetensors", "config.json", "MANIFEST.json"));
  EXPECT_EQ(*ReadFile(dir + "/model.safetensors"), files.at("model.safetensors"));
  EXPECT_EQ(*ReadFile(dir + "/config.json"), files.at("config.json"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ElementsAre("config.json", "model.safetensors"));
  EXPECT_THAT(out_.str(), HasSubstr(dir + "/model.safetensors"));
  EXPECT_THAT(out_.str(), HasSubstr(Sha256Hex(files.at("model.safetensors"))));
  EXPECT_THAT(err_.str(), HasSubstr("config.json is not listed in the checkpoint's MANIFEST"));

  // A second export into the same DIR needs --force.
  const absl::Status again = RunExport(env_, "c-600", dir, /*force=*/false);
  EXPECT_EQ(ExitCodeFor(again), kExitUsage);
  EXPECT_THAT(std::string(again.message()), HasSubstr("--force"));
  EXPECT_TRUE(RunExport(env_, "c-600", dir, /*force=*/true).ok());
}

TEST_F(TrainingCommandsTest, ExportRefusesDataThatDoesNotMatchTheHeaderAndLeavesNoFile) {
  fake_.SetCheckpointFiles(CheckpointFiles(), /*corrupt_in_transit=*/true);
  const std::string dir = root_ + "/out";
  const absl::Status status = RunExport(env_, "c-600", dir, /*force=*/false);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ExitCodeFor(status), kExitFailure);
  EXPECT_THAT(std::string(status.message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("nothing was written"));
  EXPECT_FALSE(fs::exists(dir)) << "the directory it created is removed again";
}

TEST_F(TrainingCommandsTest, ExportRefusesAFileThatDisagreesWithTheManifest) {
  fake_.SetCheckpointFiles(CheckpointFiles(std::string(64, 'b')), false);
  const std::string dir = root_ + "/existing";
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/README", "mine").ok());
  const absl::Status status = RunExport(env_, "c-600", dir, /*force=*/false);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("does not match MANIFEST.json"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  EXPECT_THAT(names, ElementsAre("README")) << "no partial or temporary file is left";
}

TEST_F(TrainingCommandsTest, ExportOfACheckpointWithoutConfigIsRefused) {
  std::map<std::string, std::string> files = CheckpointFiles();
  files.erase("config.json");
  fake_.SetCheckpointFiles(files, false);
  const absl::Status status = RunExport(env_, "c-600", root_ + "/out", false);
  EXPECT_EQ(ExitCodeFor(status), kExitRefused);
  EXPECT_THAT(std::string(status.message()), HasSubstr("has no config.json"));
  EXPECT_FALSE(fs::exists(root_ + "/out"));
}

TEST_F(TrainingCommandsTest, ExportOfAStalledDownloadEndsAfterTheTimeoutAndLeavesNoFile) {
  fake_.StallDownloads();
  ConnectionOptions options = client_->options();
  options.timeout = absl::Milliseconds(300);
  client_ = std::make_unique<CoordinatorClient>(
      options, server_->InProcessChannel(grpc::ChannelArguments()));
  const std::string dir = root_ + "/out";
  const absl::Status status = RunExport(env_, "c-600", dir, /*force=*/false);
  EXPECT_EQ(ExitCodeFor(status), kExitUnreachable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("made no progress for 300ms"));
  EXPECT_FALSE(fs::exists(dir));
}

// --- watch ------------------------------------------------------------------------------

Job Snap(forge::v1::JobState state, int64_t step, int attempt = 1) {
  Job job;
  job.set_state(state);
  job.set_attempt(attempt);
  job.mutable_spec()->mutable_train()->set_steps(400);
  forge::v1::JobProgress* p = job.mutable_progress();
  p->set_step(step);
  p->set_total_steps(400);
  p->set_loss(2.5131);
  p->set_tokens_per_second(18234);
  p->set_eta_seconds(41);
  p->set_phase("training");
  return job;
}

TEST_F(TrainingCommandsTest, WatchRedrawsTheBarOnATerminalAndSucceeds) {
  env_.out_is_tty = true;
  Job done = Snap(forge::v1::JOB_STATE_SUCCEEDED, 400);
  done.set_final_checkpoint("c-00000000000000ff");
  forge::v1::EvalResult* e = done.add_evals();
  e->set_suite("acme-tickets");
  e->set_loss(1.8);
  e->set_bits_per_byte(2.597);
  e->set_step(400);
  fake_.Script({{grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_QUEUED, 0)},
                {grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 120)},
                {grpc::StatusCode::OK, done}});
  ASSERT_TRUE(RunWatch(env_, "j-1", {}, OutputFormat::kTable).ok()) << err_.str();
  const std::string out = out_.str();
  EXPECT_THAT(out, StartsWith("\r[....................] step 0/400 | 18.2k tok/s | ETA 0:41 | "
                              "QUEUED\r"));
  EXPECT_THAT(out, HasSubstr("\r[######..............] step 120/400 | loss 2.513 | 18.2k tok/s "
                             "| ETA 0:41 | RUNNING"));
  // The shorter last line is padded over the longer one before it, then ended.
  EXPECT_THAT(out, HasSubstr("\r[####################] step 400/400 | loss 2.513 | 18.2k tok/s "
                             "| SUCCEEDED         \njob j-1 SUCCEEDED at step 400/400\n"));
  EXPECT_THAT(out, HasSubstr("final checkpoint: c-00000000000000ff\n"));
  EXPECT_THAT(out, HasSubstr("acme-tickets  1.800  2.5970"));
  EXPECT_EQ(fake_.get_job_calls(), 3);
  EXPECT_EQ(sleeps_, 2);
}

TEST_F(TrainingCommandsTest, WatchPrintsPlainLinesAndRestartsAndExitsSevenWhenFailed) {
  Job restarted = Snap(forge::v1::JOB_STATE_RUNNING, 200, /*attempt=*/2);
  forge::v1::JobAttempt* a1 = restarted.add_attempts();
  a1->set_attempt(1);
  a1->set_end_reason("worker w-a lost");
  a1->set_lost_steps(37);
  forge::v1::JobAttempt* a2 = restarted.add_attempts();
  a2->set_attempt(2);
  a2->set_resumed_from_step(200);
  Job failed = restarted;
  failed.set_state(forge::v1::JOB_STATE_FAILED);
  failed.set_message("rank 1 exited with 137");
  // Polls 0.5 s apart: a step change within a second of the last line waits.
  fake_.Script({{grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 100)},  // 0 s
                {grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 105)},  // 0.5 s: held
                {grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 110)},  // 1 s
                {grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 120)},  // held
                {grpc::StatusCode::OK, restarted},                                // 2 s
                {grpc::StatusCode::OK, failed}});  // a state change prints at once
  const absl::Status status = RunWatch(env_, "j-1", {}, OutputFormat::kTable);
  EXPECT_EQ(ExitCodeFor(status), kExitJobFailed);
  EXPECT_EQ(status.message(), "job j-1 FAILED: rank 1 exited with 137");
  EXPECT_EQ(out_.str(),
            "step 100/400 | loss 2.513 | 18.2k tok/s | ETA 0:41 | RUNNING\n"
            "step 110/400 | loss 2.513 | 18.2k tok/s | ETA 0:41 | RUNNING\n"
            "restart: attempt 2 after attempt 1 ended: worker w-a lost (resumed from step 200, "
            "37 steps lost)\n"
            "step 200/400 | loss 2.513 | 18.2k tok/s | ETA 0:41 | RUNNING\n"
            "step 200/400 | loss 2.513 | 18.2k tok/s | FAILED\n"
            "job j-1 FAILED at step 200/400\n"
            "message: rank 1 exited with 137\n"
            "final loss: 2.513\n");
}

TEST_F(TrainingCommandsTest, WatchShowsAGpuJobsModelFlopsUtilisation) {
  Job running = Snap(forge::v1::JOB_STATE_RUNNING, 100);
  running.mutable_progress()->set_mfu(0.412);
  Job done = Snap(forge::v1::JOB_STATE_SUCCEEDED, 400);
  done.mutable_progress()->set_mfu(0.412);
  fake_.Script({{grpc::StatusCode::OK, running}, {grpc::StatusCode::OK, done}});
  ASSERT_TRUE(RunWatch(env_, "j-1", {}, OutputFormat::kTable).ok()) << err_.str();
  EXPECT_THAT(out_.str(), StartsWith("step 100/400 | loss 2.513 | 18.2k tok/s | MFU 41% | ETA "
                                     "0:41 | RUNNING\n"));
}

TEST_F(TrainingCommandsTest, WatchExitsEightWhenCancelledAndPrintsJsonOnly) {
  Job cancelled = Snap(forge::v1::JOB_STATE_CANCELLED, 5);
  fake_.Script({{grpc::StatusCode::OK, cancelled}});
  const absl::Status status = RunWatch(env_, "j-1", {}, OutputFormat::kJson);
  EXPECT_EQ(ExitCodeFor(status), kExitJobCancelled);
  Job job;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &job).ok()) << out_.str();
  EXPECT_EQ(job.state(), forge::v1::JOB_STATE_CANCELLED);
}

TEST_F(TrainingCommandsTest, WatchWaitsOutARestartingCoordinatorWithinItsPatience) {
  fake_.Script({{grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_RUNNING, 10)},
                {grpc::StatusCode::UNAVAILABLE, {}},
                {grpc::StatusCode::UNAVAILABLE, {}},
                {grpc::StatusCode::OK, Snap(forge::v1::JOB_STATE_SUCCEEDED, 400)}});
  ASSERT_TRUE(RunWatch(env_, "j-1", {}, OutputFormat::kTable).ok()) << err_.str();
  EXPECT_THAT(err_.str(), HasSubstr("unavailable (restarting?); retrying for up to 1m"));
  EXPECT_THAT(err_.str(), HasSubstr("the coordinator is back"));

  out_.str("");
  err_.str("");
  fake_.Script({{grpc::StatusCode::UNAVAILABLE, {}}});
  FollowOptions options;
  options.patience = absl::Seconds(5);
  const absl::Status status = RunWatch(env_, "j-1", options, OutputFormat::kTable);
  EXPECT_EQ(ExitCodeFor(status), kExitUnreachable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--patience"));
}

// --- logs -------------------------------------------------------------------------------

TEST_F(TrainingCommandsTest, LogsFollowStopsWhenTheJobHasFinished) {
  fake_.AppendLog("a1 r0 | step 1 loss 5.5\na1 r1 | ready\n", /*finished=*/false);
  fake_.FailLogs(1);
  int polls_after_end = 0;
  on_sleep_ = [&] {
    if (sleeps_ == 3) fake_.AppendLog("a1 r0 | step 2 loss 5.1\n", false);
    if (sleeps_ == 5) fake_.AppendLog("a1 r0 | done\n", /*finished=*/true);
    if (sleeps_ > 5) ++polls_after_end;
  };
  ASSERT_TRUE(RunLogs(env_, "j-1", /*follow=*/true, {}).ok()) << err_.str();
  EXPECT_EQ(out_.str(),
            "a1 r0 | step 1 loss 5.5\na1 r1 | ready\na1 r0 | step 2 loss 5.1\na1 r0 | done\n");
  EXPECT_EQ(polls_after_end, 0) << "no poll after job_finished with nothing left";
  EXPECT_THAT(err_.str(), HasSubstr("unavailable"));
  const std::vector<int64_t> offsets = fake_.log_offsets();
  EXPECT_EQ(offsets.front(), 0);
  EXPECT_TRUE(std::is_sorted(offsets.begin(), offsets.end()));
}

TEST_F(TrainingCommandsTest, LogsWithoutFollowPrintsWhatThereIsAndStops) {
  fake_.AppendLog("a1 r0 | one line that spans several pages of the fake\n", false);
  ASSERT_TRUE(RunLogs(env_, "j-1", /*follow=*/false, {}).ok());
  EXPECT_EQ(out_.str(), "a1 r0 | one line that spans several pages of the fake\n");
  EXPECT_EQ(sleeps_, 0);
}

// --- status -----------------------------------------------------------------------------

TEST_F(TrainingCommandsTest, StatusShowsProgressAttemptsEvalsAndTheFinalCheckpoint) {
  Job job = Snap(forge::v1::JOB_STATE_SUCCEEDED, 400, 2);
  (*job.mutable_progress()->mutable_tokens_per_source())["acme-tickets"] = 2'400'000;
  (*job.mutable_progress()->mutable_tokens_per_source())["general-english"] = 800'000;
  job.mutable_progress()->set_last_checkpoint_step(400);
  job.set_final_checkpoint("c-00000000000000ff");
  forge::v1::JobAttempt* a1 = job.add_attempts();
  a1->set_attempt(1);
  a1->mutable_start_time()->set_seconds(1'800'000'000 - 600);
  a1->mutable_end_time()->set_seconds(1'800'000'000 - 300);
  a1->set_last_step(237);
  a1->set_lost_steps(37);
  a1->set_end_reason("worker w-a lost");
  forge::v1::JobAttempt* a2 = job.add_attempts();
  a2->set_attempt(2);
  a2->mutable_start_time()->set_seconds(1'800'000'000 - 290);
  a2->set_resumed_from_step(200);
  a2->set_last_step(400);
  a2->set_recover_seconds(9.6);
  a2->set_end_reason("succeeded");
  forge::v1::EvalResult* e = job.add_evals();
  e->set_suite("general-english");
  e->set_loss(2.1);
  e->set_bits_per_byte(3.03);
  e->set_step(400);
  fake_.Script({{grpc::StatusCode::OK, job}});
  ASSERT_TRUE(RunStatus(env_, "j-1", OutputFormat::kTable).ok());
  const std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("step 400/400 | loss 2.513 | 18.2k tok/s | SUCCEEDED"));
  EXPECT_THAT(out, HasSubstr("tokens:            acme-tickets 2.40M, general-english 800k\n"));
  EXPECT_THAT(out, HasSubstr("last checkpoint:   step 400\n"));
  EXPECT_THAT(out, HasSubstr("final checkpoint:  c-00000000000000ff\n"));
  EXPECT_THAT(out, HasSubstr("attempts:\n"
                             "  ATTEMPT  START    END      RESUMED-FROM  LAST-STEP  LOST-STEPS  "
                             "RECOVER-S  REASON\n"
                             "  1        10m ago  5m ago   scratch       237        37          -  "
                             "        worker w-a lost\n"
                             "  2        4m ago   running  step 200      400        0           9.6"
                             "        succeeded\n"));
  EXPECT_THAT(out, HasSubstr("evals:\n  SUITE            LOSS   BITS/BYTE  STEP\n"
                             "  general-english  2.100  3.0300     400\n"));
}

// --- command line -----------------------------------------------------------------------

int RunCli(std::vector<const char*> args, std::string* out, std::string* err) {
  setenv("FORGE_TOKEN", "t", 1);
  unsetenv("FORGE_COORDINATOR");
  args.insert(args.begin(), "forge");
  std::ostringstream o, e;
  const int code = RunForgeCli(static_cast<int>(args.size()), args.data(), o, e);
  *out = o.str();
  *err = e.str();
  return code;
}

TEST(TrainingAppTest, HelpDocumentsTheNewCommandsAndWatchExitCodes) {
  std::string out, err;
  EXPECT_EQ(RunCli({"--help"}, &out, &err), 0);
  for (const char* command : {"watch", "logs", "checkpoints", "export"}) {
    EXPECT_THAT(out, HasSubstr(command));
  }
  EXPECT_THAT(out, HasSubstr("7  `forge watch`: the job ended FAILED"));
  EXPECT_EQ(RunCli({"watch", "--help"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("Exits 0 when the job SUCCEEDED, 7 when it FAILED, 8 when"));
  EXPECT_THAT(out, HasSubstr("--patience"));
  EXPECT_EQ(RunCli({"data", "register", "--help"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("forge data prepare --out DIR"));
}

TEST(TrainingAppTest, MissingArgumentsAreUsageErrors) {
  std::string out, err;
  EXPECT_EQ(RunCli({"export", "c-1"}, &out, &err), kExitUsage);
  EXPECT_EQ(RunCli({"data", "register", "x"}, &out, &err), kExitUsage);
  EXPECT_EQ(RunCli({"watch", "j-1", "--interval", "0"}, &out, &err), kExitUsage);
  EXPECT_THAT(err, HasSubstr("--interval"));
  EXPECT_EQ(RunCli({"logs"}, &out, &err), kExitUsage);
}

}  // namespace
}  // namespace forge::cli
