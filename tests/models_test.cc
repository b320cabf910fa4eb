// The model catalog end to end, with the real binaries on loopback: a fresh job's final
// checkpoint is registered as a base model at its stage; a job with `base: {model, stage}`
// starts from those weights (its first loss is far below a fresh model's) at the stage it
// names, and its checkpoints record stage and parent; the catalog survives a coordinator
// restart; bad references are refused naming the field.
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "forge/v1/training.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/webhook_receiver.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

class ModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartCoordinator({"--alert-webhook=" + hooks_.url()});
    tenant_ = cluster_.CreateTenant("acme");
    cluster_.RegisterDataset(tenant_, "general", 120, 1);
    cluster_.StartWorker(cluster_.CreateWorkerToken(), "cpu:1", "w1");
  }

  // batch: seq_len 64 and batch_tokens 512 (8 sequences), or, when empty, what the
  // coordinator fills in from a base's shape.
  std::string Spec(const std::string& name, const std::string& start, int steps,
                   const std::string& lr = "3e-3", const std::string& extra = "",
                   const std::string& batch = "seq_len: 64, batch_tokens: 512, ") {
    return cluster_.WriteFile(
        name + ".yaml", absl::StrCat("name: ", name, "\n", start, extra,
                                     "data:\n  mixture:\n    - {dataset: general, weight: 1}\n"
                                     "train: {steps: ",
                                     steps, ", ", batch, "lr: ", lr,
                                     ", warmup_steps: 2, seed: 3}\n"
                                     "resources: {ranks: 1, device: cpu}\n"
                                     "checkpoint: {every_steps: 0, keep_last: 1}\n"
                                     "eval: {suites: [general]}\n"));
  }

  CliResult Cli(const std::vector<std::string>& args) { return cluster_.Cli(args, tenant_); }

  std::string Submit(const std::string& spec) {
    CliResult r = Cli({"submit", spec});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::string(absl::StripTrailingAsciiWhitespace(r.out));
  }

  forge::v1::Job WaitTerminal(const std::string& id) {
    auto stub = forge::v1::JobService::NewStub(cluster_.channel());
    forge::v1::Job job;
    WaitFor([&] {
      grpc::ClientContext ctx;
      Cluster::Authorize(&ctx, tenant_);
      forge::v1::GetJobRequest req;
      req.set_job_id(id);
      if (!stub->GetJob(&ctx, req, &job).ok()) return false;
      return job.state() == forge::v1::JOB_STATE_SUCCEEDED ||
             job.state() == forge::v1::JOB_STATE_FAILED;
    }, absl::Seconds(180));
    return job;
  }

  // The loss of the job's first step (metrics series).
  double FirstLoss(const std::string& id) {
    auto stub = forge::v1::JobService::NewStub(cluster_.channel());
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::GetJobMetricsRequest req;
    req.set_job_id(id);
    forge::v1::GetJobMetricsResponse resp;
    EXPECT_TRUE(stub->GetJobMetrics(&ctx, req, &resp).ok());
    EXPECT_GT(resp.points_size(), 0);
    return resp.points_size() > 0 ? resp.points(0).loss() : 0;
  }

  std::vector<forge::v1::CheckpointInfo> Checkpoints(const std::string& job_id) {
    auto stub = forge::v1::CheckpointService::NewStub(cluster_.channel());
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::ListCheckpointsRequest req;
    req.set_job_id(job_id);
    forge::v1::ListCheckpointsResponse resp;
    EXPECT_TRUE(stub->ListCheckpoints(&ctx, req, &resp).ok());
    return {resp.checkpoints().begin(), resp.checkpoints().end()};
  }

  WebhookReceiver hooks_;  // declared first: outlives the coordinator that posts to it
  Cluster cluster_;
  std::string tenant_;
};

