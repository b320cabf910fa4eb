// The CUDA backend against the CPU engine: whole training steps (forward, backward, gradient
// norm, AdamW) from the same initial weights on the same tokens; determinism; state round trip.
// The tests that need a device skip without one; the argument checks run everywhere.
//
// Also built against the CUDA emulation (forge_cuda_cuda_backend_test_emulated, label unit):
// the backend's own code unchanged, our kernels and the flash attention on CPU fibers,
// cuda_runtime_emulated.cc in place of the runtime and cuBLASLt; a few of these tests run
// there in CI (see CMakeLists.txt).
#include "worker/cuda/cuda_backend.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "gloo/rendezvous/hash_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/device_peaks.h"
#include "worker/cuda/nccl_communicator.h"
#include "worker/cuda/step_profile.h"
#include "worker/cuda/test_util.h"
#include "worker/engine/model_backend.h"

namespace forge::cuda {
#ifdef FORGE_CUDA_EMULATION
// cuda_runtime_emulated.cc: the bytes its cudaMalloc has handed out and not freed.
size_t EmulatedDeviceBytesInUse();
#endif

namespace {

using testing::ExpectSameBits;
using ::testing::HasSubstr;
using ::testing::Not;

engine::BackendConfig Config() {
  engine::BackendConfig c;
  // An odd vocabulary: the logits' rows are padded to a pitch of 256 (251 rounded up to a
  // multiple of 8, cuda_backend.cc), so every test here reads and writes them at a pitch that
  // is not the row length.
  c.shape = {.layers = 2, .heads = 2, .width = 64, .context = 64, .vocab = 251};
  c.max_batch = 4;
  c.max_seq = 48;
  return c;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};

Batch RandomBatch(int B, int T, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> tok(0, Config().shape.vocab - 1);
  Batch b;
  for (int i = 0; i < B * T; ++i) {
    b.tokens.push_back(tok(gen));
    b.targets.push_back(i % 11 == 10 ? -1 : tok(gen));  // a few ignored targets
  }
  return b;
}

std::vector<float> Params(const engine::ModelBackend& m) {
  std::vector<float> p(m.num_params());
  EXPECT_TRUE(m.CopyState(p.data(), nullptr, nullptr).ok());
  return p;
}

std::vector<float> Grads(const engine::ModelBackend& m) {
  std::vector<float> g(m.num_params());
  EXPECT_TRUE(m.CopyGradients(g.data()).ok());
  return g;
}

// Largest |a - b| relative to the largest |b|, and the cosine of the angle between them.
struct Diff {
  double rel_max = 0, cosine = 0;
};
Diff Compare(const std::vector<float>& a, const std::vector<float>& b) {
  double max_b = 0, max_d = 0, ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_b = std::max(max_b, std::abs(double{b[i]}));
    max_d = std::max(max_d, std::abs(double{a[i]} - b[i]));
    ab += double{a[i]} * b[i];
    aa += double{a[i]} * a[i];
    bb += double{b[i]} * b[i];
  }
  return {max_d / std::max(max_b, 1e-30), ab / std::sqrt(aa * bb + 1e-300)};
}

TEST(CudaBackendArgsTest, HeadSizeTheFusedKernelsLackIsRefusedWithTheFix) {
  engine::BackendConfig c = Config();
  c.shape.heads = 4;
  c.shape.width = 96;  // head size 24: the GEMM attention takes it, the fused kernels do not
  CudaBackendOptions o;
  o.attention = CudaAttention::kFused;
  absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(c, o);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("head sizes 16, 32, 64 and 128"));
  EXPECT_THAT(b.status().message(), HasSubstr("GEMM attention"));
}

TEST(CudaBackendArgsTest, WidthNotAMultipleOfEightIsRefusedWithTheFix) {
  for (bool bf16 : {true, false}) {
    engine::BackendConfig c = Config();
    c.shape.heads = 3;
    c.shape.width = 60;  // head size 20: the GEMM attention would take it
    CudaBackendOptions o;
    o.bf16 = bf16;
    o.attention = CudaAttention::kGemm;
    absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(c, o);
    ASSERT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << b.status();
    EXPECT_THAT(b.status().message(), HasSubstr("width that is a multiple of 8 (got 60"));
    EXPECT_THAT(b.status().message(), HasSubstr("resources.device: cpu"));
  }
}

