// forge-bench-gpu-train: training throughput of the CUDA backend on one GPU — tokens/s and
// MFU for a GPT-2 shape — on random tokens. bench/torch_gpu_reference.py runs this binary and
// the same model in PyTorch (eager and torch.compile) and prints them side by side.
//
//   forge-bench-gpu-train --preset gpt2-124m-shape --batch 8 --seq 1024 --steps 20
//       [--attention=auto|flash|gemm|fused] [--nogelu_epilogue] [--profile]
//
// --profile also prints where the timed steps' GPU time went, op by op (step_profile.h: CUDA
// events between the ops), with the achieved TFLOP/s of the matmuls and the attention (its
// nominal causal FLOPs) and the GB/s of the memory-bound kernels, against the device's peaks.
// The events add a wait per backend call, so take tokens/s and MFU from
// a run without it.
//
// MFU = achieved FLOP/s / the GPU's dense bf16 peak, with nanoGPT's estimate (estimate_mfu):
// FLOPs per token = 6·N + 12·L·H·Q·T, N the parameters less wpe, Q = width / heads, T = seq.
// Peak: 989 TFLOP/s for H100 SXM and H200 (by device name), else give --peak-tflops.
// The last line is machine-readable:
//   forge-gpu-train: tokens_per_second=<x> mfu=<y> step_ms_median=<z>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/model_presets.h"
#include "worker/cuda/cuda_backend.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/device_peaks.h"
#include "worker/cuda/step_profile.h"

ABSL_FLAG(std::string, preset, "gpt2-124m-shape", "model preset: tiny | gpt2-124m-shape");
ABSL_FLAG(int, batch, 8, "sequences per step");
ABSL_FLAG(int, seq, 1024, "tokens per sequence (at most the preset's context)");
ABSL_FLAG(int, steps, 20, "timed steps");
ABSL_FLAG(int, warmup, 3, "untimed steps first");
ABSL_FLAG(std::string, precision, "bf16", "bf16 (training) or fp32 (exact mode)");
ABSL_FLAG(int, device, 0, "CUDA device index");
ABSL_FLAG(std::string, attention, "auto",
          "auto | flash (tensor cores, fused, bf16) | gemm (tensor-core products, [H, T, T] "
          "scores in memory) | fused (CUDA-core kernels, no T x T matrix)");
ABSL_FLAG(double, peak_tflops, 0, "dense bf16 peak of the GPU; 0 = from the device name");
ABSL_FLAG(bool, gelu_epilogue, true,
          "bf16: GELU and its derivative in the MLP matmuls' cuBLASLt epilogues (false: our "
          "GELU kernels; for measuring the difference)");
ABSL_FLAG(bool, profile, false,
          "also print the timed steps' GPU time per op (CUDA events between ops; adds a wait "
          "per call, so tokens/s is from a run without it)");

namespace forge::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The device's peaks (device_peaks.h); --peak_tflops overrides the TFLOP/s.
Peaks DevicePeaksWithFlags(const std::string& name) {
  Peaks peaks = DevicePeaks(name);
  if (absl::GetFlag(FLAGS_peak_tflops) > 0) peaks.tflops = absl::GetFlag(FLAGS_peak_tflops);
  return peaks;
}

