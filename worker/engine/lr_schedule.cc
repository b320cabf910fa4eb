#include "worker/engine/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace forge::engine {

LrDecay LrDecayFromProto(forge::v1::LrDecay decay) {
  switch (decay) {
    case forge::v1::LR_DECAY_LINEAR:
      return LrDecay::kLinear;
    case forge::v1::LR_DECAY_CONSTANT:
      return LrDecay::kConstant;
    default:
      return LrDecay::kCosine;
  }
}

double LearningRate(int64_t step, const LrSchedule& s) {
  if (step < s.warmup_steps) {
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  if (s.decay == LrDecay::kConstant) return s.lr;
  const int64_t span = s.steps - s.warmup_steps;
  const double r =
      span <= 0 ? 1.0 : std::clamp(static_cast<double>(step - s.warmup_steps) / span, 0.0, 1.0);
  if (s.decay == LrDecay::kLinear) return s.lr - (s.lr - s.min_lr) * r;
  return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * r));
}

}  // namespace forge::engine