TEST(CudaBackendArgsTest, WithoutADeviceCreateSaysSoAndSuggestsCpu) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(Config(), {});
  ASSERT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(b.status().message(), HasSubstr("no CUDA device"));
  EXPECT_THAT(b.status().message(), HasSubstr("resources.device: cpu"));
}

// Every test runs with each attention implementation.
class CudaBackendTest : public ::testing::TestWithParam<CudaAttention> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device answers: skipped";
  }

  static std::unique_ptr<engine::ModelBackend> Cuda(bool bf16, StepProfile* profile = nullptr) {
    CudaBackendOptions o;
    o.bf16 = bf16;
    o.attention = GetParam();
    o.profile = profile;
    absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(Config(), o);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *std::move(b) : nullptr;
  }
  static std::unique_ptr<engine::ModelBackend> Cpu() { return *engine::CreateCpuBackend(Config()); }

  // Three optimizer steps of two micro-batches each; returns the losses.
  static std::vector<double> Train(engine::ModelBackend& m) {
    std::vector<double> losses;
    EXPECT_TRUE(m.InitRandom(7).ok());
    for (int step = 0; step < 3; ++step) {
      EXPECT_TRUE(m.ZeroGrad().ok());
      for (int micro = 0; micro < 2; ++micro) {
        const Batch b = RandomBatch(4, 48, 100 + 2 * step + micro);
        absl::StatusOr<double> loss =
            m.ForwardBackward(b.tokens.data(), b.targets.data(), 4, 48, micro == 1);
        EXPECT_TRUE(loss.ok()) << loss.status();
        losses.push_back(loss.value_or(0));
      }
      EXPECT_TRUE(m.FinishGradients().ok());
      absl::StatusOr<double> norm = m.OptimizerStep(0.5f, 1.0, 3e-3f);
      EXPECT_TRUE(norm.ok()) << norm.status();
      losses.push_back(norm.value_or(0));
    }
    return losses;
  }
};

// The flash attention runs in bf16 only: exact-mode tests skip it.
#define SKIP_EXACT_FOR_FLASH()                                                   \
  do {                                                                           \
    if (GetParam() == CudaAttention::kFlash) GTEST_SKIP() << "flash is bf16-only"; \
  } while (0)

TEST_P(CudaBackendTest, ExactModeTrainingStepsMatchTheCpuEngine) {
  SKIP_EXACT_FOR_FLASH();
  auto cpu = Cpu();
  auto gpu = Cuda(/*bf16=*/false);
  ASSERT_NE(gpu, nullptr);
  const std::vector<double> want = Train(*cpu), got = Train(*gpu);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-4 * std::abs(want[i])) << "loss/norm " << i;
  }
  const Diff params = Compare(Params(*gpu), Params(*cpu));
  EXPECT_LT(params.rel_max, 1e-4);
  const Diff grads = Compare(Grads(*gpu), Grads(*cpu));
  EXPECT_LT(grads.rel_max, 1e-3);
  EXPECT_GT(grads.cosine, 0.99999);
}

TEST_P(CudaBackendTest, Bf16TrainingStepsFollowTheCpuEngine) {
  auto cpu = Cpu();
  auto gpu = Cuda(/*bf16=*/true);
  ASSERT_NE(gpu, nullptr);
  const std::vector<double> want = Train(*cpu), got = Train(*gpu);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 2e-2 * std::abs(want[i])) << "loss/norm " << i;
  }
  const Diff grads = Compare(Grads(*gpu), Grads(*cpu));
  EXPECT_GT(grads.cosine, 0.99);
  // AdamW's first steps move each weight by about lr · sign(g): a gradient below bf16's noise
  // can flip a sign (2 · lr = 6e-3 per step), so the bound is looser than the gradients'.
  const Diff params = Compare(Params(*gpu), Params(*cpu));
  EXPECT_LT(params.rel_max, 3e-2);
  EXPECT_GT(params.cosine, 0.9999);
}

