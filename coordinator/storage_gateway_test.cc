#include "coordinator/storage_gateway.h"

#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "coordinator/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

namespace fs = std::filesystem;

using forge::v1::CheckpointHeader;
using forge::v1::CheckpointInfo;
using forge::v1::CheckpointUpload;
using forge::v1::DatasetHeader;
using forge::v1::DatasetInfo;
using forge::v1::DatasetUpload;
using forge::v1::FileChunk;
using forge::v1::FileInfo;
using forge::v1::FileTransfer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::UnorderedElementsAre;

// A directory's files as an upload: the announced FileInfos and the chunks, in file order.
struct Upload {
  std::vector<FileInfo> files;
  std::vector<FileChunk> chunks;
};

Upload MakeUpload(const std::map<std::string, std::string>& contents, size_t chunk = 97) {
  Upload u;
  for (const auto& [name, data] : contents) {
    FileInfo& f = u.files.emplace_back();
    f.set_name(name);
    f.set_size(static_cast<int64_t>(data.size()));
    f.set_sha256(Sha256Hex(data));
    for (size_t off = 0; off < data.size(); off += chunk) {
      FileChunk& c = u.chunks.emplace_back();
      c.set_file(static_cast<int>(u.files.size()) - 1);
      c.set_offset(static_cast<int64_t>(off));
      c.set_data(data.substr(off, chunk));
    }
  }
  return u;
}

std::map<std::string, std::string> ReadDir(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    absl::StatusOr<std::string> data = ReadFile(e.path().string());
    EXPECT_TRUE(data.ok()) << data.status();
    out[e.path().filename().string()] = *data;
  }
  return out;
}

template <typename Msg>
NextMessage<Msg> Feed(const std::vector<FileChunk>& chunks) {
  auto i = std::make_shared<size_t>(0);
  return [chunks, i](Msg* m) {
    if (*i >= chunks.size()) return false;
    *m->mutable_chunk() = chunks[(*i)++];
    return true;
  };
}

DatasetHeader DHeader(const std::string& name, const Upload& u) {
  DatasetHeader h;
  h.set_name(name);
  for (const FileInfo& f : u.files) *h.add_files() = f;
  return h;
}

CheckpointHeader CHeader(int64_t step, const Upload& u) {
  CheckpointHeader h;
  h.set_step(step);
  for (const FileInfo& f : u.files) *h.add_files() = f;
  return h;
}

// A fake checkpoint: three data files and a MANIFEST.json in the trainer's format.
// Adds MANIFEST.json listing every other file.
std::map<std::string, std::string> WithManifest(std::map<std::string, std::string> files) {
  files.erase("MANIFEST.json");
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, data] : files) {
    list.push_back({{"name", name}, {"bytes", data.size()}, {"sha256", Sha256Hex(data)}});
  }
  nlohmann::json manifest = {{"format", "forge.checkpoint"}, {"format_version", 1},
                             {"files", list}};
  manifest["manifest_sha256"] = Sha256Hex(manifest.dump());
  files["MANIFEST.json"] = manifest.dump() + "\n";
  return files;
}

std::map<std::string, std::string> FakeCheckpoint(int64_t step) {
  return WithManifest({
      {"model.safetensors", absl::StrCat("model weights at step ", step, std::string(300, 'm'))},
      {"optimizer.safetensors", absl::StrCat("adam moments ", step)},
      {"trainer_state.json", absl::StrCat("{\"step\":", step, "}")},
  });
}

// Collects a download into file name -> bytes, checking offsets and the announced sha256.
struct Download {
  std::vector<FileInfo> files;
  std::map<std::string, std::string> data;
  WriteTransfer Writer() {
    return [this](const FileTransfer& m) {
      if (m.has_header()) {
        files.assign(m.header().files().begin(), m.header().files().end());
        return true;
      }
      const FileInfo& f = files.at(m.chunk().file());
      EXPECT_EQ(m.chunk().offset(), static_cast<int64_t>(data[f.name()].size()));
      data[f.name()] += m.chunk().data();
      return true;
    };
  }
  void ExpectComplete() const {
    for (const FileInfo& f : files) {
      auto it = data.find(f.name());
      std::string got = it == data.end() ? "" : it->second;
      EXPECT_EQ(static_cast<int64_t>(got.size()), f.size()) << f.name();
      EXPECT_EQ(Sha256Hex(got), f.sha256()) << f.name();
    }
  }
};

class StorageGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("storage_gateway_test");
    root_ = dir_ + "/storage";
    Reopen();
  }
  void TearDown() override {
    gateway_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  // Closes and reopens the store and the gateway (a coordinator restart).
  void Reopen(int64_t max_dataset_bytes = int64_t{64} << 30) {
    gateway_.reset();
    store_.reset();
    store_ = OpenTestStore(dir_);
    ASSERT_NE(store_, nullptr);
    StorageGatewayOptions go;
    go.root = root_;
    go.chunk_bytes = 64;
    go.max_dataset_bytes = max_dataset_bytes;
    absl::StatusOr<std::unique_ptr<StorageGateway>> gateway =
        StorageGateway::Open(go, store_.get());
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = *std::move(gateway);
  }

  // Prepares a small dataset with the code `forge data prepare` uses; returns its files.
  std::map<std::string, std::string> PrepareSmallDataset(const std::string& tag) {
    const std::string in = absl::StrCat(dir_, "/in-", tag);
    EXPECT_TRUE(MakeDirs(in).ok());
    std::string text;
    for (int i = 0; i < 40; ++i) absl::StrAppend(&text, tag, " document number ", i, "\n\n");
    EXPECT_TRUE(WriteFileAtomic(in + "/corpus.txt", text).ok());
    PrepareOptions o;
    o.inputs = {in};
    o.name = "books";
    o.out_dir = absl::StrCat(dir_, "/prepared-", tag);
    o.split_paragraphs = true;
    o.heldout_fraction = 0.25;
    o.shard_tokens = 300;  // several shards
    absl::StatusOr<PrepareSummary> s = PrepareDataset(o);
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) summary_ = *s;
    return ReadDir(o.out_dir);
  }

  absl::StatusOr<DatasetInfo> Register(const std::string& tenant, const std::string& name,
                                       const Upload& u) {
    return gateway_->RegisterDataset(tenant, DHeader(name, u), Feed<DatasetUpload>(u.chunks));
  }

  absl::StatusOr<CheckpointInfo> Commit(const std::string& job, int64_t step, int keep_last = 0,
                                        std::function<bool(const std::string&)> in_use = nullptr,
                                        const std::string& tenant = "acme") {
    Upload u = MakeUpload(FakeCheckpoint(step));
    return gateway_->ReceiveCheckpoint(tenant, job, 1, keep_last, CHeader(step, u),
                                       Feed<CheckpointUpload>(u.chunks), in_use);
  }

  // Entries under the tenant's .incoming (uploads in progress or abandoned).
  int IncomingEntries(const std::string& tenant = "acme") {
    const fs::path p = fs::path(root_) / "tenants" / tenant / ".incoming";
    if (!fs::exists(p)) return 0;
    return static_cast<int>(std::distance(fs::directory_iterator(p), fs::directory_iterator()));
  }

  std::string dir_, root_;
  PrepareSummary summary_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StorageGateway> gateway_;
};

// --- Datasets ------------------------------------------------------------------------------

