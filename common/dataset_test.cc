#include "common/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

namespace forge {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Text(absl::Span<const uint16_t> tokens) {
  std::string s;
  for (uint16_t t : tokens) s.push_back(static_cast<char>(t));
  return s;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/dataset_test/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    ASSERT_TRUE(MakeDirs(root_ + "/in").ok());
    out_ = root_ + "/out";
  }

  // Writes root/in/<name> and returns its path.
  std::string Input(const std::string& name, absl::string_view content) {
    const std::string path = root_ + "/in/" + name;
    EXPECT_TRUE(MakeDirs(fs::path(path).parent_path().string()).ok());
    EXPECT_TRUE(WriteFileAtomic(path, content).ok());
    return path;
  }

  PrepareOptions Options(std::vector<std::string> inputs, const std::string& out = "") {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.name = "demo";
    o.out_dir = out.empty() ? out_ : out;
    return o;
  }

  nlohmann::json Manifest(const std::string& dir = "") {
    return nlohmann::json::parse(*ReadFile((dir.empty() ? out_ : dir) + "/manifest.json"));
  }
  void WriteManifest(const nlohmann::json& j) {
    ASSERT_TRUE(WriteFileAtomic(out_ + "/manifest.json", j.dump()).ok());
  }
  // Overwrites bytes of shard-00000.bin at `offset`.
  void Patch(size_t offset, absl::string_view bytes) {
    const std::string path = out_ + "/shard-00000.bin";
    std::string data = *ReadFile(path);
    data.replace(offset, bytes.size(), bytes.data(), bytes.size());
    ASSERT_TRUE(WriteFileAtomic(path, data).ok());
  }

  std::string root_, out_;
};

TEST_F(DatasetTest, RoundTrip) {
  const std::string a = Input("a.txt", "hello world\n");
  const std::string b =
      Input("b.jsonl", "{\"text\": \"alpha\"}\n\n{\"text\": \"caf\\u00e9\", \"id\": 7}\n");
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(Options({a, b}));
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->manifest_path, out_ + "/manifest.json");
  EXPECT_EQ(summary->input_files, 2);
  EXPECT_EQ(summary->documents, 3);
  EXPECT_EQ(summary->tokens, 12 + 5 + 5);  // "café" is 5 bytes of UTF-8
  EXPECT_EQ(summary->shards, 1);

  absl::StatusOr<Dataset> ds = Dataset::Open(out_, VerifyMode::kFull);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->name(), "demo");
  EXPECT_EQ(ds->vocab_size(), 256);
  EXPECT_EQ(ds->num_documents(), 3);
  EXPECT_EQ(ds->num_tokens(), 22);
  EXPECT_EQ(Text(ds->Document(0)), "hello world\n");
  EXPECT_EQ(Text(ds->Document(1)), "alpha");
  EXPECT_EQ(Text(ds->Document(2)), "caf\xc3\xa9");
  EXPECT_EQ(ds->Document(2)[4], 0xa9);
  EXPECT_EQ(ds->DocumentHash(1), Sha256Hex("alpha"));
  EXPECT_EQ(ds->manifest_sha256(), Sha256Hex(*ReadFile(out_ + "/manifest.json")));

  const nlohmann::json m = Manifest();
  EXPECT_EQ(m["format_version"], 1);
  EXPECT_EQ(m["tokenizer"], "bytes");
  EXPECT_EQ(m["documents"], 3);
  EXPECT_EQ(m["shards"][0]["file"], "shard-00000.bin");
  EXPECT_EQ(m["shards"][0]["sha256"], Sha256Hex(*ReadFile(out_ + "/shard-00000.bin")));
  EXPECT_EQ(m["shards"][0]["bytes"], 48 + 8 * 4 + 2 * 22);
  EXPECT_EQ(m["document_list"][2]["tokens"], 5);
  EXPECT_EQ(m["document_list"][2]["index"], 2);
  const std::string shard = *ReadFile(out_ + "/shard-00000.bin");
  EXPECT_EQ(shard.substr(0, 8), "FRGSHRD1");
  EXPECT_EQ(shard.substr(80, 4), std::string("h\0e\0", 4));  // tokens follow the offsets
}