TEST_P(CudaBackendTest, SameInputsGiveTheSameBits) {
  auto a = Cuda(true), b = Cuda(true);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(Train(*a), Train(*b));
  const std::vector<float> pa = Params(*a), pb = Params(*b);
  ExpectSameBits(pb, pa, "parameters, second backend");
}

TEST_P(CudaBackendTest, LoadStateRestoresWhatCopyStateSaw) {
  auto a = Cuda(true);
  ASSERT_NE(a, nullptr);
  Train(*a);
  const size_t n = a->num_params();
  std::vector<float> p(n), m(n), v(n);
  ASSERT_TRUE(a->CopyState(p.data(), m.data(), v.data()).ok());
  auto b = Cuda(true);
  ASSERT_TRUE(b->LoadState(p.data(), m.data(), v.data(), a->optimizer_step()).ok());
  // One more identical step on each: the same bits.
  for (engine::ModelBackend* x : {a.get(), b.get()}) {
    const Batch batch = RandomBatch(4, 48, 999);
    ASSERT_TRUE(x->ZeroGrad().ok());
    ASSERT_TRUE(x->ForwardBackward(batch.tokens.data(), batch.targets.data(), 4, 48, true).ok());
    ASSERT_TRUE(x->OptimizerStep(1.0f, 1.0, 1e-3f).ok());
  }
  const std::vector<float> pa = Params(*a), pb = Params(*b);
  ExpectSameBits(pb, pa, "parameters after the restored step");
}

// The step profile names every op the backend queues, once per call, with the nominal FLOPs
// of the products, and changes nothing the backend computes.
TEST_P(CudaBackendTest, ProfileTimesEveryOpAndChangesNothing) {
  SKIP_EXACT_FOR_FLASH();
  StepProfile profile;
  EXPECT_EQ(profile.Mark("x", nullptr).code(), absl::StatusCode::kFailedPrecondition);
  auto plain = Cuda(false), profiled = Cuda(false, &profile);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(profiled, nullptr);
  const Batch b = RandomBatch(4, 48, 31);
  for (engine::ModelBackend* m : {plain.get(), profiled.get()}) {
    ASSERT_TRUE(m->InitRandom(7).ok());
    ASSERT_TRUE(m->ZeroGrad().ok());
    ASSERT_TRUE(m->ForwardBackward(b.tokens.data(), b.targets.data(), 4, 48, true).ok());
    ASSERT_TRUE(m->FinishGradients().ok());
    ASSERT_TRUE(m->OptimizerStep(1.0f, 1.0, 1e-3f).ok());
  }
  ExpectSameBits(Params(*profiled), Params(*plain), "parameters with and without the profile");

  const ModelShape& s = Config().shape;
  const int L = s.layers;
  const double N = 4 * 48, C = s.width, V = s.vocab;
  const std::map<std::string, int64_t> want_calls = {{"zero gradients", 1},
                                                     {"upload tokens", 1},
                                                     {"embedding", 1},
                                                     {"layernorm", 2 * L + 1},
                                                     {"matmul qkv", L},
                                                     {"attention", L},
                                                     {"matmul attention projection", L},
                                                     {"matmul fc + gelu", L},
                                                     {"matmul fc projection", L},
                                                     {"matmul logits", 1},
                                                     {"cross-entropy", 1},
                                                     {"download losses", 1},
                                                     {"upload embedding buckets", 1},
                                                     {"matmul logits backward", 1},
                                                     {"layernorm backward", 2 * L + 1},
                                                     {"matmul fc projection backward + gelu", L},
                                                     {"matmul fc backward", L},
                                                     {"matmul attention projection backward", L},
                                                     {"attention backward", L},
                                                     {"matmul qkv backward", L},
                                                     {"bias gradient", 4 * L},
                                                     {"embedding backward", 1},
                                                     {"gradient norm", 1},
                                                     {"adamw", 1}};
  std::map<std::string, int64_t> got_calls;
  for (const StepProfile::Op& op : profile.ops()) {
    got_calls[op.name] = op.calls;
    EXPECT_GE(op.ms, 0) << op.name;
    EXPECT_EQ(op.flops > 0, op.name.starts_with("matmul") || op.name.starts_with("attention"))
        << op.name;
    EXPECT_EQ(op.bytes > 0, !op.name.starts_with("matmul") && !op.name.starts_with("attention") &&
                                !op.name.starts_with("upload") && !op.name.starts_with("download"))
        << op.name;
    if (op.name == "matmul logits") {
      EXPECT_EQ(op.flops, 2 * N * C * V);
    } else if (op.name == "matmul qkv backward") {
      EXPECT_EQ(op.flops, L * 4 * N * C * 3 * C);
    } else if (op.name == "cross-entropy") {
      EXPECT_EQ(op.bytes, 2 * N * V * sizeof(float));  // fp32 logits read, gradient written
    } else if (op.name == "bias gradient") {  // the four dense layers' (widths 3C, C, 4C, C)
      EXPECT_EQ(op.bytes, L * 9 * C * (N * sizeof(float) + 8));
    } else if (op.name == "adamw") {  // four fp32 arrays read and written (no bf16 copy)
      EXPECT_EQ(op.bytes, 32.0 * profiled->num_params());
    }
  }
  EXPECT_EQ(got_calls, want_calls);
  EXPECT_GT(profile.total_ms(), 0);
  const std::string table = profile.Table(1);
  EXPECT_THAT(table, HasSubstr("| matmul logits | 1 | "));
  EXPECT_THAT(table, HasSubstr("| layernorm | 5 | "));
  EXPECT_THAT(table, HasSubstr("| total |"));
  EXPECT_THAT(table, HasSubstr("| GB/s |"));
  profile.Clear();
  EXPECT_TRUE(profile.ops().empty());
}

