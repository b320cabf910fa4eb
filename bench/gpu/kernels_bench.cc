// forge-bench-gpu-kernels: the CUDA backend's memory-bound kernels at a GPT-2 training shape,
// before and after they read and wrote 16-byte packs, on the same GPU in one run. "before" is
// the kernels as of fb02d94, kept in reference_kernels.cu; "after" is
// worker/cuda/kernels.h, what the trainer runs.
//
//   forge-bench-gpu-kernels [--batch 8 --seq 1024 --width 768 --heads 12 --layers 12
//                            --vocab 50257 --params 124439808 --reps 20 --warmup 3]
//
// Each kernel runs --warmup times, then --reps times between a pair of CUDA events; the table
// gives the median microseconds of both, their ratio, and the after kernel's GB/s with its
// share of the device's memory bandwidth (device_peaks.h). GB/s counts each input read and
// each output written once, as the step profile does (step_profile.h), so a kernel that
// reads an input twice (the streaming cross-entropy, LayerNorm) shows less than it moves.
// "calls/step" is how often a training step of the shape runs the kernel (the GELU kernels
// only where the matmul epilogue cannot fuse it), and the last row sums calls x median: the
// memory-bound kernels' milliseconds per step, before and after. One row compares two of
// today's kernels instead: the cross-entropy that reads each row twice (16-byte packs; what
// ran before the held kernel) against the one that holds the row in registers and reads it
// once.
//
// The inputs are hashes, not a model's values, and the kernels run in place where the trainer
// runs them in place (cross-entropy, AdamW), so later repetitions see earlier outputs; the
// timings do not depend on the values. Before timing, each pair runs once on the same fresh
// inputs and "agree" is their worst output entry's difference in units of what rounding
// explains (Disagreement); over 1 the run fails (exit 3). Each timed run follows a write of
// twice the L2 cache, so inputs come from memory, and all runs are queued before the first
// is waited for, so launch latency is not timed. AdamW: one launch over all parameters, as
// the trainer now runs it (AdamWUpdateSpans); before, the trainer launched it once per span
// of decayed or undecayed tensors (about 8 a layer), which this table does not count. The
// kernels' correctness against the CPU engine is the gpu tests' (kernels_test.cc).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "bench/gpu/reference_kernels.h"
#include "common/status_macros.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/device_peaks.h"
#include "worker/cuda/kernels.h"
#include "worker/cuda/step_profile.h"

ABSL_FLAG(int, batch, 8, "sequences per step");
ABSL_FLAG(int, seq, 1024, "tokens per sequence");
ABSL_FLAG(int, width, 768, "model width C (a multiple of 8, as the CUDA backend needs)");
ABSL_FLAG(int, heads, 12, "attention heads");
ABSL_FLAG(int, layers, 12, "transformer layers (for calls per step)");
ABSL_FLAG(int, vocab, 50257, "vocabulary V (the logits' rows padded to a multiple of 8)");
ABSL_FLAG(int64_t, params, 124439808, "parameters (AdamW and the gradient norm)");
ABSL_FLAG(int, reps, 20, "timed runs per kernel");
ABSL_FLAG(int, warmup, 3, "untimed runs per kernel first");
ABSL_FLAG(int, device, 0, "CUDA device index");

namespace forge::cuda {
namespace {

namespace before = bench::before;

// The run's device arrays (DeviceBuffer), freed together at its end.
class DeviceArena {
 public:
  template <typename T>
  absl::StatusOr<T*> Allocate(size_t n, const char* what) {
    ASSIGN_OR_RETURN(DeviceBuffer<char> b, DeviceBuffer<char>::Allocate(n * sizeof(T), what));
    held_.push_back(std::move(b));
    return reinterpret_cast<T*>(held_.back().get());  // cudaMalloc: aligned for any T
  }

