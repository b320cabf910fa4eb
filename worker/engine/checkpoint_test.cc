#include "worker/engine/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Values chosen to catch any conversion: signed zero, a NaN payload, a subnormal, infinity.
std::vector<float> Values(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>(i) - 3.1f) / 7.0f;
  if (n > 3) {
    v[0] = -0.0f;
    v[1] = std::bit_cast<float>(0x7fc01234u);
    v[2] = std::numeric_limits<float>::denorm_min();
    v[3] = -std::numeric_limits<float>::infinity();
  }
  return v;
}

// Overwrites `path` in place: fast (no fsync), for loops over thousands of variants.
void Overwrite(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

bool BitEqual(const std::vector<float>& a, absl::Span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/checkpoint_test/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    dir_ = root_ + "/ckpt/100";
    const std::vector<std::pair<std::string, std::vector<int64_t>>> params = {
        {"wte.weight", {16, 8}},        {"wpe.weight", {4, 8}},
        {"h.0.ln_1.weight", {8}},       {"h.0.attn.c_attn.weight", {8, 24}},
        {"h.0.attn.c_attn.bias", {24}}, {"ln_f.bias", {8}},
    };
    for (size_t i = 0; i < params.size(); ++i) {
      size_t n = 1;
      for (int64_t d : params[i].second) n *= static_cast<size_t>(d);
      values_.push_back(Values(n, 1.0f + i));
      m_.push_back(Values(n, 0.01f * (i + 1)));
      v_.push_back(Values(n, 1e-4f * (i + 1)));
      data_.model.push_back({params[i].first, params[i].second, values_.back()});
      data_.adam_m.push_back({params[i].first, params[i].second, m_.back()});
      data_.adam_v.push_back({params[i].first, params[i].second, v_.back()});
    }
    data_.step = 100;
    data_.state = {{"rng", {{"seed", 18446744073709551615ull}, {"counter", 7}}},
                   {"sampler", {{"sources", {{{"name", "brown"}, {"position", 12}}}}}},
                   {"lineage", {{"parent_checkpoint", "ck-1"}, {"base_stage", "pretrain"}}}};
  }

  void WriteGood() { ASSERT_TRUE(WriteCheckpoint(dir_, data_).ok()); }
  std::string Path(absl::string_view name) { return absl::StrCat(dir_, "/", name); }

  // Rewrites MANIFEST.json from `edit` applied to it, with a correct manifest_sha256, so the
  // test reaches the checks behind the manifest's own hash.
  void EditManifest(const std::function<void(Json&)>& edit) {
    Json j = Json::parse(*ReadFile(Path(kCheckpointManifestFile)));
    edit(j);
    j.erase("manifest_sha256");
    j["manifest_sha256"] = Sha256Hex(j.dump());
    ASSERT_TRUE(WriteFileAtomic(Path(kCheckpointManifestFile), j.dump()).ok());
  }

  // Replaces `name` and updates its manifest entry to match, so only later checks can fail.
  void ReplaceListed(const std::string& name, const std::string& contents) {
    ASSERT_TRUE(WriteFileAtomic(Path(name), contents).ok());
    EditManifest([&](Json& j) {
      for (Json& f : j["files"]) {
        if (f["name"] == name) {
          f["bytes"] = contents.size();
          f["sha256"] = Sha256Hex(contents);
        }
      }
    });
  }

  // Expects both LoadCheckpoint and VerifyCheckpoint to fail with `code` and `message`.
  void ExpectRefused(absl::StatusCode code, const std::string& message) {
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir_);
    EXPECT_EQ(loaded.status().code(), code) << loaded.status();
    EXPECT_THAT(Msg(loaded.status()), HasSubstr(message));
    absl::Status verified = VerifyCheckpoint(dir_);
    EXPECT_EQ(verified.code(), code) << verified;
    EXPECT_THAT(Msg(verified), HasSubstr(message));
  }

  std::string root_, dir_;
  std::vector<std::vector<float>> values_, m_, v_;
  CheckpointData data_;
};

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  WriteGood();
  ASSERT_TRUE(VerifyCheckpoint(dir_).ok()) << VerifyCheckpoint(dir_);
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 100);
  EXPECT_EQ(loaded->state, data_.state);
  ASSERT_EQ(loaded->model.size(), data_.model.size());
  ASSERT_EQ(loaded->adam_m.size(), data_.model.size());
  ASSERT_EQ(loaded->adam_v.size(), data_.model.size());
  for (size_t i = 0; i < data_.model.size(); ++i) {
    SCOPED_TRACE(data_.model[i].name);
    EXPECT_EQ(loaded->model[i].name, data_.model[i].name);
    EXPECT_EQ(loaded->adam_m[i].name, data_.model[i].name);
    EXPECT_EQ(loaded->adam_v[i].name, data_.model[i].name);
    EXPECT_EQ(loaded->model[i].shape, data_.model[i].shape);
    EXPECT_EQ(loaded->adam_v[i].shape, data_.model[i].shape);
    EXPECT_TRUE(BitEqual(loaded->model[i].data, data_.model[i].data));
    EXPECT_TRUE(BitEqual(loaded->adam_m[i].data, data_.adam_m[i].data));
    EXPECT_TRUE(BitEqual(loaded->adam_v[i].data, data_.adam_v[i].data));
  }
}

