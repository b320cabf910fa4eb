// The training loop of one rank, readable top to bottom:
//
//   for each optimizer step:
//     the mixture sampler gives this rank's sequences for the step
//     forward + backward over grad_accum micro-batches (gradients accumulate)
//     data parallel (world_size > 1): all-reduce the gradient sums across ranks in flat buckets
//     of grad_bucket_bytes, plus one small all-reduce of the loss and the sampler cursors
//     scale by 1 / (grad_accum * world_size), global-norm clip, learning rate, AdamW
//
// Every rank then holds the same gradients bit for bit (each element is summed once, in a
// fixed order, and the sum is shared), so the ranks' weights stay identical; CheckReplicasAgree
// verifies it. Where the model runs is a ModelBackend (model_backend.h): the CPU engine, whose
// Gloo all-reduce runs after the whole backward pass, or a CUDA device (worker/cuda), whose
// NCCL all-reduce overlaps the last micro-batch's backward layer by layer. The small exchange
// of losses and sampler cursors always goes through the Gloo communicator.
//
// Data split: the mixture sampler gives step t's slot g = rank * sequences_per_rank + position
// the same source as slot g of a 1-rank run with the same global batch, but each rank reads
// its own documents of that source (rank r: documents r, r + W, ...), so 2 ranks x half the
// micro-batch see the same source mix as 1 rank x the full micro-batch, not the same tokens.
//
// A checkpoint holds everything the next step depends on (parameters, AdamW moments and step,
// every rank's sampler cursors), so a run resumed from one continues bit for bit at the same
// world size. One directory serves all ranks: any rank may write it (every rank knows every
// rank's cursors after each step), and every rank loads the same directory.
//
// Thread safety: owned by one thread. Snapshot() results may be written on other threads.
#ifndef FORGE_WORKER_ENGINE_TRAINER_H_
#define FORGE_WORKER_ENGINE_TRAINER_H_

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/model_presets.h"
#include <functional>

#include "worker/engine/adamw.h"
#include "worker/engine/lr_schedule.h"
#include "worker/engine/mixture_sampler.h"
#include "worker/engine/model_backend.h"
#include "worker/engine/snapshot.h"

namespace forge {
class Communicator;
}  // namespace forge

namespace forge::engine {

// Builds the backend a trainer runs on; null means CreateCpuBackend.
using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<ModelBackend>>(const BackendConfig&)>;

struct TrainerOptions {
  ModelShape shape;
  std::vector<MixtureSource> sources;  // the mixture: names, weights, documents
  std::vector<MixtureSchedulePoint> schedule;
  int64_t steps = 1000;  // optimizer steps in the run (the schedules' horizon)
  int seq_len = 128;     // tokens per sequence
  int micro_batch = 8;   // sequences per forward/backward
  int grad_accum = 1;    // micro-batches per optimizer step
  LrSchedule lr;
  AdamWOptions adamw;
  double grad_clip = 1.0;  // max global norm; <= 0 turns clipping off
  uint64_t seed = 1;       // model init and data order
  int threads = 1;
  int world_size = 1;
  int rank = 0;
  int32_t separator_token = 0;  // between documents in the token stream
  // Not owned; must outlive the trainer. Required when world_size > 1, and its rank() and
  // world_size() must equal the fields above. Every collective of the trainer goes through
  // it, so nothing else may use it concurrently. Unused (may be null) when world_size == 1.
  Communicator* communicator = nullptr;
  // Gradient all-reduce bucket size, bytes (a few MiB: large enough to amortise per-call
  // latency, small enough to keep the scratch copy in cache). CPU backend.
  size_t grad_bucket_bytes = size_t{4} << 20;
  // Where the model runs (null: the CPU engine with `threads` threads).
  BackendFactory make_backend;
};

struct StepStats {
  int64_t step = 0;  // the step just taken (0-based)
  double loss = 0;   // mean over the step's tokens of all ranks (same value on every rank)
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double seconds = 0;
  int64_t tokens = 0;                         // this rank, this step
  std::vector<int64_t> sequences_per_source;  // this rank, this step, in source order
  int64_t tokens_all_ranks = 0;               // all ranks together, this step
  std::vector<int64_t> sequences_per_source_all_ranks;  // all ranks, this step, source order
};

class Trainer {
 public:
  // Validates the options, builds the model (initialised from `seed`), the optimizer and
  // the sampler. With world_size > 1 it is collective: every rank's Create exchanges the
  // initial sampler cursors through the communicator.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerOptions options);

