#include "worker/backoff.h"

#include <algorithm>

namespace forge::worker {

Backoff::Backoff(BackoffOptions options, uint64_t seed) : options_(options), rng_(seed) {}

absl::Duration Backoff::Ceiling() const {
  absl::Duration ceiling = options_.initial;
  for (int i = 0; i < attempt_ && ceiling < options_.max; ++i) ceiling *= 2;
  return std::clamp(ceiling, absl::ZeroDuration(), options_.max);
}

absl::Duration Backoff::Next() {
  const int64_t ceiling_us = absl::ToInt64Microseconds(Ceiling());
  if (attempt_ < 64) ++attempt_;
  if (ceiling_us <= 0) return absl::ZeroDuration();
  std::uniform_int_distribution<int64_t> dist(0, ceiling_us);
  return absl::Microseconds(dist(rng_));
}

}  // namespace forge::worker
