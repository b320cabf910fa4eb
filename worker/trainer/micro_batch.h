// How many sequences a rank puts through each forward/backward (train.micro_batch) when the
// job spec leaves that to the trainer: the rest of the rank's share of a step is gradient
// accumulation, which changes memory and speed, not the maths. Chosen from the spec alone
// (never from the device's free memory), so a resumed attempt picks the same value on any
// worker and its checkpoint's run identity matches.
#ifndef FORGE_WORKER_TRAINER_MICRO_BATCH_H_
#define FORGE_WORKER_TRAINER_MICRO_BATCH_H_

#include <cstddef>
#include <cstdint>
#include <functional>

namespace forge::trainer {

// The CPU engine: larger micro-batches gain nothing there once the matmuls fill the threads.
inline constexpr int kCpuMicroBatchCap = 8;
// CUDA: up to 64 sequences whose activations (CudaActivationBytes) fit in 8 GiB, so that a
// default job fits a 24 GiB card beside its parameters and moments.
inline constexpr int kCudaMicroBatchCap = 64;
inline constexpr size_t kCudaActivationBudget = size_t{8} << 30;

// The largest divisor m of `per_rank` (sequences per rank per step, >= 1) with m <= `cap`
// and, when `bytes` is set, bytes(m) <= `budget`; 1 when no larger one qualifies.
int ChooseMicroBatch(int64_t per_rank, int cap, const std::function<size_t(int)>& bytes = {},
                     size_t budget = 0);

}  // namespace forge::trainer

#endif  // FORGE_WORKER_TRAINER_MICRO_BATCH_H_