TEST_F(StorageGatewayTest, DatasetRegisterRoundTrip) {
  const std::map<std::string, std::string> files = PrepareSmallDataset("a");
  ASSERT_GE(files.size(), 3u);  // manifest + at least two shards
  absl::StatusOr<DatasetInfo> info = Register("acme", "books", MakeUpload(files));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "books");
  EXPECT_EQ(info->tenant(), "acme");
  EXPECT_EQ(info->documents(), summary_.documents);
  EXPECT_EQ(info->tokens(), summary_.tokens);
  EXPECT_EQ(info->held_out_documents(), summary_.heldout_documents);
  EXPECT_EQ(info->files(), static_cast<int>(files.size()));
  int64_t bytes = 0;
  for (const auto& [n, d] : files) bytes += static_cast<int64_t>(d.size());
  EXPECT_EQ(info->bytes(), bytes);
  EXPECT_EQ(info->manifest_sha256(), Sha256Hex(files.at("manifest.json")));
  EXPECT_GT(info->create_time().seconds(), 0);

  const std::string stored = root_ + "/tenants/acme/datasets/books";
  EXPECT_EQ(ReadDir(stored), files);
  EXPECT_TRUE(Dataset::Open(stored, VerifyMode::kFull).ok());
  EXPECT_EQ(IncomingEntries(), 0);

  std::vector<DatasetInfo> listed = gateway_->ListDatasets("acme");
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].manifest_sha256(), info->manifest_sha256());
  EXPECT_EQ(gateway_->ListDatasets("").size(), 1u);  // admin: every tenant
  ASSERT_TRUE(gateway_->GetDataset("acme", "books").ok());

  Download d;
  ASSERT_TRUE(gateway_->SendDataset("acme", "books", d.Writer()).ok());
  EXPECT_EQ(d.files.size(), files.size());
  EXPECT_EQ(d.data, files);
  d.ExpectComplete();
}

TEST_F(StorageGatewayTest, ReRegisterSameContentReturnsTheExistingEntry) {
  const Upload u = MakeUpload(PrepareSmallDataset("a"));
  absl::StatusOr<DatasetInfo> first = Register("acme", "books", u);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<DatasetInfo> second = Register("acme", "books", u);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(gateway_->ListDatasets("acme").size(), 1u);
  // Another tenant may use the same name for its own copy.
  EXPECT_TRUE(Register("beta", "books", u).ok());
  EXPECT_EQ(gateway_->ListDatasets("").size(), 2u);
}

TEST_F(StorageGatewayTest, ReRegisterDifferentContentIsAlreadyExists) {
  const std::map<std::string, std::string> a = PrepareSmallDataset("a");
  ASSERT_TRUE(Register("acme", "books", MakeUpload(a)).ok());
  absl::StatusOr<DatasetInfo> b = Register("acme", "books", MakeUpload(PrepareSmallDataset("b")));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kAlreadyExists) << b.status();
  EXPECT_THAT(b.status().message(), HasSubstr("books"));
  EXPECT_EQ(ReadDir(root_ + "/tenants/acme/datasets/books"), a);
  EXPECT_EQ(IncomingEntries(), 0);
}

TEST_F(StorageGatewayTest, ShaMismatchIsDataLossAndLeavesNothing) {
  const std::map<std::string, std::string> files = PrepareSmallDataset("a");
  Upload u = MakeUpload(files);
  ASSERT_EQ(u.files[1].name(), "shard-00000.bin");
  u.files[1].set_sha256(Sha256Hex("something else"));
  absl::StatusOr<DatasetInfo> info = Register("acme", "books", u);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("shard-00000.bin"));
  EXPECT_THAT(gateway_->ListDatasets("acme"), IsEmpty());
  EXPECT_FALSE(fs::exists(root_ + "/tenants/acme/datasets/books"));
  EXPECT_EQ(IncomingEntries(), 0);
  // The name is free again: the good upload then succeeds.
  EXPECT_TRUE(Register("acme", "books", MakeUpload(files)).ok());
}

TEST_F(StorageGatewayTest, ShardThatDisagreesWithItsManifestIsDataLoss) {
  std::map<std::string, std::string> files = PrepareSmallDataset("a");
  files["shard-00000.bin"].back() ^= 1;  // the header then announces the damaged bytes
  absl::StatusOr<DatasetInfo> info = Register("acme", "books", MakeUpload(files));
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("shard-00000.bin"));
  EXPECT_THAT(info.status().message(), ::testing::Not(HasSubstr(root_)));
  EXPECT_THAT(gateway_->ListDatasets("acme"), IsEmpty());
  EXPECT_EQ(IncomingEntries(), 0);
}