TEST_F(DatasetTest, ShardsHoldWholeDocumentsUpToTheCap) {
  const std::string in = Input("d.jsonl", "{\"text\":\"aaaa\"}\n{\"text\":\"bbbb\"}\n"
                                          "{\"text\":\"cccccccccccc\"}\n{\"text\":\"dd\"}\n");
  PrepareOptions o = Options({in});
  o.shard_tokens = 10;
  ASSERT_TRUE(PrepareDataset(o).ok());
  const nlohmann::json m = Manifest();
  ASSERT_EQ(m["shards"].size(), 3u);  // [aaaa bbbb] [cccccccccccc] [dd]
  EXPECT_EQ(m["shards"][1]["tokens"], 12);
  EXPECT_EQ(m["document_list"][3]["shard"], 2);
  EXPECT_EQ(m["document_list"][3]["index"], 0);
  absl::StatusOr<Dataset> ds = Dataset::Open(out_, VerifyMode::kFull);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(Text(ds->Document(1)), "bbbb");
  EXPECT_EQ(Text(ds->Document(2)), "cccccccccccc");
  EXPECT_EQ(Text(ds->Document(3)), "dd");
}

TEST_F(DatasetTest, SplitParagraphsAndDirectoryInputs) {
  Input("corpus/b/two.txt", "first line\nsecond line\n\n \t\n\nnext paragraph\n");
  Input("corpus/a/one.txt", "one");
  Input("corpus/a/notes.md", "ignored");
  Input("corpus/.hidden/x.txt", "ignored too");
  PrepareOptions o = Options({root_ + "/in/corpus"});
  o.split_paragraphs = true;
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->input_files, 2);
  EXPECT_EQ(summary->empty_dropped, 0);  // blank lines separate; they are not documents
  absl::StatusOr<Dataset> ds = Dataset::Open(out_, VerifyMode::kHeaders);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->num_documents(), 3);
  EXPECT_EQ(Text(ds->Document(0)), "one");  // a/ sorts before b/
  EXPECT_EQ(Text(ds->Document(1)), "first line\nsecond line");
  EXPECT_EQ(Text(ds->Document(2)), "next paragraph");
}

TEST_F(DatasetTest, HeldOutSplitIsStableWhenInputsAreReordered) {
  std::string first, second;
  for (int i = 0; i < 200; ++i) {
    absl::StrAppend(i < 100 ? &first : &second, "{\"text\": \"doc ", i, "\"}\n");
  }
  const std::string a = Input("a.jsonl", first), b = Input("b.jsonl", second);
  PrepareOptions o1 = Options({a, b}, root_ + "/ab");
  PrepareOptions o2 = Options({b, a}, root_ + "/ba");
  o1.heldout_fraction = o2.heldout_fraction = 0.2;
  ASSERT_TRUE(PrepareDataset(o1).ok());
  ASSERT_TRUE(PrepareDataset(o2).ok());
  absl::StatusOr<Dataset> ab = Dataset::Open(root_ + "/ab", VerifyMode::kFull);
  absl::StatusOr<Dataset> ba = Dataset::Open(root_ + "/ba", VerifyMode::kFull);
  ASSERT_TRUE(ab.ok() && ba.ok());
  std::map<std::string, std::string> split_ab, split_ba;  // text -> split
  for (int64_t i = 0; i < 200; ++i) {
    split_ab[Text(ab->Document(i))] = ab->DocumentSplit(i) == Split::kHeldOut ? "h" : "t";
    split_ba[Text(ba->Document(i))] = ba->DocumentSplit(i) == Split::kHeldOut ? "h" : "t";
  }
  EXPECT_EQ(split_ab, split_ba);
  EXPECT_NE(Text(ab->Document(0)), Text(ba->Document(0)));  // the order did change
  EXPECT_GT(ab->Documents(Split::kHeldOut).size(), 10u);
  EXPECT_LT(ab->Documents(Split::kHeldOut).size(), 70u);
  EXPECT_EQ(ab->Documents(Split::kHeldOut).size() + ab->Documents(Split::kTrain).size(), 200u);
}

TEST_F(DatasetTest, RealisedHeldOutFractionIsCloseToTheRequestedOne) {
  std::string jsonl;
  for (int i = 0; i < 20000; ++i) {
    absl::StrAppend(&jsonl, "{\"text\": \"document number ", i, "\"}\n");
  }
  PrepareOptions o = Options({Input("many.jsonl", jsonl)});
  o.heldout_fraction = 0.1;
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  // Binomial(20000, 0.1) has sd 42.4; +-190 is 4.5 sd (the hashes are fixed, so no flakes).
  EXPECT_NEAR(summary->heldout_documents, 2000, 190);
  absl::StatusOr<Dataset> ds = Dataset::Open(out_, VerifyMode::kHeaders);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(static_cast<int64_t>(ds->Documents(Split::kHeldOut).size()),
            summary->heldout_documents);
  EXPECT_EQ(Manifest()["heldout_documents"], summary->heldout_documents);
}

