// The training loop of one rank, readable top to bottom:
//
//   for each optimizer step:
//     the mixture sampler gives this rank's sequences for the step
//     forward + backward over grad_accum micro-batches (gradients accumulate, then / grad_accum)
//     global-norm clip, learning rate from the schedule, AdamW
//
// A checkpoint holds everything the next step depends on (parameters, AdamW moments and step,
// sampler cursors), so a run resumed from one continues bit for bit. Single rank for now; the
// data-parallel all-reduce slots in between backward and the optimizer.
//
// Thread safety: owned by one thread.
#ifndef FORGE_WORKER_ENGINE_TRAINER_H_
#define FORGE_WORKER_ENGINE_TRAINER_H_

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/model_presets.h"
#include "worker/engine/adamw.h"
#include "worker/engine/gpt.h"
#include "worker/engine/lr_schedule.h"
#include "worker/engine/mixture_sampler.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {

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
};

struct StepStats {
  int64_t step = 0;  // the step just taken (0-based)
  double loss = 0;   // mean over the step's tokens
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double seconds = 0;
  int64_t tokens = 0;                         // this rank, this step
  std::vector<int64_t> sequences_per_source;  // this step, in source order
};

class Trainer {
 public:
  // Validates the options, builds the model (initialised from `seed`), the optimizer and
  // the sampler.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerOptions options);

  // One optimizer step. FAILED_PRECONDITION once `steps` steps were taken.
  absl::StatusOr<StepStats> Step();

  // Writes a checkpoint of the state after the last step into `dir` (see checkpoint.h);
  // `extra` (lineage, mixture, ...) is stored in trainer_state.json beside our own fields.
  absl::Status SaveCheckpoint(const std::string& dir, const nlohmann::json& extra = {}) const;
  // Restores a checkpoint written by a trainer with the same shape, seed, mixture and world
  // size; refuses a mismatch naming what differs.
  absl::Status LoadCheckpoint(const std::string& dir);

  int64_t step() const { return step_; }
  Gpt<float>& model() { return *model_; }
  const Gpt<float>& model() const { return *model_; }
  const AdamW& optimizer() const { return *adamw_; }
  const MixtureSampler& sampler() const { return *sampler_; }
  const TrainerOptions& options() const { return options_; }

 private:
  explicit Trainer(TrainerOptions options);

  TrainerOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Gpt<float>> model_;
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<MixtureSampler> sampler_;
  std::vector<int32_t> inputs_, targets_;  // this step's sequences
  int64_t step_ = 0;                       // steps taken
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_TRAINER_H_
