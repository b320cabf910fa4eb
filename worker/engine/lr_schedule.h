// The learning rate at each optimizer step (forge.v1.TrainSpec: lr, warmup_steps, lr_decay,
// min_lr, steps): linear warmup from lr / warmup_steps to lr over the first warmup_steps
// steps, then decay from lr to min_lr by step `steps`: cosine, linear, or none (constant lr).
#ifndef FORGE_WORKER_ENGINE_LR_SCHEDULE_H_
#define FORGE_WORKER_ENGINE_LR_SCHEDULE_H_

#include <cstdint>

#include "forge/v1/job.pb.h"

namespace forge::engine {

enum class LrDecay { kCosine, kLinear, kConstant };

// LR_DECAY_UNSPECIFIED means cosine (job.proto).
LrDecay LrDecayFromProto(forge::v1::LrDecay decay);

struct LrSchedule {
  double lr = 3e-4;          // peak
  int64_t warmup_steps = 0;  // 0..steps
  LrDecay decay = LrDecay::kCosine;
  double min_lr = 3e-5;  // floor of the decay; ignored by kConstant
  int64_t steps = 1000;  // total optimizer steps
};

// The rate for 0-based step `step`:
//   step < warmup_steps:  lr · (step + 1) / warmup_steps
//   then, with r = (step - warmup_steps) / (steps - warmup_steps) clamped to [0, 1]:
//     cosine    min_lr + (lr - min_lr) · (1 + cos(pi r)) / 2
//     linear    lr - (lr - min_lr) · r
//     constant  lr
// So step `warmup_steps` runs at lr and step `steps` (one past the last) reaches min_lr.
double LearningRate(int64_t step, const LrSchedule& schedule);

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_LR_SCHEDULE_H_