TEST_F(StorageGatewayTest, BadFileNamesAreInvalidArgument) {
  for (const std::string& bad : std::vector<std::string>{"../manifest.json", "a/b", ".", "..",
                                                          "", "sp ace", std::string(129, 'x')}) {
    Upload u = MakeUpload({{"manifest.json", "{}"}, {"x", "y"}});
    u.files[1].set_name(bad);
    absl::StatusOr<DatasetInfo> info = Register("acme", "books", u);
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(info.status().message(), HasSubstr("header.files[1].name")) << bad;
  }
  EXPECT_FALSE(fs::exists(root_ + "/tenants/acme/datasets"));
  EXPECT_EQ(IncomingEntries(), 0);
}

TEST_F(StorageGatewayTest, BadHeadersAreInvalidArgument) {
  const Upload good = MakeUpload(PrepareSmallDataset("a"));
  Upload dup = good;
  dup.files.push_back(good.files[1]);
  EXPECT_THAT(Register("acme", "books", dup).status().message(), HasSubstr("twice"));
  Upload no_manifest = good;
  no_manifest.files.erase(no_manifest.files.begin());
  EXPECT_THAT(Register("acme", "books", no_manifest).status().message(),
              HasSubstr("manifest.json"));
  Upload bad_sha = good;
  bad_sha.files[0].set_sha256("ABC");
  EXPECT_THAT(Register("acme", "books", bad_sha).status().message(), HasSubstr(".sha256"));
  EXPECT_EQ(Register("acme", "Bad/Name", good).status().code(),
            absl::StatusCode::kInvalidArgument);
  Reopen(/*max_dataset_bytes=*/100);
  absl::Status too_big = Register("acme", "books", good).status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("limit"));
}

TEST_F(StorageGatewayTest, ChunkOffsetsMustBeInOrderWithoutGapsOrOverrun) {
  const Upload good = MakeUpload(PrepareSmallDataset("a"));
  ASSERT_GT(good.chunks.size(), 3u);
  Upload gap = good;
  gap.chunks.erase(gap.chunks.begin() + 1);  // the second chunk of manifest.json is missing
  absl::Status s = Register("acme", "books", gap).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("offset"));

  Upload overrun = good;
  overrun.chunks.back().set_data(overrun.chunks.back().data() + "extra");
  s = Register("acme", "books", overrun).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("past the announced size"));

  Upload truncated = good;
  truncated.chunks.pop_back();
  s = Register("acme", "books", truncated).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("ended after"));

  Upload bad_index = good;
  bad_index.chunks[0].set_file(99);
  EXPECT_EQ(Register("acme", "books", bad_index).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_THAT(gateway_->ListDatasets("acme"), IsEmpty());
  EXPECT_EQ(IncomingEntries(), 0);
}

TEST_F(StorageGatewayTest, DifferentDatasetsUploadInParallel) {
  const Upload a = MakeUpload(PrepareSmallDataset("a"));
  const Upload b = MakeUpload(PrepareSmallDataset("b"));
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Register("acme", absl::StrCat("set-", i), i % 2 ? a : b).status();
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(gateway_->ListDatasets("acme").size(), 8u);
}

// --- Checkpoints ---------------------------------------------------------------------------

