// Reconnection delays: exponential backoff with full jitter.
//
// The n-th delay after a reset (n = 0, 1, ...) is uniform in [0, min(max, initial * 2^n)], so
// many workers that lost the same coordinator do not reconnect in lockstep.
//
// Thread-compatible: owned by one thread (the agent's Run thread).
#ifndef FORGE_WORKER_BACKOFF_H_
#define FORGE_WORKER_BACKOFF_H_

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace forge::worker {

struct BackoffOptions {
  absl::Duration initial = absl::Milliseconds(200);  // ceiling of the first delay
  absl::Duration max = absl::Seconds(5);             // ceiling of every delay
};

class Backoff {
 public:
  // `seed` makes the jitter reproducible in tests.
  Backoff(BackoffOptions options, uint64_t seed);

  // The next delay; each call doubles the ceiling up to `max`.
  absl::Duration Next();
  // Back to the first delay (after a successful registration).
  void Reset() { attempt_ = 0; }
  // The ceiling the next call to Next() draws under.
  absl::Duration Ceiling() const;

 private:
  const BackoffOptions options_;
  std::mt19937_64 rng_;
  int attempt_ = 0;
};

}  // namespace forge::worker

#endif  // FORGE_WORKER_BACKOFF_H_
