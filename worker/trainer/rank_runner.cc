#include "worker/trainer/rank_runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/model_presets.h"
#include "common/spec_names.h"
#include "common/status_macros.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/communicator.h"
#include "worker/engine/dataset_source.h"
#include "worker/engine/eval.h"
#include "worker/engine/trainer.h"
#include "worker/trainer/coordinator_store.h"
#include "worker/trainer/micro_batch.h"
#include "worker/trainer/trainer_client.h"

#ifdef FORGE_HAVE_CUDA
#include "worker/cuda/cuda_backend.h"
#include "worker/cuda/nccl_communicator.h"
#endif

namespace forge::trainer {
namespace {

using engine::Trainer;
using engine::TrainerOptions;

// A Status with the exit code it maps to.
struct Failure {
  int code = kExitFailed;
  absl::Status status;
};

// Sends the newest progress report from its own thread, so a slow coordinator never stalls
// the step loop; reports in between are coalesced (the metrics series is rank 0's, one point
// per report that got through). Remembers a stop order.
class ProgressReporter {
 public:
  explicit ProgressReporter(TrainerClient* client) : client_(client), thread_([this] { Loop(); }) {}
  ~ProgressReporter() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }
  void Report(forge::v1::ProgressReport report) {
    absl::MutexLock lock(&mu_);
    pending_ = std::move(report);
  }
  // Blocks until the pending report (if any) was sent or failed.
  void Flush() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](ProgressReporter* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
          return !r->pending_.has_value() && !r->sending_;
        },
        this));
  }
  std::optional<std::string> stop_reason() {
    absl::MutexLock lock(&mu_);
    return stop_;
  }

 private:
  void Loop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      const bool woken = mu_.AwaitWithTimeout(
          absl::Condition(
              +[](ProgressReporter* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
                return r->done_ || r->pending_.has_value();
              },
              this),
          kKeepalive);
      if (!woken) {
        // Nothing new for a while (downloading, loading, evaluating, uploading): repeat the
        // last report so the coordinator's step timeout does not take a busy rank for a
        // hung one. A stopped process (SIGSTOP) stops this thread too.
        if (!last_.has_value()) continue;
        pending_ = *last_;
      }
      if (!pending_.has_value()) return;  // done
      forge::v1::ProgressReport report = std::move(*pending_);
      pending_.reset();
      last_ = report;
      sending_ = true;
      mu_.Unlock();
      absl::StatusOr<forge::v1::ProgressResponse> r = client_->ReportProgress(report);
      mu_.Lock();
      sending_ = false;
      if (r.ok() && r->stop()) stop_ = r->reason();
      if (!r.ok() && (absl::IsFailedPrecondition(r.status()) ||
                      absl::IsUnauthenticated(r.status()))) {
        stop_ = std::string(r.status().message());
      }
      if (done_ && !pending_.has_value()) return;
    }
  }

  TrainerClient* const client_;
  absl::Mutex mu_;
  static constexpr absl::Duration kKeepalive = absl::Seconds(5);
  std::optional<forge::v1::ProgressReport> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<forge::v1::ProgressReport> last_ ABSL_GUARDED_BY(mu_);
  bool sending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::string> stop_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Writes and uploads snapshots on its own thread (rank 0). One in flight: the next checkpoint
// waits for the previous upload (that wait is the only checkpoint time the step loop pays
// beyond the snapshot copy). The snapshot buffer is reused between checkpoints, so a copy
// touches no fresh pages.
class CheckpointStreamer {
 public:
  CheckpointStreamer(TrainerClient* client, std::string staging_dir)
      : client_(client), staging_(std::move(staging_dir)) {}
  // An upload still running finishes first (its outcome was already printed).
  ~CheckpointStreamer() { Wait().IgnoreError(); }

