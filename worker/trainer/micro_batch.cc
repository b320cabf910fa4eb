#include "worker/trainer/micro_batch.h"

#include <algorithm>

namespace forge::trainer {

int ChooseMicroBatch(int64_t per_rank, int cap, const std::function<size_t(int)>& bytes,
                     size_t budget) {
  for (int m = static_cast<int>(std::min<int64_t>(cap, per_rank)); m > 1; --m) {
    if (per_rank % m != 0) continue;
    if (!bytes || bytes(m) <= budget) return m;
  }
  return 1;
}

}  // namespace forge::trainer