TEST_F(CheckpointTest, FilesFollowTheDocumentedLayout) {
  WriteGood();
  absl::StatusOr<SafetensorsFile> model = ReadSafetensors(Path(kCheckpointModelFile));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->metadata(), (SafetensorsMetadata{{"format", "pt"}, {"step", "100"}}));
  EXPECT_EQ(model->entries()[0].name, "wte.weight");
  EXPECT_EQ(model->entries()[3].name, "h.0.attn.c_attn.weight");
  EXPECT_EQ(model->entries()[3].shape, (std::vector<int64_t>{8, 24}));

  absl::StatusOr<SafetensorsFile> opt = ReadSafetensors(Path(kCheckpointOptimizerFile));
  ASSERT_TRUE(opt.ok()) << opt.status();
  EXPECT_EQ(opt->metadata().at("step"), "100");
  EXPECT_EQ(opt->metadata().at("optimizer"), "adamw");
  ASSERT_EQ(opt->entries().size(), 12u);
  EXPECT_EQ(opt->entries()[0].name, "m.wte.weight");
  EXPECT_EQ(opt->entries()[6].name, "v.wte.weight");

  Json state = Json::parse(*ReadFile(Path(kCheckpointTrainerStateFile)));
  EXPECT_EQ(state["format_version"], 1);
  EXPECT_EQ(state["step"], 100);
  EXPECT_EQ(state["state"], data_.state);

  Json manifest = Json::parse(*ReadFile(Path(kCheckpointManifestFile)));
  EXPECT_EQ(manifest["format"], "forge.checkpoint");
  EXPECT_EQ(manifest["format_version"], 1);
  ASSERT_EQ(manifest["files"].size(), 3u);
  for (const Json& f : manifest["files"]) {
    std::string bytes = *ReadFile(Path(f["name"].get<std::string>()));
    EXPECT_EQ(f["bytes"], bytes.size()) << f;
    EXPECT_EQ(f["sha256"], Sha256Hex(bytes)) << f;
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"MANIFEST.json", "model.safetensors",
                                             "optimizer.safetensors", "trainer_state.json"}));
}

TEST_F(CheckpointTest, RefusesToOverwriteACompleteCheckpoint) {
  WriteGood();
  const std::string before = *ReadFile(Path(kCheckpointModelFile));
  values_[0][5] = 42.0f;
  absl::Status st = WriteCheckpoint(dir_, data_);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Msg(st), HasSubstr(dir_));
  EXPECT_EQ(*ReadFile(Path(kCheckpointModelFile)), before);
}

TEST_F(CheckpointTest, WritesOverATornDirectory) {
  WriteGood();
  ASSERT_TRUE(fs::remove(Path(kCheckpointManifestFile)));
  values_[0][5] = 42.0f;
  ASSERT_TRUE(WriteCheckpoint(dir_, data_).ok());
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->model[0].data[5], 42.0f);
}