TEST_F(ModelsTest, ABaseModelAtAStageIsContinuedFromItsWeights) {
  const std::string model = "model: {layers: 2, heads: 2, width: 64, context: 64, vocab: 256}\n";
  const std::string fresh = Submit(Spec("pretrain", model, 40));
  forge::v1::Job pre = WaitTerminal(fresh);
  ASSERT_EQ(pre.state(), forge::v1::JOB_STATE_SUCCEEDED) << pre.message();
  std::vector<forge::v1::CheckpointInfo> pre_cps = Checkpoints(fresh);
  ASSERT_FALSE(pre_cps.empty());
  EXPECT_EQ(pre_cps[0].stage(), forge::v1::STAGE_PRE_TRAINING);  // a fresh model's default
  EXPECT_TRUE(pre_cps[0].parent().empty());
  EXPECT_EQ(pre_cps[0].shape().width(), 64);

  // Register without --stage: the checkpoint's own stage.
  CliResult reg = Cli({"models", "register", "acme-base", "--checkpoint", pre.final_checkpoint(),
                       "--note", "tiny test base"});
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  EXPECT_THAT(reg.out, HasSubstr("pre-training"));
  CliResult list = Cli({"models"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("acme-base"));
  EXPECT_THAT(list.out, HasSubstr(pre.final_checkpoint()));

  // Continue it at mid-training, guarded, promoting to a channel.
  const std::string guarded = "guard: {suite: general, max_regression: 0.02}\n"
                              "promote: {channel: acme-prod}\n";
  const std::string cont = Submit(
      Spec("anneal", "base: {model: acme-base, stage: pre-training}\nstage: mid-training\n", 10,
           "3e-3", guarded));
  forge::v1::Job mid = WaitTerminal(cont);
  ASSERT_EQ(mid.state(), forge::v1::JOB_STATE_SUCCEEDED) << mid.message();
  EXPECT_EQ(mid.base_checkpoint(), pre.final_checkpoint());
  EXPECT_EQ(mid.spec().stage(), forge::v1::STAGE_MID_TRAINING);
  std::vector<forge::v1::CheckpointInfo> mid_cps = Checkpoints(cont);
  ASSERT_FALSE(mid_cps.empty());
  EXPECT_EQ(mid_cps[0].stage(), forge::v1::STAGE_MID_TRAINING);
  EXPECT_EQ(mid_cps[0].parent(), pre.final_checkpoint());
  // Started from trained weights: the first step's loss is near where pre-training ended,
  // far below a fresh model's (ln 256 = 5.55 nats).
  EXPECT_LT(FirstLoss(cont), FirstLoss(fresh) - 1.0);
  CliResult logs = Cli({"logs", cont, "-f"});
  EXPECT_THAT(logs.out, HasSubstr("starting from base checkpoint " + pre.final_checkpoint()));

  // The guard measured the base first, passed (more of the same data) and promoted.
  ASSERT_EQ(mid.base_evals_size(), 1);
  EXPECT_EQ(mid.base_evals(0).step(), 0);
  EXPECT_TRUE(mid.guard().passed()) << mid.guard().message();
  EXPECT_NEAR(mid.guard().base_loss(), mid.base_evals(0).loss(), 1e-9);
  EXPECT_EQ(mid.guard().promoted_to(), "acme-prod");
  CliResult status = Cli({"status", cont});
  EXPECT_THAT(status.out, HasSubstr("BASE LOSS"));
  EXPECT_THAT(status.out, HasSubstr("guard: passed"));
  // The promotion reaches the catalog once the job's final batch is durable, which can be just
  // after SUCCEEDED is visible.
  EXPECT_TRUE(WaitFor(
      [&] {
        list = Cli({"models"});
        return absl::StrContains(list.out, "acme-prod");
      },
      absl::Seconds(10)));
  EXPECT_THAT(list.out, HasSubstr("acme-prod"));
  EXPECT_THAT(list.out, HasSubstr(mid.final_checkpoint()));

  // A run that wrecks the model (a huge learning rate) succeeds as a job, but the guard
  // blocks it and the channel keeps the previous checkpoint. (Its guard is the list form.)
  // It leaves seq_len and batch_tokens out: the base's context (64) and 8 sequences of it.
  const std::string bad =
      Submit(Spec("wreck", "base: {model: acme-base, stage: pre-training}\n", 10, "0.5",
                  "guard: {suites: [general], max_regression: 0.02}\n"
                  "promote: {channel: acme-prod}\n",
                  /*batch=*/""));
  forge::v1::Job wrecked = WaitTerminal(bad);
  ASSERT_EQ(wrecked.state(), forge::v1::JOB_STATE_SUCCEEDED) << wrecked.message();
  EXPECT_EQ(wrecked.spec().train().seq_len(), 64);
  EXPECT_EQ(wrecked.spec().train().batch_tokens(), 512);
  ASSERT_EQ(wrecked.guard().suites_size(), 1);
  EXPECT_TRUE(wrecked.guard().suites(0).measured());
  EXPECT_FALSE(wrecked.guard().suites(0).passed());
  EXPECT_FALSE(wrecked.guard().passed()) << wrecked.guard().message();
  EXPECT_GT(wrecked.guard().regression(), 0.02);
  EXPECT_TRUE(wrecked.guard().promoted_to().empty());
  EXPECT_THAT(wrecked.guard().message(), HasSubstr("blocked"));
  EXPECT_TRUE(WaitFor([&] { return hooks_.Has("guard_blocked", "job", "id", bad); },
                      absl::Seconds(10)))
      << "operators are told of the blocked promotion";
  EXPECT_FALSE(hooks_.Has("guard_blocked", "job", "id", cont)) << "the passing run is not";
  list = Cli({"models", "--output", "json"});
  EXPECT_THAT(list.out, HasSubstr(mid.final_checkpoint()));
  EXPECT_THAT(list.out, ::testing::Not(HasSubstr(wrecked.final_checkpoint())));

  // The catalog is durable; the registered checkpoint is kept.
  cluster_.KillCoordinator();
  cluster_.StartCoordinator();
  list = Cli({"models", "--output", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(pre.final_checkpoint()));
}

TEST_F(ModelsTest, AContaminatedJobIsRefusedOrRunsWithTheOverlapReported) {
  // "leaky": general's documents again, none held out, so every held-out document of
  // general is in leaky's train split.
  const std::string text = cluster_.dir() + "/text-general-120-1";
  const std::string prepared = cluster_.dir() + "/prepared-leaky";
  CliResult prep = Cli({"data", "prepare", "--input", text, "--name", "leaky", "--out", prepared,
                        "--heldout", "0"});
  ASSERT_EQ(prep.exit_code, 0) << prep.err;
  ASSERT_EQ(Cli({"data", "register", "leaky", prepared}).exit_code, 0);
  const std::string model = "model: {layers: 1, heads: 1, width: 16, context: 64, vocab: 256}\n";
  auto spec = [&](const std::string& name, bool allow) {
    return cluster_.WriteFile(
        name + ".yaml",
        absl::StrCat("name: ", name, "\n", model,
                     "data:\n  mixture:\n    - {dataset: general, weight: 1}\n"
                     "    - {dataset: leaky, weight: 1}\n"
                     "train: {steps: 2, seq_len: 64, batch_tokens: 256}\n"
                     "resources: {ranks: 1, device: cpu}\n"
                     "eval: {suites: [general], allow_contamination: ",
                     allow ? "true" : "false", "}\n"));
  };
  CliResult refused = Cli({"submit", spec("leak", false)});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("contaminated"));
  EXPECT_THAT(refused.err, HasSubstr("eval suite general"));
  EXPECT_THAT(refused.err, HasSubstr("training source leaky"));
  EXPECT_THAT(refused.err, HasSubstr("exact copies"));
  EXPECT_THAT(refused.err, HasSubstr("allow_contamination"));

  // Allowed: accepted, and the report stays with the job.
  const std::string id = Submit(spec("leak-ok", true));
  CliResult status = Cli({"status", id});
  EXPECT_THAT(status.out, HasSubstr("held-out check"));
  EXPECT_THAT(status.out, HasSubstr("training source leaky"));
  // The clean pair is reported clean: general's held-out split vs its own train split.
  EXPECT_THAT(status.out, HasSubstr("training source general"));
}

TEST_F(ModelsTest, BadBaseReferencesAreRefusedNamingTheField) {
  CliResult r = Cli({"submit", Spec("x", "base: {model: nope, stage: mid-training}\n", 5)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("base.model"));
  EXPECT_THAT(r.err, HasSubstr("forge models"));
  r = Cli({"models", "register", "m", "--checkpoint", "c-0000000000000000"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("not a committed checkpoint"));
  r = Cli({"models", "register", "m", "--checkpoint", "c-1", "--stage", "late"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--stage"));
}

}  // namespace
}  // namespace forge::testing