TEST_P(CudaBackendTest, ForwardLossesMatchTheCpuEngine) {
  SKIP_EXACT_FOR_FLASH();
  auto cpu = Cpu();
  auto gpu = Cuda(false);
  ASSERT_NE(gpu, nullptr);
  ASSERT_TRUE(cpu->InitRandom(3).ok());
  ASSERT_TRUE(gpu->InitRandom(3).ok());
  const Batch b = RandomBatch(3, 40, 5);
  std::vector<float> want(120), got(120);
  ASSERT_TRUE(cpu->ForwardLosses(b.tokens.data(), b.targets.data(), 3, 40, want.data()).ok());
  ASSERT_TRUE(gpu->ForwardLosses(b.tokens.data(), b.targets.data(), 3, 40, got.data()).ok());
  for (int i = 0; i < 120; ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + want[i])) << i;
  // Out-of-range ids are refused before anything runs.
  std::vector<int32_t> bad = b.tokens;
  bad[7] = 251;
  absl::Status s = gpu->ForwardLosses(bad.data(), b.targets.data(), 3, 40, got.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("token 251 at position 7"));
}

TEST_P(CudaBackendTest, DescribeNamesTheAttention) {
  auto gpu = Cuda(true);
  ASSERT_NE(gpu, nullptr);
  // Auto picks flash in bf16 (head size 32 here).
  const char* want = GetParam() == CudaAttention::kFused  ? "attention: fused kernels"
                     : GetParam() == CudaAttention::kGemm ? "attention: tensor-core GEMMs"
                                                          : "attention: flash";
  EXPECT_THAT(gpu->Describe(), HasSubstr(want));
}

// One micro-batch (forward, backward) from InitRandom(7); returns the loss.
double OneMicroBatch(engine::ModelBackend& m) {
  EXPECT_TRUE(m.InitRandom(7).ok());
  EXPECT_TRUE(m.ZeroGrad().ok());
  const Batch b = RandomBatch(4, 48, 31);
  absl::StatusOr<double> loss = m.ForwardBackward(b.tokens.data(), b.targets.data(), 4, 48, true);
  EXPECT_TRUE(loss.ok()) << loss.status();
  return loss.value_or(0);
}