  // One optimizer step. FAILED_PRECONDITION once `steps` steps were taken. With world_size > 1
  // it is collective (every rank calls it for the same step); a communicator error is returned
  // as is (UNAVAILABLE / DEADLINE_EXCEEDED) and leaves this trainer unusable: restart the
  // ranks from the last checkpoint. DATA_LOSS when the run diverged: a loss that is not finite
  // (before any update: the parameters are unchanged) or a gradient norm that is not finite (after
  // the update, which leaves the parameters unusable). Retrying gives the same result.
  absl::StatusOr<StepStats> Step();

  // Copies the state after the last step (parameters, AdamW moments, every rank's sampler
  // cursors) into host memory. Not collective; no I/O: the only part of checkpointing the step
  // loop waits for. Write the result with WriteCheckpointSnapshot on any thread.
  absl::StatusOr<CheckpointSnapshot> Snapshot() const;
  // As Snapshot, reusing `out`'s buffers when they are already the right size (no allocation,
  // no page faults: a training loop that keeps one or two snapshots alive pays only the copy).
  // Errors only from a device backend's copy.
  absl::Status SnapshotInto(CheckpointSnapshot* out) const;

  // Snapshot() + WriteCheckpointSnapshot(): writes a checkpoint of the state after the last
  // step into `dir` (see checkpoint.h; includes config.json); `extra` (lineage, mixture, ...)
  // is stored in trainer_state.json beside our own fields. With world_size > 1 one rank
  // (rank 0 by convention) writes; the directory holds every rank's cursors.
  absl::Status SaveCheckpoint(const std::string& dir, const nlohmann::json& extra = {}) const;
  // Restores a checkpoint written by a trainer with the same shape, seed, mixture and world
  // size (by any of its ranks); refuses a mismatch naming what differs. Not collective.
  // When `extra` is given it receives the `extra` object SaveCheckpoint stored (lineage,
  // counters), without our own fields.
  absl::Status LoadCheckpoint(const std::string& dir, nlohmann::json* extra = nullptr);
  // Continued training: takes the weights of any checkpoint of a model with this shape
  // (another job's, another seed or mixture), keeping this run's fresh optimizer (zero
  // moments, step 0) and sampler, so the learning-rate schedule warms up and decays again.
  // FAILED_PRECONDITION naming the first tensor that differs. Not collective (every rank
  // loads the same directory). Before the first Step only.
  absl::Status InitFromWeights(const std::string& dir);

  // 64-bit checksum of the parameter bytes (ParamBytesChecksum).
  absl::StatusOr<uint64_t> ParamChecksum() const;
  // Collective: compares every rank's ParamChecksum with rank 0's. OK when all agree (and
  // always with world_size == 1); DATA_LOSS naming the first disagreeing rank, the step and
  // both checksums otherwise (the same status on every rank); a communicator error as is.
  absl::Status CheckReplicasAgree();

  int64_t step() const { return step_; }
  ModelBackend& backend() { return *backend_; }
  const ModelBackend& backend() const { return *backend_; }
  const MixtureSampler& sampler() const { return *sampler_; }
  const TrainerOptions& options() const { return options_; }
  // Model FLOPs utilisation of the job at `tokens_per_second` per rank (every rank takes the
  // same tokens per step): world_size x that x TrainingFlopsPerToken over the sum of the
  // ranks' PeakFlops (exchanged at Create), so a job on mixed devices is measured against all
  // of them; 0 when any rank's peak is unknown (the CPU engine's).
  double Mfu(double tokens_per_second) const;

 private:
  explicit Trainer(TrainerOptions options);
  // All-reduces the loss and every rank's sampler cursors (after NextBatch of a step, or at
  // Create); sets all_samplers_ and returns the loss averaged over ranks.
  absl::StatusOr<double> ExchangeLossAndCursors(double local_loss);
  nlohmann::json TrainerStateJson() const;

  TrainerOptions options_;
  std::unique_ptr<ModelBackend> backend_;
  std::unique_ptr<MixtureSampler> sampler_;
  std::vector<int32_t> inputs_, targets_;  // this step's sequences
  int64_t step_ = 0;                       // steps taken
  std::vector<SamplerState> all_samplers_;  // every rank's sampler state after the last step
  std::vector<float> exchange_;             // ExchangeLossAndCursors' buffer
  double peak_flops_all_ranks_ = 0;         // Mfu's denominator; 0 when any peak is unknown
};

// The micro-batch (sequences per forward/backward) a Forge trainer wrote checkpoint `dir`
// with, read from its trainer_state.json alone (no tensors): what a resumed run must use to
// continue bit for bit. NOT_FOUND when the file records none; other errors as read.
absl::StatusOr<int> CheckpointMicroBatch(const std::string& dir);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_TRAINER_H_
