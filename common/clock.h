// Time source, injected so tests can control it (see fake_clock.h).
#ifndef FORGE_COMMON_CLOCK_H_
#define FORGE_COMMON_CLOCK_H_

#include "absl/time/time.h"

namespace forge {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The real wall clock. A process-wide singleton; never deleted.
Clock* RealClock();

}  // namespace forge

#endif  // FORGE_COMMON_CLOCK_H_