  // Waits for the previous upload, then copies the trainer's state (the blocking part) and
  // starts writing + uploading it. Returns the time spent copying, or the copy's error (a
  // device backend's).
  absl::StatusOr<absl::Duration> Submit(const engine::Trainer& trainer, nlohmann::json extra) {
    // A failed intermediate upload was printed; the next checkpoint supersedes it.
    Wait().IgnoreError();
    const absl::Time t0 = absl::Now();
    RETURN_IF_ERROR(trainer.SnapshotInto(&buffer_));
    const absl::Duration copy = absl::Now() - t0;
    const int64_t step = buffer_.step;
    {
      absl::MutexLock lock(&mu_);
      busy_ = true;
    }
    worker_ = std::thread([this, step, extra = std::move(extra)]() mutable {
      const std::string dir = absl::StrCat(staging_, "/step-", step);
      absl::Status s = engine::WriteCheckpointSnapshot(buffer_, dir, extra);
      absl::StatusOr<forge::v1::CheckpointInfo> info =
          s.ok() ? client_->UploadCheckpoint(dir, step) : absl::StatusOr<forge::v1::CheckpointInfo>(s);
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      absl::MutexLock lock(&mu_);
      if (info.ok()) {
        last_ = *info;
        std::printf("checkpoint step %lld committed as %s (%lld bytes)\n",
                    static_cast<long long>(step), info->id().c_str(),
                    static_cast<long long>(info->bytes()));
        std::fflush(stdout);
      } else {
        std::printf("checkpoint step %lld failed: %s\n", static_cast<long long>(step),
                    info.status().ToString().c_str());
        std::fflush(stdout);
      }
      status_ = info.status();
      busy_ = false;
    });
    return copy;
  }
  // Whether an upload is still running (the step loop skips an intermediate checkpoint
  // rather than stall its peers' next all-reduce behind it).
  bool busy() {
    absl::MutexLock lock(&mu_);
    return busy_;
  }
  // Waits for the upload in flight; returns its status (an earlier, failed intermediate
  // upload does not fail the run: a later checkpoint supersedes it).
  absl::Status Wait() {
    if (worker_.joinable()) worker_.join();
    absl::MutexLock lock(&mu_);
    return status_;
  }
  forge::v1::CheckpointInfo last() {
    absl::MutexLock lock(&mu_);
    return last_;
  }

 private:
  TrainerClient* const client_;
  const std::string staging_;
  std::thread worker_;
  engine::CheckpointSnapshot buffer_;  // owned by worker_ while it runs
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);  // of the last upload
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  forge::v1::CheckpointInfo last_ ABSL_GUARDED_BY(mu_);
};

struct Built {
  TrainerOptions options;
  std::map<std::string, std::shared_ptr<const Dataset>> datasets;
};