 private:
  std::vector<DeviceBuffer<char>> held_;
};

// A device array a kernel writes: compared between the before and after kernels. With a
// pitch, rows of `cols` entries `pitch` apart (the padding between is not compared).
struct Output {
  const void* data;
  size_t n;
  bool bf16;  // else fp32
  int cols = 0, pitch = 0;
};

struct Case {
  std::string op, shape;
  int calls;     // per training step
  double bytes;  // nominal: each input read and each output written once
  std::function<cudaError_t()> before, after;
  std::vector<Output> outputs;
};

absl::StatusOr<std::vector<float>> Download(const Output& o) {
  std::vector<float> out(o.n);
  if (o.bf16) {
    std::vector<bf16> tmp(o.n);
    FORGE_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(tmp.data(), o.data, o.n * sizeof(bf16), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < o.n; ++i) out[i] = __bfloat162float(tmp[i]);
  } else {
    FORGE_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(out.data(), o.data, o.n * sizeof(float), cudaMemcpyDeviceToHost));
  }
  if (o.pitch > 0) {
    std::vector<float> rows;
    for (size_t r = 0; r + o.cols <= o.n; r += o.pitch) {
      rows.insert(rows.end(), out.begin() + r, out.begin() + r + o.cols);
    }
    return rows;
  }
  return out;
}

// How far the two kernels' outputs are apart, entry by entry, in units of what rounding may
// explain: |a - b| / (rtol · max(|a|, |b|) + atol · scale), scale the output's largest
// magnitude. bf16 outputs: rtol 2^-7 (a value rounded the other way after fp32 sums in
// another order) and atol 1e-6; fp32: rtol 1e-4 and atol 1e-5 (sums of thousands of terms in
// another order, near zero). The worst entry over all outputs; above 1 the kernels disagree.
double Disagreement(const std::vector<Output>& outputs, const std::vector<std::vector<float>>& a,
                    const std::vector<std::vector<float>>& b) {
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    const double rtol = outputs[k].bf16 ? 1.0 / 128 : 1e-4, atol = outputs[k].bf16 ? 1e-6 : 1e-5;
    double scale = 0;
    for (const float x : a[k]) scale = std::max(scale, std::fabs(double{x}));
    for (size_t i = 0; i < a[k].size(); ++i) {
      const double x = a[k][i], y = b[k][i];
      if (std::isnan(x) || std::isnan(y)) return INFINITY;
      const double allowed = rtol * std::max(std::fabs(x), std::fabs(y)) + atol * scale;
      const double diff = std::fabs(x - y);
      if (diff > 0) worst = std::max(worst, allowed > 0 ? diff / allowed : INFINITY);
    }
  }
  return worst;
}

// Median microseconds of `run` over `reps` runs. Each run is timed by its own pair of events,
// after a write of `flush` (twice the L2 cache) so its inputs come from memory, not L2; all
// runs are queued before waiting, so the events time the kernels, not their launches.
absl::StatusOr<double> MedianUs(const std::function<cudaError_t()>& run, int reps, int warmup,
                                const std::vector<cudaEvent_t>& events, void* flush,
                                size_t flush_bytes) {
  for (int i = 0; i < warmup; ++i) FORGE_CUDA_RETURN_IF_ERROR(run());
  FORGE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  for (int i = 0; i < reps; ++i) {
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(flush, i & 0xff, flush_bytes, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(events[2 * i], nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(run());
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(events[2 * i + 1], nullptr));
  }
  FORGE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]));
    us.push_back(1000.0 * ms);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// The flags, read once.
struct Shape {
  int B, T, C, H, L, V;
  size_t P;
  int reps, warmup;
};

Shape FlagShape() {
  return {absl::GetFlag(FLAGS_batch),
          absl::GetFlag(FLAGS_seq),
          absl::GetFlag(FLAGS_width),
          absl::GetFlag(FLAGS_heads),
          absl::GetFlag(FLAGS_layers),
          absl::GetFlag(FLAGS_vocab),
          static_cast<size_t>(absl::GetFlag(FLAGS_params)),
          absl::GetFlag(FLAGS_reps),
          absl::GetFlag(FLAGS_warmup)};
}

absl::Status Measure(const Shape& shape, bool* disagreed);

