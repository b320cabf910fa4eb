#include "common/clock.h"

#include "absl/time/clock.h"

namespace forge {
namespace {
class WallClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};
}  // namespace

Clock* RealClock() {
  static Clock* clock = new WallClock();
  return clock;
}

}  // namespace forge