TEST_F(CheckpointTest, TornCheckpointIsRefused) {
  WriteGood();
  ASSERT_TRUE(fs::remove(Path(kCheckpointManifestFile)));
  ExpectRefused(absl::StatusCode::kFailedPrecondition, "is torn: it has no MANIFEST.json");
}

TEST_F(CheckpointTest, MissingDirectoryIsNotFound) {
  ExpectRefused(absl::StatusCode::kNotFound, "does not exist");
}

// A single-bit flip is refused, naming the file that was damaged: at every byte of the JSON
// files and the safetensors headers, and at every 97th byte (and the last) of tensor data.
TEST_F(CheckpointTest, AFlippedBitInAnyFileIsRefusedNamingThatFile) {
  WriteGood();
  for (const char* name : {kCheckpointModelFile, kCheckpointOptimizerFile,
                           kCheckpointTrainerStateFile, kCheckpointManifestFile}) {
    const std::string good = *ReadFile(Path(name));
    absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(Path(name));
    const size_t every_byte_until = header.ok() ? header->data_start : good.size();
    int tried = 0;
    for (size_t i = 0; i < good.size(); ++i) {
      if (i >= every_byte_until && i % 97 != 0 && i + 1 != good.size()) continue;
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (i % 2 == 0 ? 0x01 : 0x80));
      Overwrite(Path(name), bad);
      ++tried;
      for (const absl::Status& st : {VerifyCheckpoint(dir_), LoadCheckpoint(dir_).status()}) {
        ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss) << name << " byte " << i << ": " << st;
        ASSERT_THAT(Msg(st), HasSubstr(Path(name))) << "byte " << i;
      }
    }
    EXPECT_GT(tried, 100) << name;
    Overwrite(Path(name), good);
  }
  EXPECT_TRUE(VerifyCheckpoint(dir_).ok());
}

TEST_F(CheckpointTest, TruncatedFileIsRefused) {
  WriteGood();
  fs::resize_file(Path(kCheckpointOptimizerFile),
                  fs::file_size(Path(kCheckpointOptimizerFile)) - 4);
  ExpectRefused(absl::StatusCode::kDataLoss, "optimizer.safetensors: is ");
  ExpectRefused(absl::StatusCode::kDataLoss, "(truncated or overwritten)");
}

TEST_F(CheckpointTest, MissingFileIsRefused) {
  WriteGood();
  ASSERT_TRUE(fs::remove(Path(kCheckpointTrainerStateFile)));
  ExpectRefused(absl::StatusCode::kDataLoss,
                "trainer_state.json: listed in MANIFEST.json but missing");
}

TEST_F(CheckpointTest, ManifestMustListEveryDataFile) {
  WriteGood();
  EditManifest([](Json& j) { j["files"].erase(1); });
  ExpectRefused(absl::StatusCode::kDataLoss,
                "MANIFEST.json: it does not list optimizer.safetensors");
}

TEST_F(CheckpointTest, ManifestNamesMustBePlainFileNames) {
  WriteGood();
  EditManifest([](Json& j) { j["files"][0]["name"] = "../model.safetensors"; });
  ExpectRefused(absl::StatusCode::kDataLoss, "not a plain file name");
}

TEST_F(CheckpointTest, NewerFormatVersionAsksForAnUpgrade) {
  WriteGood();
  EditManifest([](Json& j) { j["format_version"] = 2; });
  ExpectRefused(absl::StatusCode::kFailedPrecondition, "upgrade Forge");
}

TEST_F(CheckpointTest, UnlistedExtraFileIsIgnored) {
  WriteGood();
  ASSERT_TRUE(WriteFileAtomic(Path("notes.txt"), "hello").ok());
  EXPECT_TRUE(VerifyCheckpoint(dir_).ok());
  EXPECT_TRUE(LoadCheckpoint(dir_).ok());
}

TEST_F(CheckpointTest, ListedExtraFileIsVerifiedToo) {
  WriteGood();
  ASSERT_TRUE(WriteFileAtomic(Path("config.json"), "{}").ok());
  EditManifest([](Json& j) {
    j["files"].push_back({{"name", "config.json"}, {"bytes", 2}, {"sha256", Sha256Hex("{ ")}});
  });
  ExpectRefused(absl::StatusCode::kDataLoss, "config.json: sha256");
}

