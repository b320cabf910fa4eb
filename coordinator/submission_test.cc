// SubmissionChecks' held-out check over a real store, gateway and prepared datasets: a clean
// job's report, the cache answering a resubmission without scanning again, and new data (a
// new manifest) being scanned afresh rather than answered from the cache; and a base
// checkpoint's width checked against a cuda job.
#include "coordinator/submission.h"

#include <stdlib.h>

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dataset_test_util.h"
#include "common/file_util.h"
#include "coordinator/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using ::testing::HasSubstr;

constexpr char kTenant[] = "acme";

forge::v1::ModelSpec ShapeProto(int layers, int heads, int width) {
  forge::v1::ModelSpec s;
  s.set_layers(layers);
  s.set_heads(heads);
  s.set_width(width);
  s.set_context(64);
  s.set_vocab(256);
  return s;
}

class SubmissionChecksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("submission_test");
    store_ = OpenTestStore(dir_);
    // The registrations (the gateway reads them at Open); the files come from Prepare.
    for (const char* name : {"general", "tickets"}) {
      forge::v1::DatasetInfo d;
      d.set_tenant(kTenant);
      d.set_name(name);
      d.set_manifest_sha256("registered");
      WriteBatch b;
      b.put_datasets.push_back(d);
      ASSERT_TRUE(store_->CommitSync(std::move(b)).ok());
    }
    StorageGatewayOptions go;
    go.root = dir_ + "/storage";
    storage_ = *StorageGateway::Open(go, store_.get());
  }

  // Prepares `name` from `texts` in the gateway's tree (the check opens the files).
  void Prepare(const std::string& name, const std::vector<std::string>& texts, double heldout) {
    ASSERT_TRUE(PrepareTexts(name, texts,
                             absl::StrCat(dir_, "/storage/tenants/", kTenant, "/datasets/", name),
                             heldout)
                    .ok());
  }

  // n documents of pseudo-random words (seeded by topic), so documents share no long spans.
  static std::vector<std::string> Texts(const std::string& topic, int n) {
    std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(topic)));
    std::uniform_int_distribution<int> letter(0, 25), length(2, 9);
    std::vector<std::string> t;
    for (int i = 0; i < n; ++i) {
      std::string doc = absl::StrCat(topic, " ", i, ":");
      for (int w = 0; w < 30; ++w) {
        doc += ' ';
        for (int k = length(rng); k > 0; --k) doc += static_cast<char>('a' + letter(rng));
      }
      t.push_back(doc);
    }
    return t;
  }

  static forge::v1::JobSpec Spec() {
    forge::v1::JobSpec spec;
    auto* m = spec.mutable_data()->add_mixture();
    m->set_dataset("tickets");
    m->set_weight(1);
    spec.mutable_eval()->add_suites("general");
    return spec;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StorageGateway> storage_;
};

TEST_F(SubmissionChecksTest, ReportsAreCachedByManifestAndNewDataIsScannedAgain) {
  Prepare("general", Texts("general", 40), 0.5);
  Prepare("tickets", Texts("tickets", 40), 0.1);
  SubmissionChecks checks(storage_.get(), nullptr);
  absl::StatusOr<std::string> first = checks.CheckHeldOut(kTenant, Spec());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(*first, HasSubstr("general"));
  EXPECT_EQ(checks.contamination_scans(), 1);
  // Unchanged data: the same report, from the cache.
  absl::StatusOr<std::string> again = checks.CheckHeldOut(kTenant, Spec());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(checks.contamination_scans(), 1);
  // New training data that copies every general document into tickets' train split: a new
  // manifest, so it is scanned again, and the job is refused.
  std::vector<std::string> leaked = Texts("tickets", 40);
  for (const std::string& t : Texts("general", 40)) leaked.push_back(t);
  Prepare("tickets", leaked, 0.0);
  absl::StatusOr<std::string> leak = checks.CheckHeldOut(kTenant, Spec());
  EXPECT_EQ(leak.status().code(), absl::StatusCode::kFailedPrecondition) << leak.status();
  EXPECT_THAT(leak.status().message(), HasSubstr("contaminated"));
  EXPECT_EQ(checks.contamination_scans(), 2);
}

TEST_F(SubmissionChecksTest, ACudaJobNeedsABaseWhoseWidthTheGpuTakes) {
  for (int width : {64, 60}) {
    forge::v1::CheckpointInfo c;
    c.set_id(absl::StrCat("c-width", width));
    c.set_tenant(kTenant);
    c.set_job_id(absl::StrCat("j-width", width));
    c.set_step(10);
    c.set_path(absl::StrCat("tenants/acme/checkpoints/j-width", width, "/10"));
    *c.mutable_shape() = ShapeProto(2, 2, width);
    WriteBatch b;
    b.put_checkpoints.push_back(c);
    ASSERT_TRUE(store_->CommitSync(std::move(b)).ok());
  }
  StorageGatewayOptions go;
  go.root = dir_ + "/storage";
  storage_ = *StorageGateway::Open(go, store_.get());  // reads the rows
  SubmissionChecks checks(storage_.get(), nullptr);
  forge::v1::JobSpec spec;
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CUDA);
  spec.mutable_base()->set_checkpoint("c-width64");
  absl::StatusOr<ResolvedBase> fine = checks.ResolveBase(kTenant, spec);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->shape.width(), 64);

  spec.mutable_base()->set_checkpoint("c-width60");
  absl::StatusOr<ResolvedBase> refused = checks.ResolveBase(kTenant, spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("resources.device: cuda needs a model width that is a multiple of 8; "
                        "the base, checkpoint c-width60, has width 60: train it with "
                        "resources.device: cpu"));
  spec.mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  EXPECT_TRUE(checks.ResolveBase(kTenant, spec).ok());
}

TEST_F(SubmissionChecksTest, TheCacheIsBounded) {
  Prepare("general", Texts("general", 20), 0.5);
  SubmissionChecks checks(storage_.get(), nullptr);
  // Each version of tickets is a new key; the oldest fall out past kCachedReports.
  const int versions = static_cast<int>(SubmissionChecks::kCachedReports) + 2;
  std::vector<std::vector<std::string>> texts;
  for (int v = 0; v < versions; ++v) texts.push_back(Texts(absl::StrCat("tickets-v", v), 3));
  for (int v = 0; v < versions; ++v) {
    Prepare("tickets", texts[v], 0.0);
    ASSERT_TRUE(checks.CheckHeldOut(kTenant, Spec()).ok());
  }
  EXPECT_EQ(checks.contamination_scans(), versions);
  // The newest is still cached; the first version was evicted, so it is scanned again.
  ASSERT_TRUE(checks.CheckHeldOut(kTenant, Spec()).ok());
  EXPECT_EQ(checks.contamination_scans(), versions);
  Prepare("tickets", texts[0], 0.0);
  ASSERT_TRUE(checks.CheckHeldOut(kTenant, Spec()).ok());
  EXPECT_EQ(checks.contamination_scans(), versions + 1);
}

}  // namespace
}  // namespace forge::coordinator
