// GPU jobs end to end (CTest label gpu): the real coordinator, a worker with --devices=cuda:all
// and forge-trainer ranks on CUDA devices, on loopback. Skips with a message where no CUDA
// device answers (CI, and machines with the toolkit but no GPU).
//
//   - a 1-GPU job trains to SUCCEEDED on the CUDA backend, with verified checkpoints, held-out
//     evals below the uniform loss and the backend named in the logs;
//   - with 2 or more GPUs, a 2-rank job whose gradients go through NCCL succeeds too.
#include <cuda_runtime_api.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/device_peaks.h"
#include "worker/engine/checkpoint.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

class GpuJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    devices_ = cuda::CudaDeviceCount();
    if (devices_ == 0) GTEST_SKIP() << "no CUDA device answers: GPU job tests skipped";
    cluster_.StartCoordinator({"--step-timeout-ms=60000", "--collective-timeout-ms=30000"});
    tenant_ = cluster_.CreateTenant("acme");
    cluster_.RegisterDataset(tenant_, "general", 120, 1);
    cluster_.RegisterDataset(tenant_, "tickets", 120, 2);
    cluster_.StartWorker(cluster_.CreateWorkerToken(), "cuda:all", "gpu-worker");
    jobs_ = forge::v1::JobService::NewStub(cluster_.channel());
  }

  std::string Spec(int ranks) {
    return cluster_.WriteFile(
        absl::StrCat("gpu-", ranks, ".yaml"),
        absl::StrCat("name: gpu-test\n"
                     "model: {layers: 2, heads: 2, width: 128, context: 128, vocab: 256}\n"
                     "data:\n"
                     "  mixture:\n"
                     "    - {dataset: general, weight: 0.5}\n"
                     "    - {dataset: tickets, weight: 0.5}\n"
                     "train: {steps: 60, seq_len: 128, batch_tokens: 4096, lr: 2e-3, "
                     "warmup_steps: 5, seed: 5}\n"
                     "resources: {ranks: ", ranks, ", device: cuda}\n"
                     "checkpoint: {every_steps: 20, keep_last: 2}\n"
                     "eval: {suites: [general, tickets]}\n"
                     "max_restarts: 0\n"));
  }

  forge::v1::Job RunToEnd(const std::string& spec) {
    CliResult r = cluster_.Cli({"submit", spec}, tenant_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string id(absl::StripTrailingAsciiWhitespace(r.out));
    forge::v1::Job job;
    WaitFor([&] {
      grpc::ClientContext ctx;
      Cluster::Authorize(&ctx, tenant_);
      forge::v1::GetJobRequest req;
      req.set_job_id(id);
      if (!jobs_->GetJob(&ctx, req, &job).ok()) return false;
      return job.state() == forge::v1::JOB_STATE_SUCCEEDED ||
             job.state() == forge::v1::JOB_STATE_FAILED ||
             job.state() == forge::v1::JOB_STATE_CANCELLED;
    }, absl::Seconds(300));
    return job;
  }

  void ExpectTrained(const forge::v1::Job& job) {
    ASSERT_EQ(job.state(), forge::v1::JOB_STATE_SUCCEEDED) << job.message();
    EXPECT_EQ(job.progress().step(), 60);
    ASSERT_EQ(job.evals_size(), 2);
    for (const auto& e : job.evals()) EXPECT_LT(e.loss(), 5.0) << e.suite();  // ln 256 = 5.55
    CliResult logs = cluster_.Cli({"logs", job.id(), "-f"}, tenant_);
    EXPECT_THAT(logs.out, HasSubstr("backend: cuda:"));
    EXPECT_THAT(logs.out, HasSubstr("finished: 60 steps"));
    // Where Forge knows the device's peak (the H100, H200 and A100 of device_peaks.h), each
    // step's line and the job's progress carry the MFU (tiny for this small model, not 0).
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess &&
        cuda::DevicePeaks(prop.name).tflops > 0) {
      EXPECT_GT(job.progress().mfu(), 0) << prop.name;
      EXPECT_LT(job.progress().mfu(), 1) << prop.name;
      EXPECT_THAT(logs.out, HasSubstr(" | MFU ")) << prop.name;
    }
    const std::string out = cluster_.dir() + "/export-" + job.id();
    CliResult ex = cluster_.Cli({"export", job.final_checkpoint(), out}, tenant_);
    EXPECT_EQ(ex.exit_code, 0) << ex.err;
    EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  }

  int devices_ = 0;
  Cluster cluster_;
  std::string tenant_;
  std::unique_ptr<forge::v1::JobService::Stub> jobs_;
};

TEST_F(GpuJobTest, OneGpuJobSucceeds) { ExpectTrained(RunToEnd(Spec(1))); }

TEST_F(GpuJobTest, TwoGpuJobSucceedsWithNccl) {
  if (devices_ < 2) GTEST_SKIP() << "needs 2 CUDA devices; this machine has " << devices_;
  ExpectTrained(RunToEnd(Spec(2)));
}

}  // namespace
}  // namespace forge::testing