TEST_F(DatasetTest, IsHeldOutComparesTheHashPrefixWithTheFraction) {
  const std::string low = "7fffffffffffffff" + std::string(48, '0');
  const std::string high = "8000000000000000" + std::string(48, '0');
  EXPECT_TRUE(IsHeldOut(low, 0.5));
  EXPECT_FALSE(IsHeldOut(high, 0.5));
  EXPECT_FALSE(IsHeldOut(std::string(64, '0'), 0));
  EXPECT_TRUE(IsHeldOut(std::string(64, 'f'), 1));
}

TEST_F(DatasetTest, DuplicatesAreKeptOnceAndCounted) {
  const std::string a =
      Input("a.jsonl", "{\"text\":\"same\"}\n{\"text\":\"other\"}\n{\"text\":\"\"}\n");
  const std::string b = Input("b.txt", "same");
  const std::string blank = Input("blank.txt", " \n\t\n");
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(Options({a, b, a, blank}));
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->documents, 2);
  EXPECT_EQ(summary->duplicates_dropped, 3);  // b's "same", and a's two documents again
  EXPECT_EQ(summary->empty_dropped, 3);  // "" twice, and blank.txt
  EXPECT_EQ(Manifest()["duplicates_dropped"], 3);
  absl::StatusOr<Dataset> ds = Dataset::Open(out_, VerifyMode::kFull);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(Text(ds->Document(0)), "same");
  EXPECT_EQ(Text(ds->Document(1)), "other");
}

TEST_F(DatasetTest, JsonlLineWithoutTextNamesFileAndLine) {
  const std::string good = Input("good.txt", "fine");
  const std::string bad = Input("bad.jsonl", "{\"text\":\"ok\"}\n\n{\"body\":\"x\"}\n");
  PrepareOptions o = Options({good, bad});
  o.shard_tokens = 2;  // so a shard is written before the bad line is read
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(o);
  ASSERT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(summary.status().message()),
              HasSubstr(bad + ":3: no string field \"text\""));
  EXPECT_TRUE(fs::is_empty(out_));  // nothing left behind, so a rerun needs no --overwrite

  const std::string broken = Input("broken.jsonl", "{\"text\": 5}\n{not json\n");
  summary = PrepareDataset(Options({broken}));
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr(broken + ":1: no string field"));
  Input("broken.jsonl", "{\"text\": \"x\"}\n{not json\n");
  summary = PrepareDataset(Options({broken}));
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr(broken + ":2: not valid JSON"));
}