// Checks the flags and that a GPU answers (exit 1, 2), then Measure (exit 1 on a CUDA error,
// 3 when some case's kernels disagree).
int Run() {
  const Shape shape = FlagShape();
  const auto [B, T, C, H, L, V, P, reps, warmup] = shape;
  if (B < 1 || T < 1 || C < 8 || C % 8 != 0 || H < 1 || C % H != 0 || L < 1 || V < 2 || P < 1 ||
      reps < 1 || warmup < 0) {
    std::fprintf(stderr,
                 "forge-bench-gpu-kernels: need --batch, --seq, --layers, --params, --reps >= 1, "
                 "--warmup >= 0, --vocab >= 2, --width a multiple of 8 and of --heads\n");
    return 1;
  }
  if (CudaDeviceCount() == 0) {
    std::fprintf(stderr,
                 "forge-bench-gpu-kernels: no CUDA device answers; run it on a GPU machine\n");
    return 2;
  }
  bool disagreed = false;
  if (absl::Status s = Measure(shape, &disagreed); !s.ok()) {
    std::fprintf(stderr, "forge-bench-gpu-kernels: %s\n", s.ToString().c_str());
    return 1;
  }
  if (disagreed) {
    std::fprintf(stderr,
                 "forge-bench-gpu-kernels: the before and after kernels disagree (FAILS)\n");
    return 3;
  }
  return 0;
}