TEST_F(StorageGatewayTest, CheckpointReceiveListsRowAndPlacesFiles) {
  absl::StatusOr<CheckpointInfo> c = Commit("j-1", 200);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->id(), MatchesRegex("c-[0-9a-f]{16}"));
  EXPECT_EQ(c->job_id(), "j-1");
  EXPECT_EQ(c->tenant(), "acme");
  EXPECT_EQ(c->step(), 200);
  EXPECT_EQ(c->attempt(), 1);
  EXPECT_EQ(c->path(), "tenants/acme/checkpoints/j-1/step-00000200");
  EXPECT_EQ(c->files_size(), 4);
  EXPECT_EQ(ReadDir(root_ + "/" + c->path()), FakeCheckpoint(200));
  EXPECT_EQ(IncomingEntries(), 0);

  std::vector<CheckpointInfo> listed = gateway_->ListCheckpoints("acme", "j-1");
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].id(), c->id());
  EXPECT_EQ(gateway_->ListCheckpoints("acme", "").size(), 1u);
  EXPECT_EQ(gateway_->ListCheckpoints("", "").size(), 1u);
  ASSERT_TRUE(gateway_->GetCheckpoint("acme", c->id()).ok());
  ASSERT_TRUE(gateway_->LatestCheckpoint("j-1").ok());
  EXPECT_EQ(gateway_->LatestCheckpoint("j-1")->id(), c->id());
  EXPECT_EQ(gateway_->LatestCheckpoint("j-2").status().code(), absl::StatusCode::kNotFound);

  Download all;
  ASSERT_TRUE(gateway_->SendCheckpoint("acme", c->id(), {}, all.Writer()).ok());
  EXPECT_EQ(all.data, FakeCheckpoint(200));
  all.ExpectComplete();
  Download some;
  ASSERT_TRUE(
      gateway_->SendCheckpoint("acme", c->id(), {"trainer_state.json"}, some.Writer()).ok());
  ASSERT_EQ(some.files.size(), 1u);
  EXPECT_EQ(some.data.at("trainer_state.json"), "{\"step\":200}");
  Download missing;
  EXPECT_EQ(gateway_->SendCheckpoint("acme", c->id(), {"nope"}, missing.Writer()).code(),
            absl::StatusCode::kNotFound);

  // A retry of the same upload (its answer was lost) gets the same checkpoint back.
  absl::StatusOr<CheckpointInfo> again = Commit("j-1", 200);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), c->id());

  // A later attempt replaying the step: same weights, other lineage -> the committed one.
  std::map<std::string, std::string> replay = FakeCheckpoint(200);
  replay["trainer_state.json"] = "{\"step\":200,\"attempt\":2}";
  Upload r = MakeUpload(WithManifest(replay));
  absl::StatusOr<CheckpointInfo> replayed = gateway_->ReceiveCheckpoint(
      "acme", "j-1", 2, 0, CHeader(200, r), Feed<CheckpointUpload>(r.chunks), nullptr);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->id(), c->id());
  EXPECT_EQ(replayed->attempt(), 1);

  // Different weights at a committed step: refused, nothing replaced.
  std::map<std::string, std::string> other = FakeCheckpoint(200);
  other["model.safetensors"] += "diverged";
  Upload o = MakeUpload(WithManifest(other));
  absl::Status refused = gateway_
                             ->ReceiveCheckpoint("acme", "j-1", 2, 0, CHeader(200, o),
                                                 Feed<CheckpointUpload>(o.chunks), nullptr)
                             .status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kAlreadyExists) << refused;
  EXPECT_EQ(gateway_->ListCheckpoints("acme", "j-1").size(), 1u);
}

TEST_F(StorageGatewayTest, CheckpointManifestMustAgreeWithTheFiles) {
  std::map<std::string, std::string> files = FakeCheckpoint(100);
  files["model.safetensors"] += "tampered";  // the header matches the bytes, the manifest not
  Upload u = MakeUpload(files);
  absl::Status s = gateway_
                       ->ReceiveCheckpoint("acme", "j-1", 1, 0, CHeader(100, u),
                                           Feed<CheckpointUpload>(u.chunks), nullptr)
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));

  files = FakeCheckpoint(100);
  files.erase("MANIFEST.json");
  u = MakeUpload(files);
  s = gateway_
          ->ReceiveCheckpoint("acme", "j-1", 1, 0, CHeader(100, u),
                              Feed<CheckpointUpload>(u.chunks), nullptr)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("MANIFEST.json"));

  files = FakeCheckpoint(100);
  files.erase("optimizer.safetensors");  // listed in the manifest but not uploaded
  u = MakeUpload(files);
  s = gateway_
          ->ReceiveCheckpoint("acme", "j-1", 1, 0, CHeader(100, u),
                              Feed<CheckpointUpload>(u.chunks), nullptr)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("optimizer.safetensors"));

  EXPECT_THAT(gateway_->ListCheckpoints("acme", "j-1"), IsEmpty());
  EXPECT_FALSE(fs::exists(root_ + "/tenants/acme/checkpoints/j-1/step-00000100"));
  EXPECT_EQ(IncomingEntries(), 0);
}

std::vector<int64_t> Steps(const std::vector<CheckpointInfo>& cs) {
  std::vector<int64_t> steps;
  for (const CheckpointInfo& c : cs) steps.push_back(c.step());
  return steps;
}