TEST_F(CheckpointTest, OptimizerMustHoldBothMomentsOfEveryParameter) {
  data_.adam_v[2].name = "h.0.ln_2.weight";  // the writer refuses this, so build it by hand
  EXPECT_EQ(WriteCheckpoint(dir_, data_).code(), absl::StatusCode::kInvalidArgument);
  data_.adam_v[2].name = "h.0.ln_1.weight";
  WriteGood();
  std::vector<SafetensorsTensor> tensors;
  for (const char* prefix : {"m.", "v."}) {
    for (size_t i = 0; i < data_.model.size(); ++i) {
      const auto& t = prefix[0] == 'm' ? data_.adam_m[i] : data_.adam_v[i];
      std::string name = absl::StrCat(prefix, t.name);
      if (name == "v.h.0.ln_1.weight") name = "v.h.0.ln_2.weight";
      tensors.push_back(
          {name, SafetensorsDtype::kF32, t.shape,
           absl::string_view(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4)});
    }
  }
  const std::string tmp = root_ + "/opt.safetensors";
  ASSERT_TRUE(WriteSafetensors(tmp, tensors, {{"step", "100"}}).ok());
  ReplaceListed(kCheckpointOptimizerFile, *ReadFile(tmp));
  ExpectRefused(absl::StatusCode::kDataLoss,
                "optimizer.safetensors: tensor \"v.h.0.ln_1.weight\" is missing");
}

TEST_F(CheckpointTest, StepsMustAgreeAcrossFiles) {
  WriteGood();
  std::string state = *ReadFile(Path(kCheckpointTrainerStateFile));
  state.replace(state.find("\"step\": 100"), 11, "\"step\": 101");
  ReplaceListed(kCheckpointTrainerStateFile, state);
  ExpectRefused(absl::StatusCode::kDataLoss,
                "model.safetensors: metadata step is not 101 (the step in trainer_state.json)");
}

TEST_F(CheckpointTest, WriterRefusesInconsistentData) {
  CheckpointData bad = data_;
  bad.model[1].shape = {4, 9};
  absl::Status st = WriteCheckpoint(dir_, bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr("adam_m[1] \"wpe.weight\" [4, 8] does not match"));

  bad = data_;
  bad.model[1].shape = bad.adam_m[1].shape = bad.adam_v[1].shape = {4, 9};
  st = WriteCheckpoint(dir_, bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr("tensor \"wpe.weight\": shape [4, 9] of F32 needs 144 bytes"));

  bad = data_;
  bad.state = Json::array();
  EXPECT_EQ(WriteCheckpoint(dir_, bad).code(), absl::StatusCode::kInvalidArgument);
  bad = data_;
  bad.step = -1;
  EXPECT_EQ(WriteCheckpoint(dir_, bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir_)) << "nothing is written for refused data";
}

TEST_F(CheckpointTest, HfConfigDescribesTheShape) {
  ASSERT_TRUE(MakeDirs(dir_).ok());
  ModelShape shape{.layers = 12, .heads = 12, .width = 768, .context = 1024, .vocab = 50304};
  ASSERT_TRUE(WriteHfConfigJson(dir_, shape).ok());
  Json c = Json::parse(*ReadFile(Path("config.json")));
  EXPECT_EQ(c["model_type"], "gpt2");
  EXPECT_EQ(c["architectures"], Json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(c["n_layer"], 12);
  EXPECT_EQ(c["n_head"], 12);
  EXPECT_EQ(c["n_embd"], 768);
  EXPECT_EQ(c["n_positions"], 1024);
  EXPECT_EQ(c["vocab_size"], 50304);
  EXPECT_EQ(c["activation_function"], "gelu_new");
  EXPECT_EQ(c["layer_norm_epsilon"], 1e-5);
  EXPECT_EQ(c["tie_word_embeddings"], true);
}

}  // namespace
}  // namespace forge::engine
