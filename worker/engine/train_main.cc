// forge-train: trains one rank locally from prepared datasets (no coordinator needed).
//
//   forge-train --source=general:DIR:0.25,domain:DIR:0.75 --preset=tiny --steps=200
//       --checkpoint-dir=/tmp/run --checkpoint-every=100
//
// Prints one line per step (loss, lr, grad norm, ms, tokens/s), writes checkpoints, and ends
// with the held-out loss and bits per byte of every source. --device=cuda:N trains on a GPU
// (when this binary was built with CUDA).
#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/flags_util.h"
#include "common/log.h"
#include "common/model_presets.h"
#include "common/status_macros.h"
#include "worker/engine/dataset_source.h"
#include "worker/engine/eval.h"
#include "worker/engine/trainer.h"
#ifdef FORGE_HAVE_CUDA
#include "worker/cuda/cuda_backend.h"
#endif

ABSL_FLAG(std::vector<std::string>, source, {},
          "comma-separated NAME:DIR:WEIGHT, one per data source (DIR from forge data prepare)");
ABSL_FLAG(std::string, preset, "tiny", "model preset: tiny or gpt2-124m-shape");
ABSL_FLAG(int64_t, steps, 200, "optimizer steps");
ABSL_FLAG(int, seq_len, 128, "tokens per sequence");
ABSL_FLAG(int, batch, 8, "sequences per micro-batch");
ABSL_FLAG(int, grad_accum, 1, "micro-batches per optimizer step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(double, min_lr, 1e-4, "learning rate at the end of the cosine decay");
ABSL_FLAG(int64_t, warmup_steps, 20, "linear warmup steps");
ABSL_FLAG(double, weight_decay, 0.1, "AdamW decoupled weight decay");
ABSL_FLAG(double, grad_clip, 1.0, "max global gradient norm (0 = off)");
ABSL_FLAG(uint64_t, seed, 1, "model init and data order");
ABSL_FLAG(int, threads, 2, "CPU threads");
ABSL_FLAG(std::string, checkpoint_dir, "", "write checkpoints under DIR/step-N");
ABSL_FLAG(int64_t, checkpoint_every, 0, "checkpoint every N steps (0 = only at the end)");
ABSL_FLAG(std::string, resume, "", "resume from this checkpoint directory");
ABSL_FLAG(int64_t, eval_tokens, 100000, "held-out tokens evaluated per source at the end");
ABSL_FLAG(std::string, device, "cpu", "cpu, or cuda:N (a GPU; needs a build with CUDA)");

namespace forge::engine {
namespace {

absl::Status Run() {
  TrainerOptions o;
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu") {
    int index = -1;
    if (!absl::StartsWith(device, "cuda:") ||
        !absl::SimpleAtoi(device.substr(5), &index) || index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device: \"", device, "\" is not cpu or cuda:N (e.g. cuda:0)"));
    }
#ifdef FORGE_HAVE_CUDA
    cuda::CudaBackendOptions bo;
    bo.device = index;
    o.make_backend = cuda::CudaBackendFactory(bo);
#else
    return absl::FailedPreconditionError(
        "--device: this forge-train was built without CUDA (no nvcc at build time); use "
        "--device=cpu, or rebuild where the CUDA toolkit is installed");
#endif
  }
  ASSIGN_OR_RETURN(o.shape, PresetShape(absl::GetFlag(FLAGS_preset)));
  std::vector<std::shared_ptr<const Dataset>> datasets;
  for (const std::string& spec : absl::GetFlag(FLAGS_source)) {
    std::vector<std::string> parts = absl::StrSplit(spec, ':');
    double weight = 0;
    if (parts.size() != 3 || !absl::SimpleAtod(parts[2], &weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--source: \"", spec, "\" is not NAME:DIR:WEIGHT"));
    }
    ASSIGN_OR_RETURN(Dataset data, Dataset::Open(parts[1], VerifyMode::kFull));
    auto shared = std::make_shared<const Dataset>(std::move(data));
    datasets.push_back(shared);
    o.sources.push_back(
        {parts[0], weight, std::make_shared<DatasetSplitSource>(shared, Split::kTrain)});
  }
  if (o.sources.empty()) {
    return absl::InvalidArgumentError("--source is required: NAME:DIR:WEIGHT,...");
  }
  o.steps = absl::GetFlag(FLAGS_steps);
  o.seq_len = absl::GetFlag(FLAGS_seq_len);
  o.micro_batch = absl::GetFlag(FLAGS_batch);
  o.grad_accum = absl::GetFlag(FLAGS_grad_accum);
  o.lr = {absl::GetFlag(FLAGS_lr), absl::GetFlag(FLAGS_warmup_steps), LrDecay::kCosine,
          absl::GetFlag(FLAGS_min_lr), o.steps};
  o.adamw.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  o.grad_clip = absl::GetFlag(FLAGS_grad_clip);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(o));
  std::printf("backend: %s\n", trainer->backend().Describe().c_str());
  if (std::string resume = absl::GetFlag(FLAGS_resume); !resume.empty()) {
    RETURN_IF_ERROR(trainer->LoadCheckpoint(resume));
    std::printf("resumed from %s at step %lld\n", resume.c_str(),
                static_cast<long long>(trainer->step()));
  }
  std::printf("model %s: %zu parameters; %d sources; %lld steps of %d x %d x %d tokens\n",
              absl::GetFlag(FLAGS_preset).c_str(), trainer->backend().num_params(),
              static_cast<int>(o.sources.size()), static_cast<long long>(o.steps), o.grad_accum,
              o.micro_batch, o.seq_len);
  const std::string ckpt_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  const int64_t every = absl::GetFlag(FLAGS_checkpoint_every);
  while (trainer->step() < o.steps) {
    ASSIGN_OR_RETURN(StepStats s, trainer->Step());
    const double tps = s.seconds > 0 ? s.tokens / s.seconds : 0;
    const double mfu = trainer->Mfu(tps);  // 0 on the CPU: not printed
    std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s%s\n",
                static_cast<long long>(s.step + 1), static_cast<long long>(o.steps), s.loss, s.lr,
                s.grad_norm, s.seconds * 1e3, tps,
                mfu > 0 ? absl::StrFormat(" | MFU %.1f%%", 100 * mfu).c_str() : "");
    const bool last = trainer->step() == o.steps;
    if (!ckpt_dir.empty() && (last || (every > 0 && trainer->step() % every == 0))) {
      const std::string dir = absl::StrCat(ckpt_dir, "/step-", trainer->step());
      RETURN_IF_ERROR(trainer->SaveCheckpoint(dir));
      std::printf("checkpoint %s\n", dir.c_str());
    }
  }
  for (size_t i = 0; i < datasets.size(); ++i) {
    absl::StatusOr<EvalResult> r = EvaluateHeldOut(trainer->backend(), *datasets[i], o.seq_len,
                                                   o.micro_batch, absl::GetFlag(FLAGS_eval_tokens));
    if (!r.ok()) {
      std::printf("eval %s: %s\n", o.sources[i].name.c_str(), std::string(r.status().message()).c_str());
      continue;
    }
    std::printf("eval %-12s held-out loss %.4f | %.4f bits/byte | %lld tokens\n",
                o.sources[i].name.c_str(), r->loss, r->bits_per_byte,
                static_cast<long long>(r->tokens));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace forge::engine

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("forge-train --source=NAME:DIR:WEIGHT,... [--preset=tiny] ...");
  forge::ParseDashedCommandLine(argc, argv);
  forge::SetLogTag("train");
  absl::Status s = forge::engine::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "forge-train: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