absl::StatusOr<Built> BuildOptions(const forge::v1::Assignment& a, TrainerClient* client,
                                   const std::string& rank_dir, int threads) {
  const forge::v1::JobSpec& spec = a.spec();
  Built b;
  TrainerOptions& o = b.options;
  // From a base checkpoint the coordinator sends the base's shape; a fresh model has its own.
  if (!a.base_checkpoint().empty()) {
    if (a.shape().layers() == 0) {
      return absl::FailedPreconditionError(
          "the assignment names a base checkpoint but no model shape: upgrade the coordinator");
    }
    ASSIGN_OR_RETURN(o.shape, ResolveModelShape(a.shape()));
  } else {
    ASSIGN_OR_RETURN(o.shape, ResolveModelShape(spec.model()));
  }
  std::set<std::string> names;
  for (const auto& m : spec.data().mixture()) names.insert(m.dataset());
  for (const auto& s : spec.eval().suites()) names.insert(s);
  for (const std::string& name : names) {
    const std::string dir = absl::StrCat(rank_dir, "/data/", name);
    RETURN_IF_ERROR(client->FetchDataset(name, dir));
    ASSIGN_OR_RETURN(Dataset data, Dataset::Open(dir, VerifyMode::kFull));
    b.datasets[name] = std::make_shared<const Dataset>(std::move(data));
  }
  for (const auto& m : spec.data().mixture()) {
    o.sources.push_back({m.dataset(), m.weight(),
                         std::make_shared<engine::DatasetSplitSource>(b.datasets[m.dataset()],
                                                                      Split::kTrain)});
  }
  for (const auto& p : spec.data().schedule()) {
    engine::MixtureSchedulePoint point;
    point.at = p.at();
    for (const auto& [k, v] : p.weights()) point.weights[k] = v;
    o.schedule.push_back(std::move(point));
  }
  const forge::v1::TrainSpec& t = spec.train();
  o.steps = t.steps();
  o.seq_len = t.seq_len();
  if (o.seq_len < 1 || o.seq_len > o.shape.context) {  // the coordinator fills and bounds it
    return absl::InvalidArgumentError(
        absl::StrCat("train.seq_len ", o.seq_len, " is outside 1..", o.shape.context,
                     " (the model's context): set train.seq_len and resubmit"));
  }
  const int64_t per_rank = t.batch_tokens() / t.seq_len() / std::max(1, a.world_size());
  if (per_rank < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.batch_tokens ", t.batch_tokens(), " gives no sequence per rank"));
  }
  if (t.has_micro_batch()) {
    // The coordinator checked this; a spec from an older one is checked here.
    if (t.micro_batch() < 1 || per_rank % t.micro_batch() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "train.micro_batch ", t.micro_batch(), " does not divide the ", per_rank,
          " sequences each rank takes per step (train.batch_tokens / (seq_len x ranks)): pick a "
          "divisor of ",
          per_rank));
    }
    o.micro_batch = t.micro_batch();
  } else if (absl::StartsWith(a.device(), "cuda:")) {
#ifdef FORGE_HAVE_CUDA
    const int cap = std::min(kCudaMicroBatchCap, CudaMaxMicroBatch(o.shape.heads));
    o.micro_batch = ChooseMicroBatch(
        per_rank, cap,
        [&](int m) { return cuda::CudaActivationBytes(o.shape, m, o.seq_len, /*bf16=*/true); },
        kCudaActivationBudget);
#endif  // else Run refuses the device
  } else {
    o.micro_batch = ChooseMicroBatch(per_rank, kCpuMicroBatchCap);
  }
  o.grad_accum = static_cast<int>(per_rank / o.micro_batch);
  o.lr = {t.lr(), t.warmup_steps(), engine::LrDecayFromProto(t.lr_decay()), t.min_lr(), o.steps};
  o.adamw.weight_decay = static_cast<float>(t.weight_decay());
  o.grad_clip = t.grad_clip();
  o.seed = t.seed();
  o.threads = threads;
  o.world_size = a.world_size();
  o.rank = a.rank();
  return b;
}

Failure Fail(int code, absl::Status s) { return Failure{code, std::move(s)}; }