TEST_F(StorageGatewayTest, RetentionKeepsNewestKeepLast) {
  std::vector<CheckpointInfo> committed;
  for (int64_t step : {100, 200, 300, 400}) {
    absl::StatusOr<CheckpointInfo> c = Commit("j-1", step, /*keep_last=*/2);
    ASSERT_TRUE(c.ok()) << c.status();
    committed.push_back(*c);
  }
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(400, 300));
  EXPECT_FALSE(fs::exists(root_ + "/" + committed[0].path()));
  EXPECT_FALSE(fs::exists(root_ + "/" + committed[1].path()));
  EXPECT_TRUE(fs::exists(root_ + "/" + committed[3].path()));
  EXPECT_EQ(gateway_->GetCheckpoint("acme", committed[0].id()).status().code(),
            absl::StatusCode::kNotFound);
  // The deletions are durable.
  Reopen();
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(400, 300));
}

TEST_F(StorageGatewayTest, RetentionNeverDeletesAnInUseCheckpoint) {
  absl::StatusOr<CheckpointInfo> base = Commit("j-1", 100, 2);
  ASSERT_TRUE(base.ok()) << base.status();
  auto in_use = [&](const std::string& id) { return id == base->id(); };
  for (int64_t step : {200, 300, 400}) ASSERT_TRUE(Commit("j-1", step, 2, in_use).ok());
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(400, 300, 100));
  EXPECT_TRUE(fs::exists(root_ + "/" + base->path()));
  // Once no longer in use, the next commit removes it.
  ASSERT_TRUE(Commit("j-1", 500, 2).ok());
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(500, 400));
  EXPECT_FALSE(fs::exists(root_ + "/" + base->path()));
}

TEST_F(StorageGatewayTest, RetentionNeverDeletesTheNewest) {
  ASSERT_TRUE(Commit("j-1", 400, 1).ok());
  // An older step arriving late is kept (it is the one being answered) and so is the newest.
  ASSERT_TRUE(Commit("j-1", 300, 1).ok());
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(400, 300));
  ASSERT_TRUE(Commit("j-1", 500, 1).ok());
  EXPECT_THAT(Steps(gateway_->ListCheckpoints("acme", "j-1")), ElementsAre(500));
}

// --- Restart -------------------------------------------------------------------------------

TEST_F(StorageGatewayTest, RestartRestoresCatalogAndRemovesGarbage) {
  const std::map<std::string, std::string> files = PrepareSmallDataset("a");
  ASSERT_TRUE(Register("acme", "books", MakeUpload(files)).ok());
  absl::StatusOr<CheckpointInfo> c = Commit("j-1", 100);
  ASSERT_TRUE(c.ok()) << c.status();
  // What a crash leaves: an upload in progress, directories renamed but never committed.
  const std::string t = root_ + "/tenants/acme";
  ASSERT_TRUE(MakeDirs(t + "/.incoming/0123abcd").ok());
  ASSERT_TRUE(WriteFileAtomic(t + "/.incoming/0123abcd/shard-00000.bin", "partial").ok());
  ASSERT_TRUE(MakeDirs(t + "/datasets/ghost").ok());
  ASSERT_TRUE(MakeDirs(t + "/checkpoints/j-1/step-00000200").ok());
  ASSERT_TRUE(MakeDirs(t + "/checkpoints/j-9/step-00000100").ok());

  Reopen();
  EXPECT_FALSE(fs::exists(t + "/.incoming"));
  EXPECT_FALSE(fs::exists(t + "/datasets/ghost"));
  EXPECT_FALSE(fs::exists(t + "/checkpoints/j-1/step-00000200"));
  EXPECT_FALSE(fs::exists(t + "/checkpoints/j-9"));
  EXPECT_EQ(ReadDir(t + "/datasets/books"), files);
  EXPECT_EQ(ReadDir(root_ + "/" + c->path()), FakeCheckpoint(100));

  ASSERT_EQ(gateway_->ListDatasets("acme").size(), 1u);
  EXPECT_EQ(gateway_->ListDatasets("acme")[0].manifest_sha256(),
            Sha256Hex(files.at("manifest.json")));
  ASSERT_TRUE(gateway_->LatestCheckpoint("j-1").ok());
  EXPECT_EQ(gateway_->LatestCheckpoint("j-1")->id(), c->id());
  // Re-registering after the restart is still idempotent.
  EXPECT_TRUE(Register("acme", "books", MakeUpload(files)).ok());
}

