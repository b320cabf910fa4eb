// forge data prepare: the command, and the command line without a coordinator or token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/dataset.h"
#include "common/file_util.h"

namespace forge::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class DataPrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/commands_data_test/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    ASSERT_TRUE(MakeDirs(root_).ok());
    env_.client = [this]() -> absl::StatusOr<CoordinatorClient*> {
      ++connects_;
      return absl::UnavailableError("data prepare must not connect");
    };
    env_.out = &out_;
    env_.err = &err_;
  }
  void TearDown() override { EXPECT_EQ(connects_, 0); }

  std::string Input(const std::string& name, absl::string_view content) {
    const std::string path = root_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(path, content).ok());
    return path;
  }
  PrepareOptions Options(std::vector<std::string> inputs) {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.name = "tickets";
    o.out_dir = root_ + "/out";
    return o;
  }

  std::string root_;
  std::ostringstream out_, err_;
  CommandEnv env_;
  int connects_ = 0;
};

TEST_F(DataPrepareTest, PrintsTheManifestPathAloneAndASummaryOnStderr) {
  const std::string in = Input("t.jsonl",
                               "{\"text\":\"printer jam\"}\n{\"text\":\"reset password\"}\n"
                               "{\"text\":\"printer jam\"}\n");
  ASSERT_TRUE(RunDataPrepare(env_, Options({in})).ok()) << err_.str();
  EXPECT_EQ(out_.str(), root_ + "/out/manifest.json\n");
  EXPECT_EQ(err_.str(),
            "forge: prepared dataset tickets: 2 documents (0 held out), 25 tokens in 1 shard "
            "from 1 file; dropped 1 duplicate and 0 empty\n");
  absl::StatusOr<Dataset> ds = Dataset::Open(root_ + "/out", VerifyMode::kFull);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->name(), "tickets");
  EXPECT_EQ(ds->num_tokens(), 25);
}

TEST_F(DataPrepareTest, BadInputIsAUsageErrorNamingTheProblem) {
  const std::string bad = Input("bad.jsonl", "{\"text\":\"ok\"}\n{\"content\":\"no text\"}\n");
  absl::Status status = RunDataPrepare(env_, Options({bad}));
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), StartsWith(bad + ":2: no string field \"text\""));
  EXPECT_EQ(out_.str(), "");

  PrepareOptions o = Options({Input("a.txt", "text")});
  o.name = "tickets!";
  status = RunDataPrepare(env_, o);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), StartsWith("--name may contain only"));

  o = Options({Input("a.txt", "text")});
  o.heldout_fraction = 1.5;
  status = RunDataPrepare(env_, o);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), StartsWith("--heldout must be a fraction in [0, 1)"));

  EXPECT_EQ(ExitCodeFor(RunDataPrepare(env_, Options({root_ + "/missing.txt"}))), kExitUsage);
}

TEST_F(DataPrepareTest, AnOccupiedOutDirNeedsOverwrite) {
  PrepareOptions o = Options({Input("a.txt", "some text")});
  ASSERT_TRUE(RunDataPrepare(env_, o).ok());
  const absl::Status status = RunDataPrepare(env_, o);
  EXPECT_EQ(ExitCodeFor(status), kExitUsage);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--overwrite"));
  o.overwrite = true;
  EXPECT_TRUE(RunDataPrepare(env_, o).ok());
}

// Runs the command line with no token and no coordinator in the environment.
int RunCli(std::vector<const char*> args, std::string* out, std::string* err) {
  unsetenv("FORGE_TOKEN");
  unsetenv("FORGE_COORDINATOR");
  args.insert(args.begin(), "forge");
  std::ostringstream o, e;
  const int code = RunForgeCli(static_cast<int>(args.size()), args.data(), o, e);
  *out = o.str();
  *err = e.str();
  return code;
}

TEST_F(DataPrepareTest, CommandLineNeedsNoTokenOrCoordinator) {
  const std::string a = Input("a.txt", "first paragraph\n\nsecond paragraph\n");
  const std::string b = Input("b.txt", "another file");
  const std::string out_dir = root_ + "/cli";
  std::string out, err;
  ASSERT_EQ(RunCli({"data", "prepare", "--input", a.c_str(), b.c_str(), "--name", "notes", "--out",
                    out_dir.c_str(), "--heldout", "0", "--split-paragraphs"},
                   &out, &err),
            kExitOk)
      << err;
  EXPECT_EQ(out, out_dir + "/manifest.json\n");
  EXPECT_THAT(err, StartsWith("forge: prepared dataset notes: 3 documents (0 held out)"));
  absl::StatusOr<Dataset> ds = Dataset::Open(out_dir, VerifyMode::kFull);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->num_documents(), 3);  // two paragraphs, then b.txt

  EXPECT_EQ(RunCli({"data", "prepare", "--input", a.c_str(), "--out", out_dir.c_str()}, &out, &err),
            kExitUsage);
  EXPECT_THAT(err, HasSubstr("--name is required"));
  EXPECT_EQ(RunCli({"data", "prepare", "--input", a.c_str(), "--name", "notes", "--out",
                    out_dir.c_str()},
                   &out, &err),
            kExitUsage);
  EXPECT_THAT(err, StartsWith("forge: out dir " + out_dir + " is not empty"));
  EXPECT_EQ(RunCli({"data"}, &out, &err), kExitUsage);
  EXPECT_THAT(err, HasSubstr("`forge data` needs a command: prepare"));
  EXPECT_EQ(RunCli({"data", "prepare", "--help"}, &out, &err), kExitOk);
  EXPECT_THAT(out, HasSubstr("--split-paragraphs"));
}

}  // namespace
}  // namespace forge::cli