int Run() {
  if (CudaDeviceCount() == 0) {
    std::fprintf(stderr, "forge-bench-gpu-train: no CUDA device answers; run it on a GPU machine\n");
    return 2;
  }
  absl::StatusOr<ModelShape> shape = PresetShape(absl::GetFlag(FLAGS_preset));
  if (!shape.ok()) {
    std::fprintf(stderr, "--preset: %s\n", std::string(shape.status().message()).c_str());
    return 1;
  }
  const int B = absl::GetFlag(FLAGS_batch), T = absl::GetFlag(FLAGS_seq);
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision != "bf16" && precision != "fp32") {
    std::fprintf(stderr, "--precision must be bf16 or fp32 (got %s)\n", precision.c_str());
    return 1;
  }
  const std::string attention = absl::GetFlag(FLAGS_attention);
  if (attention != "auto" && attention != "flash" && attention != "gemm" &&
      attention != "fused") {
    std::fprintf(stderr, "--attention must be auto, flash, gemm or fused (got %s)\n",
                 attention.c_str());
    return 1;
  }
  engine::BackendConfig config;
  config.shape = *shape;
  config.max_batch = B;
  config.max_seq = T;
  CudaBackendOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.bf16 = precision == "bf16";
  options.gelu_epilogue = absl::GetFlag(FLAGS_gelu_epilogue);
  StepProfile profile;
  if (absl::GetFlag(FLAGS_profile)) options.profile = &profile;
  options.attention = attention == "flash"   ? CudaAttention::kFlash
                      : attention == "gemm"  ? CudaAttention::kGemm
                      : attention == "fused" ? CudaAttention::kFused
                                             : CudaAttention::kAuto;
  absl::StatusOr<std::unique_ptr<engine::ModelBackend>> created = CreateCudaBackend(config, options);
  if (!created.ok()) {
    std::fprintf(stderr, "forge-bench-gpu-train: %s\n", created.status().ToString().c_str());
    return 1;
  }
  engine::ModelBackend& model = **created;
  if (!model.InitRandom(1).ok()) return 1;

  std::mt19937 gen(7);
  std::uniform_int_distribution<int> tok(0, shape->vocab - 1);
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
  std::vector<double> ms;
  double first_loss = 0, last_loss = 0;
  const int warmup = absl::GetFlag(FLAGS_warmup), steps = absl::GetFlag(FLAGS_steps);
  for (int s = 0; s < warmup + steps; ++s) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = tok(gen);
      targets[i] = tok(gen);
    }
    const auto t0 = Clock::now();
    absl::Status st = model.ZeroGrad();
    absl::StatusOr<double> loss =
        st.ok() ? model.ForwardBackward(tokens.data(), targets.data(), B, T, true)
                : absl::StatusOr<double>(st);
    absl::StatusOr<double> norm =
        loss.ok() ? model.OptimizerStep(1.0f, 1.0, 3e-4f) : absl::StatusOr<double>(loss.status());
    if (!norm.ok()) {
      std::fprintf(stderr, "step %d: %s\n", s, norm.status().ToString().c_str());
      return 1;
    }
    const double elapsed = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (s == 0) first_loss = *loss;
    last_loss = *loss;
    if (s >= warmup) ms.push_back(elapsed);
    if (s + 1 == warmup) profile.Clear();  // the timed steps only
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, options.device);
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);

  const double step_ms = Median(ms);
  const double tps = B * T / (step_ms / 1e3);
  const double n = static_cast<double>(model.num_params()) -
                   static_cast<double>(shape->context) * shape->width;  // less wpe
  const double flops_per_token = TrainingFlopsPerToken(*shape, T);
  const Peaks peaks = DevicePeaksWithFlags(prop.name);
  const double peak = peaks.tflops;
  const double mfu = peak > 0 ? tps * flops_per_token / (peak * 1e12) : 0;
  std::printf("forge-bench-gpu-train: %s, %s\n", model.Describe().c_str(),
              absl::GetFlag(FLAGS_preset).c_str());
  std::printf("model %zu parameters; batch %d x %d tokens; %d timed steps after %d warm-up\n",
              model.num_params(), B, T, steps, warmup);
  std::printf("loss %.3f -> %.3f (random tokens: ~ln(vocab) = %.3f)\n", first_loss, last_loss,
              std::log(static_cast<double>(shape->vocab)));
  std::printf("FLOPs/token = 6*N + 12*L*H*Q*T = %.1f MFLOP (N = %.0f, parameters less wpe)\n",
              flops_per_token / 1e6, n);
  std::printf("device memory in use: %.1f GiB of %.1f GiB\n",
              (total_bytes - free_bytes) / (1024.0 * 1024 * 1024), total_bytes / (1024.0 * 1024 * 1024));
  std::printf("| step ms (median) | step ms (min) | tokens/s | MFU (peak %.0f TFLOP/s) |\n", peak);
  std::printf("|---|---|---|---|\n");
  const std::string mfu_text = peak > 0 ? absl::StrFormat("%.1f %%", mfu * 100) : "n/a";
  std::printf("| %.2f | %.2f | %.0f | %s |\n", step_ms, *std::min_element(ms.begin(), ms.end()),
              tps, mfu_text.c_str());
  if (options.profile != nullptr) {
    std::printf(
        "\nGPU time per step, op by op (%d timed steps; profiled, so the step times "
        "above include a wait per call). References on %s: %.0f TFLOP/s dense bf16, %.0f GB/s "
        "memory (0: unknown); GB/s counts each input read and each output written once:\n%s\n",
        steps, prop.name, peak, peaks.gbs, profile.Table(steps).c_str());
  }
  std::printf("forge-gpu-train: tokens_per_second=%.1f mfu=%.4f step_ms_median=%.3f\n", tps, mfu,
              step_ms);
  return 0;
}

}  // namespace
}  // namespace forge::cuda

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return forge::cuda::Run();
}