// --- Logs ----------------------------------------------------------------------------------

TEST_F(StorageGatewayTest, LogsAppendAndReadWholeLines) {
  int64_t next = -1;
  absl::StatusOr<std::string> empty = gateway_->ReadLog("acme", "j-1", 0, 100, &next);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
  EXPECT_EQ(next, 0);

  ASSERT_TRUE(gateway_->AppendLog("acme", "j-1", "rank=0 step=1\nrank=1 step=1\n").ok());
  ASSERT_TRUE(gateway_->AppendLog("acme", "j-1", "rank=0 step=2").ok());  // newline added
  absl::StatusOr<std::string> all = gateway_->ReadLog("acme", "j-1", 0, 1000, &next);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, "rank=0 step=1\nrank=1 step=1\nrank=0 step=2\n");
  EXPECT_EQ(next, static_cast<int64_t>(all->size()));

  // A small window stops at the last whole line and says where to continue.
  absl::StatusOr<std::string> part = gateway_->ReadLog("acme", "j-1", 0, 20, &next);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, "rank=0 step=1\n");
  EXPECT_EQ(next, 14);
  part = gateway_->ReadLog("acme", "j-1", next, 20, &next);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, "rank=1 step=1\n");
  EXPECT_EQ(next, 28);
  // A line longer than max_bytes comes back whole.
  part = gateway_->ReadLog("acme", "j-1", next, 3, &next);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, "rank=0 step=2\n");
  EXPECT_EQ(next, 42);
  // At the end: nothing, same offset.
  part = gateway_->ReadLog("acme", "j-1", next, 100, &next);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, "");
  EXPECT_EQ(next, 42);

  // A line still being written (no newline yet) is not returned.
  {
    std::FILE* f = std::fopen((root_ + "/tenants/acme/logs/j-1.log").c_str(), "a");
    ASSERT_NE(f, nullptr);
    std::fputs("rank=0 st", f);
    std::fclose(f);
  }
  part = gateway_->ReadLog("acme", "j-1", 42, 100, &next);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, "");
  EXPECT_EQ(next, 42);

  EXPECT_EQ(gateway_->ReadLog("acme", "j-1", 1000, 100, &next).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(gateway_->ReadLog("acme", "j-1", -1, 100, &next).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gateway_->AppendLog("acme", "../j-1", "x").code(),
            absl::StatusCode::kInvalidArgument);
  // Logs are per tenant.
  absl::StatusOr<std::string> other = gateway_->ReadLog("beta", "j-1", 0, 100, &next);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*other, "");
}

// --- Tenants -------------------------------------------------------------------------------

TEST_F(StorageGatewayTest, AnotherTenantsObjectsAreNotFound) {
  ASSERT_TRUE(Register("acme", "books", MakeUpload(PrepareSmallDataset("a"))).ok());
  absl::StatusOr<CheckpointInfo> c = Commit("j-1", 100);
  ASSERT_TRUE(c.ok()) << c.status();

  EXPECT_EQ(gateway_->GetDataset("beta", "books").status().code(), absl::StatusCode::kNotFound);
  Download d;
  EXPECT_EQ(gateway_->SendDataset("beta", "books", d.Writer()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(gateway_->ListDatasets("beta"), IsEmpty());
  EXPECT_EQ(gateway_->GetCheckpoint("beta", c->id()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(gateway_->SendCheckpoint("beta", c->id(), {}, d.Writer()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(gateway_->ListCheckpoints("beta", "j-1"), IsEmpty());
  EXPECT_THAT(gateway_->ListCheckpoints("beta", ""), IsEmpty());
  EXPECT_TRUE(d.files.empty());
  // An admin (tenant "") sees it.
  EXPECT_TRUE(gateway_->GetCheckpoint("", c->id()).ok());
}

}  // namespace
}  // namespace forge::coordinator