// Allocates, fills, checks agreement and times every case; prints the table. *disagreed: some
// case's kernels disagree (its row says FAILS).
absl::Status Measure(const Shape& shape, bool* disagreed) {
  const int B = shape.B, T = shape.T, C = shape.C, H = shape.H, L = shape.L, V = shape.V;
  const size_t P = shape.P;
  const int reps = shape.reps, warmup = shape.warmup;
  FORGE_CUDA_RETURN_IF_ERROR(cudaSetDevice(absl::GetFlag(FLAGS_device)));
  cudaDeviceProp prop{};
  FORGE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, absl::GetFlag(FLAGS_device)));
  const Peaks peaks = DevicePeaks(prop.name);

  const int N = B * T, ld = (V + 7) / 8 * 8, C4 = 4 * C;
  const size_t nc = static_cast<size_t>(N) * C, nc4 = static_cast<size_t>(N) * C4;
  constexpr double tb = sizeof(bf16);

  // Inputs and outputs.
  DeviceArena arena;
  ASSIGN_OR_RETURN(bf16* const logits, arena.Allocate<bf16>(size_t{1} * N * ld, "logits"));
  ASSIGN_OR_RETURN(int32_t* const tokens, arena.Allocate<int32_t>(N, "tokens"));
  ASSIGN_OR_RETURN(float* const losses, arena.Allocate<float>(N, "losses"));
  ASSIGN_OR_RETURN(float* const delta, arena.Allocate<float>(size_t{1} * B * H * T, "delta"));
  ASSIGN_OR_RETURN(bf16* const x, arena.Allocate<bf16>(nc, "x"));
  ASSIGN_OR_RETURN(bf16* const out, arena.Allocate<bf16>(nc, "out"));
  ASSIGN_OR_RETURN(bf16* const dy, arena.Allocate<bf16>(nc, "dy"));
  ASSIGN_OR_RETURN(bf16* const dx, arena.Allocate<bf16>(nc, "dx"));
  ASSIGN_OR_RETURN(bf16* const h4, arena.Allocate<bf16>(nc4, "MLP input"));
  ASSIGN_OR_RETURN(bf16* const g4, arena.Allocate<bf16>(nc4, "GELU output"));
  ASSIGN_OR_RETURN(bf16* const d4, arena.Allocate<bf16>(nc4, "GELU gradient"));
  ASSIGN_OR_RETURN(float* const mean, arena.Allocate<float>(N, "mean"));
  ASSIGN_OR_RETURN(float* const rstd, arena.Allocate<float>(N, "rstd"));
  ASSIGN_OR_RETURN(float* const w, arena.Allocate<float>(C4, "weight"));
  ASSIGN_OR_RETURN(float* const b, arena.Allocate<float>(C4, "bias"));
  ASSIGN_OR_RETURN(float* const dw, arena.Allocate<float>(C4, "weight gradient"));
  ASSIGN_OR_RETURN(float* const db, arena.Allocate<float>(C4, "bias gradient"));
  const size_t col_scratch =
      std::max(ColumnReduceScratchFloats(N, C4), before::ColumnReduceScratchFloats(N, C4));
  ASSIGN_OR_RETURN(float* const scratch, arena.Allocate<float>(col_scratch, "column scratch"));
  ASSIGN_OR_RETURN(float* const wte, arena.Allocate<float>(size_t{1} * V * C, "wte"));
  ASSIGN_OR_RETURN(float* const wpe, arena.Allocate<float>(size_t{1} * T * C, "wpe"));
  ASSIGN_OR_RETURN(float* const params, arena.Allocate<float>(P, "params"));
  ASSIGN_OR_RETURN(float* const grads, arena.Allocate<float>(P, "grads"));
  ASSIGN_OR_RETURN(float* const m, arena.Allocate<float>(P, "m"));
  ASSIGN_OR_RETURN(float* const v, arena.Allocate<float>(P, "v"));
  ASSIGN_OR_RETURN(bf16* const lowp, arena.Allocate<bf16>(P, "bf16 params"));
  ASSIGN_OR_RETURN(float* const norm, arena.Allocate<float>(2, "norm"));
  ASSIGN_OR_RETURN(
      double* const norm_scratch,
      arena.Allocate<double>(std::max(GradNormScratchDoubles(P), before::GradNormScratchDoubles(P)),
                             "norm scratch"));
  const size_t flush_bytes = std::max<size_t>(2 * static_cast<size_t>(prop.l2CacheSize), 1 << 20);
  ASSIGN_OR_RETURN(char* const flush, arena.Allocate<char>(flush_bytes, "L2 flush"));
  // Every input and output refilled (the same values each time): before each kernel's
  // agreement check, since several run in place or accumulate.
  auto fill_all = [&]() -> absl::Status {
    FORGE_CUDA_RETURN_IF_ERROR(
        before::Fill(logits, static_cast<size_t>(N) * ld, 1, -4.0f, 4.0f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::FillTokens(tokens, N, 2, V, nullptr));
    uint32_t seed = 3;
    for (bf16* a : {x, out, dy, dx})
      FORGE_CUDA_RETURN_IF_ERROR(before::Fill(a, nc, seed++, -1.0f, 1.0f, nullptr));
    for (bf16* a : {h4, g4, d4})
      FORGE_CUDA_RETURN_IF_ERROR(before::Fill(a, nc4, seed++, -3.0f, 3.0f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(mean, N, seed++, -0.1f, 0.1f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(rstd, N, seed++, 0.5f, 2.0f, nullptr));
    for (float* a : {w, b, dw, db})
      FORGE_CUDA_RETURN_IF_ERROR(before::Fill(a, C4, seed++, -1.0f, 1.0f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(losses, N, seed++, 0.0f, 1.0f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(
        before::Fill(delta, static_cast<size_t>(B) * H * T, seed++, 0.0f, 1.0f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(
        before::Fill(wte, static_cast<size_t>(V) * C, seed++, -0.1f, 0.1f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(wpe, size_t{1} * T * C, seed++, -0.1f, 0.1f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(params, P, seed++, -0.1f, 0.1f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(grads, P, seed++, -1e-3f, 1e-3f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(m, P, seed++, -1e-4f, 1e-4f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(v, P, seed++, 0.0f, 1e-6f, nullptr));
    FORGE_CUDA_RETURN_IF_ERROR(before::Fill(lowp, P, seed++, 0.0f, 1.0f, nullptr));
    // norm[1]: the gradient factor AdamW reads (every input of its arithmetic off 1, so the
    // agreement check sees each term).
    FORGE_CUDA_RETURN_IF_ERROR(cudaMemcpy(norm, std::vector<float>{1.0f, 0.5f}.data(),
                                          2 * sizeof(float), cudaMemcpyHostToDevice));
    FORGE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return absl::OkStatus();
  };

  const float scale = 1.0f / N;
  const std::string rows = absl::StrFormat("%d x %d", N, C);
  std::vector<Case> cases;
  cases.push_back({"embedding",
                   rows,
                   1,
                   nominal_bytes::Embedding(N, T, C, tb),
                   [&] { return before::EmbeddingForward(x, tokens, wte, wpe, B, T, C, nullptr); },
                   [&] { return EmbeddingForward<bf16>(x, tokens, wte, wpe, B, T, C, nullptr); },
                   {{x, nc, true}}});
  cases.push_back(
      {"layernorm",
       rows,
       2 * L + 1,
       nominal_bytes::LayerNorm(N, C, tb),
       [&] { return before::LayerNormForward(out, mean, rstd, x, w, b, N, C, nullptr); },
       [&] { return LayerNormForward<bf16>(out, mean, rstd, x, w, b, N, C, nullptr); },
       {{out, nc, true}, {mean, size_t(N), false}, {rstd, size_t(N), false}}});
  cases.push_back(
      {"layernorm backward",
       rows,
       2 * L + 1,
       nominal_bytes::LayerNormBackward(N, C, tb),
       [&] {
         return before::LayerNormBackward(dx, dw, db, scratch, dy, x, w, mean, rstd, N, C, nullptr);
       },
       [&] {
         return LayerNormBackward<bf16>(dx, dw, db, scratch, dy, x, w, mean, rstd, N, C, nullptr);
       },
       {{dx, nc, true}, {dw, size_t(C), false}, {db, size_t(C), false}}});
  // The dense layers' widths: attention and MLP projections (C), qkv (3C), fc (4C).
  for (const std::pair<int, int>& width_calls : {std::pair{C, 2 * L}, {3 * C, L}, {C4, L}}) {
    const int cols = width_calls.first;
    cases.push_back({"bias gradient",
                     absl::StrFormat("%d x %d", N, cols),
                     width_calls.second,
                     nominal_bytes::BiasGradient(N, cols, tb),
                     [&, cols] { return before::BiasGrad(db, scratch, g4, N, cols, nullptr); },
                     [&, cols] { return BiasGrad<bf16>(db, scratch, g4, N, cols, nullptr); },
                     {{db, size_t(cols), false}}});
  }
  cases.push_back({"attention delta",
                   absl::StrFormat("%d x %d, %d heads", N, C, H),
                   L,
                   2.0 * nc * tb + 4.0 * B * H * T,
                   [&] { return before::AttentionDelta(delta, dy, x, B, T, C, H, nullptr); },
                   [&] { return AttentionDelta<bf16>(delta, dy, x, B, T, C, H, nullptr); },
                   {{delta, size_t{1} * B * H * T, false}}});
  cases.push_back({"gelu (no epilogue)",
                   absl::StrFormat("%d x %d", N, C4),
                   0,
                   2.0 * nc4 * tb,
                   [&] { return before::GeluForward(g4, h4, nc4, nullptr); },
                   [&] { return GeluForward<bf16>(g4, h4, nc4, nullptr); },
                   {{g4, nc4, true}}});
  cases.push_back({"gelu backward (no epilogue)",
                   absl::StrFormat("%d x %d", N, C4),
                   0,
                   3.0 * nc4 * tb,
                   [&] { return before::GeluBackward(d4, h4, g4, nc4, nullptr); },
                   [&] { return GeluBackward<bf16>(d4, h4, g4, nc4, nullptr); },
                   {{d4, nc4, true}}});
  cases.push_back(
      {"cross-entropy + gradient",
       absl::StrFormat("%d x %d (pitch %d)", N, V, ld),
       1,
       nominal_bytes::CrossEntropy(N, V, tb, /*backward=*/true),
       [&] {
         return before::CrossEntropy(losses, logits, logits, tokens, scale, N, V, ld, nullptr);
       },
       [&] { return CrossEntropy<bf16>(losses, logits, logits, tokens, scale, N, V, ld, nullptr); },
       {{losses, size_t(N), false}, {logits, size_t{1} * N * ld, true, V, ld}}});
  // Today's two cross-entropy kernels on the same rows (not counted in the step's total): the
  // streaming one (16-byte packs, each row read twice) before, the held one (read once) after.
  cases.push_back(
      {"cross-entropy: streaming vs held",
       absl::StrFormat("%d x %d (pitch %d)", N, V, ld),
       0,
       nominal_bytes::CrossEntropy(N, V, tb, /*backward=*/true),
       [&] {
         return CrossEntropyStreaming<bf16>(losses, logits, logits, tokens, scale, N, V, ld,
                                            nullptr);
       },
       [&] { return CrossEntropy<bf16>(losses, logits, logits, tokens, scale, N, V, ld, nullptr); },
       {{losses, size_t(N), false}, {logits, size_t{1} * N * ld, true, V, ld}}});
  cases.push_back(
      {"gradient norm",
       absl::StrFormat("%zu", P),
       1,
       nominal_bytes::GradientNorm(P),
       [&] { return before::GradNorm(norm, norm_scratch, grads, P, 0.5f, 1e-3f, nullptr); },
       [&] { return GradNorm(norm, norm_scratch, grads, P, 0.5f, 1e-3f, nullptr); },
       {{norm, 2, false}}});
  // A large step and bias corrections off 1 (step 3 of 0.9 / 0.95), so the decay and the
  // corrections move the parameters by more than fp32 rounding.
  constexpr float kLr = 1e-2f, kC1 = 3.69f, kC2 = 7.01f;
  cases.push_back(
      {"adamw",
       absl::StrFormat("%zu", P),
       1,
       nominal_bytes::AdamW(P, tb),
       [&] {
         return before::AdamWUpdate(params, lowp, grads, m, v, P, norm + 1, kLr, 0.9f, 0.95f, 1e-8f,
                                    0.1f, kC1, kC2, nullptr);
       },
       [&] {
         return AdamWUpdate<bf16>(params, lowp, grads, m, v, P, norm + 1, kLr, 0.9f, 0.95f, 1e-8f,
                                  0.1f, kC1, kC2, nullptr);
       },
       {{params, P, false}, {grads, P, false}, {m, P, false}, {v, P, false}, {lowp, P, true}}});

  std::vector<cudaEvent_t> events(2 * reps);  // the process's: not destroyed
  for (cudaEvent_t& e : events) {
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDefault));
  }
  std::printf("forge-bench-gpu-kernels: %s (memory %.0f GB/s by its name; 0: unknown)\n", prop.name,
              peaks.gbs);
  std::printf(
      "batch %d x %d, width %d, %d heads, %d layers, vocab %d, %zu parameters, bf16; "
      "median of %d runs after %d warm-up\n",
      B, T, C, H, L, V, P, reps, warmup);
  std::printf("before: the kernels at fb02d94 (element-wise); after: worker/cuda/kernels.h\n");
  std::printf(
      "agree: the two kernels' outputs on the same inputs, worst entry, in units of what "
      "rounding explains (bf16 2^-7 relative, fp32 1e-4; over 1 fails the run)\n");
  std::printf(
      "| op | shape | calls/step | before us | after us | after/before | after GB/s | "
      "of peak | agree |\n|---|---|---|---|---|---|---|---|---|\n");
  double before_step = 0, after_step = 0;
  for (const Case& c : cases) {
    std::vector<std::vector<float>> outputs[2];
    for (int k = 0; k < 2; ++k) {
      RETURN_IF_ERROR(fill_all());
      FORGE_CUDA_RETURN_IF_ERROR(k == 0 ? c.before() : c.after());
      FORGE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
      for (const Output& o : c.outputs) {
        ASSIGN_OR_RETURN(std::vector<float> got, Download(o));
        outputs[k].push_back(std::move(got));
      }
    }
    const double disagreement = Disagreement(c.outputs, outputs[0], outputs[1]);
    *disagreed |= !(disagreement <= 1);
    ASSIGN_OR_RETURN(const double tb_us,
                     MedianUs(c.before, reps, warmup, events, flush, flush_bytes));
    ASSIGN_OR_RETURN(const double ta_us,
                     MedianUs(c.after, reps, warmup, events, flush, flush_bytes));
    const double gbs = c.bytes / (ta_us * 1e-6) / 1e9;
    before_step += c.calls * tb_us;
    after_step += c.calls * ta_us;
    const std::string share =
        peaks.gbs > 0 ? absl::StrFormat("%.0f %%", 100 * gbs / peaks.gbs) : std::string("n/a");
    std::printf("| %s | %s | %d | %.1f | %.1f | %.2f | %.0f | %s | %.1e%s |\n", c.op.c_str(),
                c.shape.c_str(), c.calls, tb_us, ta_us, ta_us / tb_us, gbs, share.c_str(),
                disagreement, disagreement <= 1 ? "" : " FAILS");
  }
  std::printf("| per step (calls x median) | | | %.0f | %.0f | %.2f | | | |\n", before_step,
              after_step, after_step / before_step);
  if (!*disagreed) {
    std::printf("forge-gpu-kernels: before_us_per_step=%.1f after_us_per_step=%.1f\n", before_step,
                after_step);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace forge::cuda

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return forge::cuda::Run();
}