Failure Run(const RankOptions& ro) {
  const forge::v1::Assignment& a = ro.assignment;
  const forge::v1::JobSpec& spec = a.spec();
  TrainerClientOptions co;
  co.coordinator = ro.coordinator;
  co.rank_token = a.rank_token();
  co.rank.set_job_id(a.job_id());
  co.rank.set_attempt(a.attempt());
  co.rank.set_rank(a.rank());
  TrainerClient client(co);
  ProgressReporter reporter(&client);
  auto report = [&](const std::string& phase, int64_t step) {
    forge::v1::ProgressReport r;
    r.set_phase(phase);
    r.set_step(step);
    r.set_total_steps(spec.train().steps());
    r.set_world_size(a.world_size());
    reporter.Report(std::move(r));
  };
  report("starting", 0);
  std::printf("rank %d of %d, job %s attempt %d, device %s\n", a.rank(), a.world_size(),
              a.job_id().c_str(), a.attempt(), a.device().c_str());

  absl::StatusOr<Built> built = BuildOptions(a, &client, ro.rank_dir, ro.threads);
  if (!built.ok()) {
    const bool invalid = absl::IsInvalidArgument(built.status()) ||
                         absl::IsFailedPrecondition(built.status()) ||
                         absl::IsNotFound(built.status());
    return Fail(invalid ? kExitInvalid : kExitFailed, built.status());
  }
  TrainerOptions& o = built->options;

  // Which device: "cpu:N" (the CPU engine) or "cuda:N" (CUDA device N of this host).
  int cuda_device = -1;
  if (absl::StartsWith(a.device(), "cuda:")) {
    if (!absl::SimpleAtoi(a.device().substr(5), &cuda_device) || cuda_device < 0) {
      return Fail(kExitInvalid, absl::InvalidArgumentError(absl::StrCat(
                                    "assignment device ", a.device(), " is not cuda:N")));
    }
  }
  const auto timeout = std::chrono::milliseconds(
      a.collective_timeout_ms() > 0 ? a.collective_timeout_ms() : 60000);
  auto store = std::make_shared<CoordinatorStore>(&client, timeout);
  // Gloo carries the small per-step exchange (losses, sampler cursors, replica checksums) on
  // every backend, and the gradients on the CPU backend.
  std::unique_ptr<Communicator> comm;
  if (a.world_size() > 1) {
    CommunicatorOptions cm;
    cm.rank = a.rank();
    cm.world_size = a.world_size();
    cm.store = store;
    cm.prefix = "gloo";  // the coordinator already scopes keys to this job attempt
    cm.interface_address = ro.interface_address;
    cm.timeout = absl::FromChrono(timeout);
    absl::StatusOr<std::unique_ptr<Communicator>> c = Communicator::Create(cm);
    if (!c.ok()) return Fail(kExitFailed, c.status());
    comm = *std::move(c);
    o.communicator = comm.get();
  }
#ifdef FORGE_HAVE_CUDA
  // Declared before the trainer, so it outlives the backend that uses it.
  std::unique_ptr<cuda::NcclCommunicator> nccl;
  if (cuda_device >= 0) {
    if (a.world_size() > 1) {
      cuda::NcclOptions no;
      no.rank = a.rank();
      no.world_size = a.world_size();
      no.device = cuda_device;
      no.store = store.get();  // rank 0 publishes the unique id; the others read it
      no.timeout = absl::FromChrono(timeout);
      absl::StatusOr<std::unique_ptr<cuda::NcclCommunicator>> n = cuda::NcclCommunicator::Create(no);
      if (!n.ok()) return Fail(kExitFailed, n.status());
      nccl = *std::move(n);
    }
    cuda::CudaBackendOptions bo;
    bo.device = cuda_device;
    bo.nccl = nccl.get();
    o.make_backend = cuda::CudaBackendFactory(bo);
  }
#else
  if (cuda_device >= 0) {
    return Fail(kExitInvalid,
                absl::FailedPreconditionError(absl::StrCat(
                    "assignment device ", a.device(), ": this forge-trainer was built without "
                    "CUDA (no nvcc at build time); rebuild where the CUDA toolkit is installed")));
  }
#endif
  // A resumed attempt fetches its checkpoint first: with train.micro_batch left out, it takes
  // the micro-batch the checkpoint was written with (a trainer of another version, or before
  // a change of the default, may have picked another), so the run continues bit for bit.
  std::string resume_dir;
  if (!a.resume_checkpoint().empty()) {
    resume_dir = absl::StrCat(ro.rank_dir, "/resume/", a.resume_checkpoint());
    if (absl::Status s = client.FetchCheckpoint(a.resume_checkpoint(), resume_dir); !s.ok()) {
      return Fail(kExitFailed, s);
    }
    const int64_t share = int64_t{o.micro_batch} * o.grad_accum;
    if (absl::StatusOr<int> m = engine::CheckpointMicroBatch(resume_dir);
        !spec.train().has_micro_batch() && m.ok() && *m != o.micro_batch && share % *m == 0) {
      std::printf(
          "micro-batches of %d sequences, as checkpoint %s was written with (this "
          "trainer's default is %d)\n",
          *m, a.resume_checkpoint().c_str(), o.micro_batch);
      o.micro_batch = *m;
      o.grad_accum = static_cast<int>(share / *m);
    }
  }
  absl::StatusOr<std::unique_ptr<Trainer>> created = Trainer::Create(o);
  if (absl::IsResourceExhausted(created.status())) {
    const std::string fix =
        o.micro_batch > 1
            ? absl::StrCat("set a smaller train.micro_batch, a divisor of ",
                           int64_t{o.micro_batch} * o.grad_accum)
            : std::string("use a shorter train.seq_len, a smaller model or a larger device");
    created =
        absl::Status(created.status().code(),
                     absl::StrCat(created.status().message(), " (micro-batches of ", o.micro_batch,
                                  " sequences of ", o.seq_len, " tokens: ", fix, ")"));
  }
  if (!created.ok()) {
    // A spec the engine cannot run is final; a device that fails (no CUDA device answers, out
    // of memory) may work on another worker.
    return Fail(absl::IsInvalidArgument(created.status()) ? kExitInvalid : kExitFailed,
                created.status());
  }
  Trainer& trainer = **created;
  std::printf("backend: %s\n", trainer.backend().Describe().c_str());

  // Tokens per source over the whole run (all ranks), carried through checkpoints.
  std::map<std::string, int64_t> tokens_per_source;
  if (!resume_dir.empty()) {
    nlohmann::json saved;  // what lineage() stored
    if (absl::Status s = trainer.LoadCheckpoint(resume_dir, &saved); !s.ok()) {
      return Fail(kExitInvalid, s);
    }
    if (saved.contains("tokens_per_source") && saved["tokens_per_source"].is_object()) {
      for (auto& [k, v] : saved["tokens_per_source"].items()) {
        if (v.is_number_integer()) tokens_per_source[k] = v.get<int64_t>();
      }
    }
    std::printf("resumed from checkpoint %s at step %lld\n", a.resume_checkpoint().c_str(),
                static_cast<long long>(trainer.step()));
  } else if (!a.base_checkpoint().empty()) {
    const std::string dir = absl::StrCat(ro.rank_dir, "/base/", a.base_checkpoint());
    if (absl::Status s = client.FetchCheckpoint(a.base_checkpoint(), dir); !s.ok()) {
      return Fail(kExitFailed, s);
    }
    if (absl::Status s = trainer.InitFromWeights(dir); !s.ok()) return Fail(kExitInvalid, s);
    std::printf("starting from base checkpoint %s (%s); optimizer and learning-rate schedule "
                "start fresh\n",
                a.base_checkpoint().c_str(), StageName(spec.stage()).c_str());
  }
  std::printf("model %d layers x %d width, %zu parameters; %lld steps of %d x %d x %d tokens "
              "per rank\n",
              o.shape.layers, o.shape.width, trainer.backend().num_params(),
              static_cast<long long>(o.steps), o.grad_accum, o.micro_batch, o.seq_len);
  std::fflush(stdout);

  const int64_t resumed_step = trainer.step();
  const bool leader = a.rank() == 0;
  std::unique_ptr<CheckpointStreamer> streamer;
  if (leader) {
    streamer = std::make_unique<CheckpointStreamer>(&client, ro.rank_dir + "/staging");
  }
  auto lineage = [&]() {
    nlohmann::json extra;
    extra["job"] = a.job_id();
    extra["attempt"] = a.attempt();
    // Lineage: the stage this job trains at, the checkpoint its weights came from (the
    // base), and the one this attempt resumed from.
    extra["stage"] = StageName(spec.stage());
    extra["base_checkpoint"] = a.base_checkpoint();
    extra["parent_checkpoint"] =
        a.resume_checkpoint().empty() ? a.base_checkpoint() : a.resume_checkpoint();
    extra["resumed_from"] = a.resume_checkpoint();
    extra["tokens_per_source"] = tokens_per_source;
    nlohmann::json mix = nlohmann::json::array();
    for (const auto& m : spec.data().mixture()) {
      mix.push_back({{"dataset", m.dataset()}, {"weight", m.weight()}});
    }
    extra["mixture"] = mix;
    return extra;
  };
  // Every rank evaluates its share of the held-out windows (a collective: all ranks call this
  // at the same points); every rank gets the totals, and the leader reports them.
  auto evaluate = [&](int64_t step) {
    std::vector<forge::v1::EvalResult> out;
    for (const std::string& suite : spec.eval().suites()) {
      absl::StatusOr<engine::EvalResult> r =
          engine::EvaluateHeldOut(trainer.backend(), *built->datasets[suite], o.seq_len,
                                  o.micro_batch, ro.eval_tokens, comm.get());
      if (!r.ok()) {
        std::printf("eval %s: %s\n", suite.c_str(), std::string(r.status().message()).c_str());
        continue;
      }
      if (!leader) continue;
      forge::v1::EvalResult e;
      e.set_suite(suite);
      e.set_step(step);
      e.set_loss(r->loss);
      e.set_bits_per_byte(r->bits_per_byte);
      e.set_tokens(r->tokens);
      std::printf("eval %-16s step %lld | held-out loss %.4f | %.4f bits/byte | %lld tokens\n",
                  suite.c_str(), static_cast<long long>(step), r->loss, r->bits_per_byte,
                  static_cast<long long>(r->tokens));
      out.push_back(std::move(e));
    }
    std::fflush(stdout);
    return out;
  };

  // The guard compares the final checkpoint with the starting weights: measure them first
  // (a resumed attempt does not: the first attempt reported them).
  if (spec.has_guard() && a.resume_checkpoint().empty()) {
    report("evaluating", 0);
    std::printf("evaluating the starting weights for the guard\n");
    std::vector<forge::v1::EvalResult> base = evaluate(0);
    forge::v1::ProgressReport r;
    r.set_phase("evaluating");
    r.set_step(0);
    r.set_total_steps(o.steps);
    r.set_world_size(a.world_size());
    for (auto& e : base) *r.add_base_evals() = std::move(e);
    reporter.Report(std::move(r));
    reporter.Flush();  // sent before a training report could replace it
  }

  const int64_t every = spec.checkpoint().every_steps();
  const int64_t eval_every = spec.eval().every_steps();
  double recent_tps = 0;
  while (trainer.step() < o.steps) {
    if (ro.parent_pid > 0 && getppid() != ro.parent_pid) {
      return Fail(kExitFailed, absl::AbortedError("the worker agent is gone"));
    }
    if (std::optional<std::string> stop = reporter.stop_reason(); stop.has_value()) {
      return Fail(kExitStopped, absl::AbortedError(absl::StrCat("stopped: ", *stop)));
    }
    absl::StatusOr<engine::StepStats> s = trainer.Step();
    // A diverged run (DATA_LOSS: a loss or gradient norm that is not finite) diverges again
    // from the same checkpoint: the job fails instead of restarting.
    if (!s.ok())
      return Fail(absl::IsDataLoss(s.status()) ? kExitDiverged : kExitFailed, s.status());
    const int64_t step = trainer.step();
    for (size_t i = 0; i < o.sources.size(); ++i) {
      tokens_per_source[o.sources[i].name] +=
          s->sequences_per_source_all_ranks[i] * static_cast<int64_t>(o.seq_len);
    }
    const double tps = s->seconds > 0 ? s->tokens / s->seconds : 0;
    recent_tps = recent_tps == 0 ? tps : 0.8 * recent_tps + 0.2 * tps;
    const double mfu = trainer.Mfu(recent_tps);
    std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s%s\n",
                static_cast<long long>(step), static_cast<long long>(o.steps), s->loss, s->lr,
                s->grad_norm, s->seconds * 1e3, tps * a.world_size(),
                mfu > 0 ? absl::StrFormat(" | MFU %.1f%%", 100 * mfu).c_str() : "");
    std::fflush(stdout);

    const bool last = step == o.steps;
    std::vector<forge::v1::EvalResult> evals;
    if (!last && eval_every > 0 && step % eval_every == 0) evals = evaluate(step);
    forge::v1::ProgressReport r;
    r.set_phase("training");
    r.set_step(step);
    r.set_total_steps(o.steps);
    r.set_loss(s->loss);
    r.set_lr(s->lr);
    r.set_grad_norm(s->grad_norm);
    r.set_tokens_per_second(recent_tps);
    r.set_mfu(mfu);
    r.set_world_size(a.world_size());
    for (const auto& [k, v] : tokens_per_source) (*r.mutable_tokens_per_source())[k] = v;
    for (auto& e : evals) *r.add_evals() = std::move(e);
    reporter.Report(std::move(r));

    if (last || (every > 0 && step % every == 0)) {
      // Every rank takes part in the replica check (a collective), then rank 0 snapshots.
      if (comm != nullptr) {
        if (absl::Status c = trainer.CheckReplicasAgree(); !c.ok()) {
          return Fail(absl::IsDataLoss(c) ? kExitDiverged : kExitFailed, c);
        }
      }
      if (leader && !last && streamer->busy()) {
        std::printf("checkpoint step %lld skipped: the previous one is still uploading\n",
                    static_cast<long long>(step));
      } else if (leader) {
        const absl::Time t0 = absl::Now();
        const absl::StatusOr<absl::Duration> copy = streamer->Submit(trainer, lineage());
        if (!copy.ok()) return Fail(kExitFailed, copy.status());
        std::printf("checkpoint step %lld: training paused %.1f ms (snapshot copy %.1f ms); "
                    "written and uploaded in the background\n",
                    static_cast<long long>(step), absl::ToDoubleMilliseconds(absl::Now() - t0),
                    absl::ToDoubleMilliseconds(*copy));
      }
    }
  }
  // The final evaluation runs on every rank while the leader's last checkpoint uploads.
  report("evaluating", trainer.step());
  std::vector<forge::v1::EvalResult> evals = evaluate(trainer.step());
  if (!leader) {
    reporter.Flush();
    return Failure{kExitOk, absl::OkStatus()};
  }
  report("checkpointing", trainer.step());
  std::string final_id;
  if (trainer.step() == resumed_step && !a.resume_checkpoint().empty()) {
    // The previous attempt committed the last step's checkpoint but did not finish the job.
    final_id = a.resume_checkpoint();
  } else {
    if (absl::Status s = streamer->Wait(); !s.ok()) {
      return Fail(absl::IsFailedPrecondition(s) ? kExitStopped : kExitFailed, s);
    }
    const forge::v1::CheckpointInfo final_checkpoint = streamer->last();
    if (final_checkpoint.step() != trainer.step()) {
      return Fail(kExitFailed, absl::InternalError("the final checkpoint was not committed"));
    }
    final_id = final_checkpoint.id();
  }
  forge::v1::FinishJobRequest finish;
  finish.set_final_checkpoint(final_id);
  for (auto& e : evals) *finish.add_evals() = std::move(e);
  reporter.Flush();
  if (absl::Status s = client.FinishJob(std::move(finish)); !s.ok()) return Fail(kExitFailed, s);
  std::printf("finished: %lld steps, final checkpoint %s\n",
              static_cast<long long>(trainer.step()), final_id.c_str());
  return Failure{kExitOk, absl::OkStatus()};
}

}  // namespace

int RunRank(const RankOptions& options) {
  Failure f = Run(options);
  std::fflush(stdout);
  if (f.code != kExitOk) {
    std::fprintf(stderr, "forge-trainer: %s\n", f.status.ToString().c_str());
    std::fflush(stderr);
  }
  return f.code;
}

}  // namespace forge::trainer