TEST_F(DatasetTest, RefusesBadOptionsAndAnOccupiedOutDir) {
  EXPECT_EQ(PrepareDataset(Options({})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PrepareDataset(Options({root_ + "/in/missing.txt"})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(PrepareDataset(Options({Input("x.csv", "a,b")})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PrepareDataset(Options({Input("empty.txt", "")})).status().code(),
            absl::StatusCode::kFailedPrecondition);
  PrepareOptions bad_name = Options({Input("a.txt", "text")});
  bad_name.name = "Bad Name";
  EXPECT_EQ(PrepareDataset(bad_name).status().code(), absl::StatusCode::kInvalidArgument);
  PrepareOptions bad_fraction = Options({Input("a.txt", "text")});
  bad_fraction.heldout_fraction = 1;
  EXPECT_EQ(PrepareDataset(bad_fraction).status().code(), absl::StatusCode::kInvalidArgument);

  // An occupied out dir needs overwrite, which replaces the old shards, stale ones included.
  PrepareOptions o = Options({Input("d.jsonl", "{\"text\":\"aaaa\"}\n{\"text\":\"bbbb\"}\n")});
  o.shard_tokens = 4;
  ASSERT_TRUE(PrepareDataset(o).ok());
  ASSERT_TRUE(FileExists(out_ + "/shard-00001.bin"));
  o.shard_tokens = 100;
  absl::Status status = PrepareDataset(o).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--overwrite"));
  o.overwrite = true;
  ASSERT_TRUE(PrepareDataset(o).ok());
  EXPECT_FALSE(FileExists(out_ + "/shard-00001.bin"));
  EXPECT_TRUE(Dataset::Open(out_, VerifyMode::kFull).ok());
}

class CorruptDatasetTest : public DatasetTest {
 protected:
  void SetUp() override {
    DatasetTest::SetUp();
    ASSERT_TRUE(
        PrepareDataset(Options({Input("a.txt", "some text"), Input("b.txt", "more")})).ok());
    shard_ = out_ + "/shard-00000.bin";
    ASSERT_TRUE(Dataset::Open(out_, VerifyMode::kFull).ok());
  }
  // The Open error in `mode`, expected DATA_LOSS.
  std::string OpenError(VerifyMode mode = VerifyMode::kHeaders) {
    absl::StatusOr<Dataset> ds = Dataset::Open(out_, mode);
    EXPECT_EQ(ds.status().code(), absl::StatusCode::kDataLoss) << ds.status();
    return std::string(ds.status().message());
  }
  std::string shard_;
};

TEST_F(CorruptDatasetTest, TruncatedShard) {
  const std::string data = *ReadFile(shard_);
  ASSERT_TRUE(WriteFileAtomic(shard_, data.substr(0, data.size() - 1)).ok());
  const std::string error = OpenError();
  EXPECT_THAT(error, HasSubstr(shard_ + ": truncated: 97 bytes; the header needs 98"));
  ASSERT_TRUE(WriteFileAtomic(shard_, data.substr(0, 20)).ok());
  EXPECT_THAT(OpenError(), HasSubstr(shard_ + ": truncated: 20 bytes, shorter than"));
}

TEST_F(CorruptDatasetTest, FlippedByteFailsTheChecksum) {
  Patch(72, "S");  // "some" -> "Some"
  EXPECT_TRUE(Dataset::Open(out_, VerifyMode::kHeaders).ok());  // headers cannot see it
  EXPECT_THAT(OpenError(VerifyMode::kFull), HasSubstr(shard_ + ": sha256 is "));
}

TEST_F(CorruptDatasetTest, WrongMagic) {
  Patch(0, "GGUFSHRD");
  EXPECT_THAT(OpenError(), HasSubstr(shard_ + ": bad magic \"GGUFSHRD\""));
}

TEST_F(CorruptDatasetTest, WrongVersion) {
  Patch(8, std::string("\x02\0\0\0", 4));
  EXPECT_THAT(OpenError(), HasSubstr(shard_ + ": format version 2 is not supported"));
}

TEST_F(CorruptDatasetTest, ShardFromAnotherDataset) {
  ASSERT_TRUE(PrepareDataset(Options({Input("c.txt", "another text")}, root_ + "/other")).ok());
  ASSERT_TRUE(WriteFileAtomic(shard_, *ReadFile(root_ + "/other/shard-00000.bin")).ok());
  EXPECT_THAT(OpenError(), HasSubstr(shard_ + ": header says 12 tokens, 1 documents"));
}

TEST_F(CorruptDatasetTest, ManifestThatDisagreesWithItself) {
  const nlohmann::json original = Manifest();
  nlohmann::json m = original;
  m["document_list"][0]["split"] = m["document_list"][0]["split"] == "train" ? "heldout" : "train";
  WriteManifest(m);
  EXPECT_THAT(OpenError(), HasSubstr(out_ + "/manifest.json: document_list[0].split is"));
  m = original;
  m["shards"][0]["file"] = "../../etc/passwd";
  WriteManifest(m);
  EXPECT_THAT(OpenError(), HasSubstr("shards[0].file is \"../../etc/passwd\""));
  m = original;
  m["tokens"] = 14;
  WriteManifest(m);
  EXPECT_THAT(OpenError(), HasSubstr("manifest.json: tokens is 14 but the shards hold 13"));
  ASSERT_TRUE(WriteFileAtomic(out_ + "/manifest.json", "{\"format\": ").ok());
  EXPECT_THAT(OpenError(), HasSubstr(out_ + "/manifest.json: not valid JSON"));
}

TEST_F(CorruptDatasetTest, MissingManifestOrShard) {
  fs::remove(shard_);
  EXPECT_THAT(OpenError(), HasSubstr(shard_ + ": cannot open"));
  fs::remove(out_ + "/manifest.json");
  EXPECT_EQ(Dataset::Open(out_, VerifyMode::kFull).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace forge