std::unique_ptr<engine::ModelBackend> CudaWith(const CudaBackendOptions& o) {
  absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(Config(), o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

// GELU in the MLP matmuls' epilogues (bf16's default) and in our kernels is the same step, up
// to rounding: the epilogue applies GELU (and, backward, its derivative) to the fp32 product
// before rounding to bf16; the kernels to the rounded product. A missing or misplaced GELU
// or derivative would move the MLP's gradients far more.
TEST_P(CudaBackendTest, GeluEpilogueMatchesTheGeluKernels) {
  CudaBackendOptions o;
  o.attention = GetParam();
  auto epilogue = CudaWith(o);
  o.gelu_epilogue = false;
  auto kernels = CudaWith(o);
  ASSERT_NE(epilogue, nullptr);
  ASSERT_NE(kernels, nullptr);
  const double want = OneMicroBatch(*kernels), got = OneMicroBatch(*epilogue);
  // After the products ran: cuBLASLt had an epilogue algorithm for each (a fallback would
  // compare the kernels with themselves).
  EXPECT_THAT(epilogue->Describe(), HasSubstr("GELU: matmul epilogues"));
  EXPECT_THAT(epilogue->Describe(), Not(HasSubstr("kernels where")));
  EXPECT_THAT(kernels->Describe(), HasSubstr("GELU: kernels"));
  EXPECT_NEAR(got, want, 1e-2 * want);
  // Per tensor: the MLP's are small next to the embeddings'.
  const std::vector<float> g_epilogue = Grads(*epilogue), g_kernels = Grads(*kernels);
  for (const engine::ParamInfo& p : kernels->Parameters()) {
    const auto slice = [&p](const std::vector<float>& v) {
      return std::vector<float>(v.begin() + p.offset, v.begin() + p.offset + p.count);
    };
    const Diff d = Compare(slice(g_epilogue), slice(g_kernels));
    EXPECT_GT(d.cosine, 0.999) << p.name;
    EXPECT_LT(d.rel_max, 5e-2) << p.name;
  }
}

#ifdef FORGE_CUDA_EMULATION
// Where cuBLASLt offers no algorithm with a GELU epilogue (the emulation's switch), the
// backend runs the products and our GELU kernels instead: the same bits as choosing the
// kernels, and Describe says so.
TEST_P(CudaBackendTest, WithoutAGeluEpilogueAlgorithmTheKernelsRunInstead) {
  CudaBackendOptions o;
  o.attention = GetParam();
  o.gelu_epilogue = false;
  auto kernels = CudaWith(o);
  ASSERT_NE(kernels, nullptr);
  OneMicroBatch(*kernels);
  std::unique_ptr<engine::ModelBackend> fallback;
  {
    // Unset on every way out, so no later test runs without GELU epilogue algorithms.
    setenv("FORGE_EMULATED_CUBLASLT_NO_GELU", "1", 1);
    absl::Cleanup unset = [] { unsetenv("FORGE_EMULATED_CUBLASLT_NO_GELU"); };
    o.gelu_epilogue = true;
    fallback = CudaWith(o);
    ASSERT_NE(fallback, nullptr);
    OneMicroBatch(*fallback);
  }
  EXPECT_THAT(fallback->Describe(),
              HasSubstr("GELU: matmul epilogues, and kernels where cuBLASLt had no epilogue"));
  ExpectSameBits(Grads(*kernels), Grads(*fallback), "gradients with the fallback");
}
#endif

TEST(CudaBackendArgsTest, ExactModeWithFlashIsRefusedWithTheFix) {
  CudaBackendOptions o;
  o.bf16 = false;
  o.attention = CudaAttention::kFlash;
  absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(Config(), o);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("use the GEMM or fused attention"));
}

#ifdef FORGE_CUDA_EMULATION
// On the emulation (cuda_emulation.h) a training step takes about 10 s, and the fused CUDA-core
// attention far longer (256 fibers, a shuffle per key): the emulated build runs the flash and
// GEMM attentions, and CMake picks a few tests (kernels_test covers the fused kernels there).
#define FORGE_ATTENTIONS CudaAttention::kFlash, CudaAttention::kGemm
#else
#define FORGE_ATTENTIONS \
  CudaAttention::kFlash, CudaAttention::kGemm, CudaAttention::kFused, CudaAttention::kAuto
#endif
INSTANTIATE_TEST_SUITE_P(Attention, CudaBackendTest, ::testing::Values(FORGE_ATTENTIONS),
                         [](const ::testing::TestParamInfo<CudaAttention>& info) {
                           switch (info.param) {
                             case CudaAttention::kFlash: return "Flash";
                             case CudaAttention::kGemm: return "Gemm";
                             case CudaAttention::kFused: return "Fused";
                             default: return "Auto";
                           }
                         });

#ifdef FORGE_CUDA_EMULATION
// Data parallelism on the emulation (nccl_communicator_emulated.cc: the ranks are in one
// process and run in turn). Two ranks, two micro-batches each: after FinishGradients both
// ranks hold, bit for bit, the sum of what the CPU engine computes for each rank's batches. So
// every parameter range is all-reduced exactly once (one reduced twice would double, one
// never reduced would stay the rank's own), only after the last micro-batch, and the backward
// wrote nothing into a range after handing it to NCCL (the emulation reports that as a race).
// Until FinishGradients, whatever would touch the gradients is refused. After one optimizer
// step the ranks' weights are identical. On GPUs this needs two devices,
// which the lent machines do not have, so it runs only here.
TEST(CudaBackendDataParallelTest, TwoRanksHoldTheSumOfTheirGradients) {
  constexpr int kRanks = 2;
  auto batch = [](int rank, int micro) { return RandomBatch(2, 48, 200 + 2 * rank + micro); };
  std::vector<double> want;
  for (int r = 0; r < kRanks; ++r) {
    auto cpu = *engine::CreateCpuBackend(Config());
    ASSERT_TRUE(cpu->InitRandom(7).ok());
    ASSERT_TRUE(cpu->ZeroGrad().ok());
    for (int micro = 0; micro < 2; ++micro) {
      const Batch b = batch(r, micro);
      ASSERT_TRUE(cpu->ForwardBackward(b.tokens.data(), b.targets.data(), 2, 48, micro == 1).ok());
    }
    const std::vector<float> g = Grads(*cpu);
    want.resize(g.size(), 0.0);
    for (size_t i = 0; i < g.size(); ++i) want[i] += g[i];
  }

  gloo::rendezvous::HashStore store;  // checked for, not used, by the emulation
  std::vector<std::unique_ptr<NcclCommunicator>> comms;
  std::vector<std::unique_ptr<engine::ModelBackend>> ranks;
  for (int r = 0; r < kRanks; ++r) {
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm = NcclCommunicator::Create(
        {.rank = r, .world_size = kRanks, .store = &store, .key = "data-parallel-test"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    comms.push_back(*std::move(comm));
    engine::BackendConfig config = Config();
    config.rank = r;
    config.world_size = kRanks;
    CudaBackendOptions o;
    o.bf16 = false;
    o.attention = CudaAttention::kGemm;
    o.nccl = comms.back().get();
    absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(config, o);
    ASSERT_TRUE(b.ok()) << b.status();
    ranks.push_back(*std::move(b));
    ASSERT_TRUE(ranks.back()->InitRandom(7).ok());
    ASSERT_TRUE(ranks.back()->ZeroGrad().ok());
  }
  for (int r = 0; r < kRanks; ++r) {
    for (int micro = 0; micro < 2; ++micro) {
      const Batch b = batch(r, micro);
      absl::StatusOr<double> loss =
          ranks[r]->ForwardBackward(b.tokens.data(), b.targets.data(), 2, 48, micro == 1);
      ASSERT_TRUE(loss.ok()) << loss.status();
    }
  }
  // Until FinishGradients, NCCL owns the gradients: what would read or write them is refused
  // and changes nothing.
  {
    std::vector<float> grads(ranks[0]->num_params());
    const Batch b = batch(0, 0);
    for (const absl::Status& s :
         {ranks[0]->CopyGradients(grads.data()), ranks[0]->ZeroGrad(),
          ranks[0]->OptimizerStep(1.0f, 1.0, 3e-3f).status(),
          ranks[0]->ForwardBackward(b.tokens.data(), b.targets.data(), 2, 48, true).status()}) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
      EXPECT_THAT(s.message(), HasSubstr("before FinishGradients"));
    }
  }
  for (int r = 0; r < kRanks; ++r) {
    absl::Status s = ranks[r]->FinishGradients();
    ASSERT_TRUE(s.ok()) << s;
  }
  const std::vector<float> g0 = Grads(*ranks[0]), g1 = Grads(*ranks[1]);
  ASSERT_EQ(g0.size(), want.size());
  ExpectSameBits(g1, g0, "rank 1's gradients vs rank 0's");
  const Diff d = Compare(g0, std::vector<float>(want.begin(), want.end()));
  EXPECT_LT(d.rel_max, 1e-3);
  EXPECT_GT(d.cosine, 0.99999);
  for (auto& m : ranks) {
    absl::StatusOr<double> norm = m->OptimizerStep(1.0f / kRanks, 1.0, 3e-3f);
    ASSERT_TRUE(norm.ok()) << norm.status();
  }
  const std::vector<float> p0 = Params(*ranks[0]), p1 = Params(*ranks[1]);
  ExpectSameBits(p1, p0, "rank 1's weights vs rank 0's");
}

// The emulated communicator itself: what a real NCCL would turn into a race or a hang is
// reported, and the communicator is broken afterwards.
TEST(EmulatedNcclTest, ReportsWritesAfterEnqueueMismatchesAndMissingRanks) {
  gloo::rendezvous::HashStore store;
  auto make = [&store](int rank, const std::string& key) {
    return *NcclCommunicator::Create(
        {.rank = rank, .world_size = 2, .store = &store, .key = key});
  };
  {  // the GPU build's option checks (CheckNcclOptions), e.g. a missing store
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> c =
        NcclCommunicator::Create({.rank = 0, .world_size = 2, .key = "no-store"});
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr("needs a rendezvous store"));
  }
  {  // a write into a buffer handed to an all-reduce
    auto a = make(0, "race"), b = make(1, "race");
    std::vector<float> x(4, 1.0f), y(4, 2.0f);
    ASSERT_TRUE(a->AllReduceSumAsync(x.data(), 4, nullptr).ok());
    ASSERT_TRUE(b->AllReduceSumAsync(y.data(), 4, nullptr).ok());
    y[2] = 5.0f;
    absl::Status s = a->Synchronize(nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(s.message(), HasSubstr("element 2 of collective 0"));
    EXPECT_EQ(a->Synchronize(nullptr).code(), absl::StatusCode::kFailedPrecondition);
  }
  {  // counts that differ
    auto a = make(0, "mismatch"), b = make(1, "mismatch");
    std::vector<float> x(4, 1.0f);
    ASSERT_TRUE(a->AllReduceSumAsync(x.data(), 4, nullptr).ok());
    absl::Status s = b->AllReduceSumAsync(x.data(), 3, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(s.message(), HasSubstr("must match across ranks"));
  }
  {  // a rank that never joins; then a good sum
    auto a = make(0, "missing"), b = make(1, "missing");
    std::vector<float> x = {1, 2}, y = {10, 20};
    ASSERT_TRUE(a->AllReduceSumAsync(x.data(), 2, nullptr).ok());
    EXPECT_EQ(a->Synchronize(nullptr).code(), absl::StatusCode::kDeadlineExceeded);
    auto c = make(0, "sum"), d = make(1, "sum");
    ASSERT_TRUE(c->AllReduceSumAsync(x.data(), 2, nullptr).ok());
    ASSERT_TRUE(d->AllReduceSumAsync(y.data(), 2, nullptr).ok());
    ASSERT_TRUE(d->Synchronize(nullptr).ok());
    ASSERT_TRUE(c->Synchronize(nullptr).ok());
    EXPECT_EQ(x, (std::vector<float>{11, 22}));
    EXPECT_EQ(y, (std::vector<float>{11, 22}));
  }
}
#endif  // FORGE_CUDA_EMULATION

#ifdef FORGE_CUDA_EMULATION
// CudaActivationBytes, what picks a GPU job's default micro-batch, is what a backend
// allocates for its micro-batches: two backends that differ only in max_batch allocate
// exactly the difference of the estimates, and besides the estimate a backend takes its
// parameters' buffers (18 bytes a parameter in bf16) and a little that does not grow with
// the batch (the norm's scratch, cuBLASLt's workspace).
TEST(CudaActivationBytesTest, IsWhatTheBackendAllocatesForItsMicroBatches) {
  const engine::BackendConfig base = Config();
  size_t params = 0;
  auto allocated = [&](int max_batch) -> size_t {
    engine::BackendConfig c = base;
    c.max_batch = max_batch;
    CudaBackendOptions o;
    o.attention = CudaAttention::kFlash;
    const size_t before = EmulatedDeviceBytesInUse();
    absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(c, o);
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return 0;
    params = (*b)->num_params();
    return EmulatedDeviceBytesInUse() - before;
  };
  const size_t two = allocated(2), five = allocated(5);
  const size_t est2 = CudaActivationBytes(base.shape, 2, base.max_seq, /*bf16=*/true);
  const size_t est5 = CudaActivationBytes(base.shape, 5, base.max_seq, /*bf16=*/true);
  EXPECT_EQ(five - two, est5 - est2);
  ASSERT_GE(two, est2 + 18 * params);
  EXPECT_LT(two - est2 - 18 * params, size_t{64} << 20);
}

// The peak MFU divides by, from the device's name: the emulated device is named as an H100
// (SXM: 989 TFLOP/s dense bf16). The fp32 mode has none (the table lists bf16).
TEST(CudaBackendPeakFlopsTest, FromTheDevicesNameInBf16) {
  for (bool bf16 : {true, false}) {
    CudaBackendOptions o;
    o.bf16 = bf16;
    o.attention = CudaAttention::kGemm;
    absl::StatusOr<std::unique_ptr<engine::ModelBackend>> b = CreateCudaBackend(Config(), o);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->PeakFlops(), bf16 ? 989e12 : 0) << "bf16 " << bf16;
  }
}
#endif  // FORGE_CUDA_EMULATION

TEST(DevicePeaksTest, ByTheNamesTheGpusReport) {
  EXPECT_EQ(DevicePeaks("NVIDIA H100 80GB HBM3").tflops, 989);
  EXPECT_EQ(DevicePeaks("NVIDIA H100 PCIe").tflops, 756);
  EXPECT_EQ(DevicePeaks("NVIDIA H200").tflops, 989);
  EXPECT_EQ(DevicePeaks("NVIDIA A100-SXM4-80GB").gbs, 2039);
  EXPECT_EQ(DevicePeaks("NVIDIA A100-PCIE-40GB").tflops, 312);
  EXPECT_EQ(DevicePeaks("NVIDIA GeForce RTX 4090").tflops, 0);  // unlisted: no MFU
}

// gpt2-124m at context 1024: about 424 MB (404 MiB) a sequence (12 layers of 16 activations
// of width 768, the 50257-wide logits), so the 8 GiB a GPU job's default micro-batch may take
// (worker/trainer/micro_batch.h) holds 20 sequences of it.
TEST(CudaActivationBytesTest, Gpt2SmallTakesAbout424MbASequence) {
  const ModelShape s = {.layers = 12, .heads = 12, .width = 768, .context = 1024, .vocab = 50257};
  const size_t one = CudaActivationBytes(s, 1, 1024, /*bf16=*/true);
  EXPECT_GT(one, size_t{400} << 20);
  EXPECT_LT(one, size_t{430} << 20);
  EXPECT_EQ((size_t{8} << 30) / one, 20u);
  // Linear in the batch up to the reductions' scratch and alignment.
  const size_t sixteen = CudaActivationBytes(s, 16, 1024, /*bf16=*/true);
  EXPECT_NEAR(static_cast<double>(sixteen) / one, 16.0, 0.01);
  // fp32 activations take twice the bytes.
  EXPECT_NEAR(static_cast<double>(CudaActivationBytes(s, 1, 1024, false)) / one, 2.0, 0.01);
}

TEST(GemmAttentionBudgetTest, TwoGibOrASixteenthOfTheDevice) {
  EXPECT_EQ(GemmAttentionBudget(size_t{80} << 30), size_t{2} << 30);
  EXPECT_EQ(GemmAttentionBudget(size_t{16} << 30), size_t{1} << 30);
}

}  // namespace
}  // namespace forge::cuda
