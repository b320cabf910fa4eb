// Where a training step's GPU time goes, op by op: the CUDA backend records a CUDA event on
// its compute stream after each op it queues, so an op's time is the interval from the event
// before it (the ops run back to back on one stream; a gap where the GPU waited for the host
// or for another stream lands in the next op's interval). Times, nominal FLOPs (of the
// products) and nominal bytes (the least device-memory traffic of the memory-bound kernels:
// each input read once, each output written once) are summed per op name over every pass
// since Clear(), so the table reads against the GPU's peak FLOP/s and memory bandwidth. Costs one
// event record per op while on; the backend makes no calls at all when it has no profile.
//
// forge-bench-gpu-train --profile prints Table().
//
// Thread safety: used from the backend's thread only.
#ifndef FORGE_WORKER_CUDA_STEP_PROFILE_H_
#define FORGE_WORKER_CUDA_STEP_PROFILE_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forge::cuda {

class StepProfile {
 public:
  struct Op {
    std::string name;
    int64_t calls = 0;
    double ms = 0;     // GPU time, summed over calls
    double flops = 0;  // nominal (0: not counted), summed over calls
    double bytes = 0;  // nominal (0: not counted), summed over calls
  };

  StepProfile() = default;
  StepProfile(const StepProfile&) = delete;
  StepProfile& operator=(const StepProfile&) = delete;
  ~StepProfile();

  // The backend's side. Begin before a pass's first op (forgetting an unfinished pass), Mark
  // after each op with its name (a string literal), nominal FLOPs and bytes, End after the last:
  // End waits for the pass's events and adds its intervals.
  absl::Status Begin(cudaStream_t stream);
  absl::Status Mark(const char* op, cudaStream_t stream, double flops = 0, double bytes = 0);
  absl::Status End();

  // In the order each op was first seen.
  const std::vector<Op>& ops() const { return ops_; }
  double total_ms() const;
  void Clear();

  // A Markdown table: op, calls per step, ms per step, share of the total, and the achieved
  // TFLOP/s and GB/s where FLOPs and bytes are counted; `steps` divides the sums.
  std::string Table(int steps) const;

 private:
  absl::StatusOr<cudaEvent_t> Event(size_t i);

  std::vector<cudaEvent_t> events_;  // a pool; the pass recorded events_[0, marks_.size() + 1)
  struct Pending {
    const char* op;
    double flops, bytes;
  };
  std::vector<Pending> marks_;  // marks_[i] ends at events_[i + 1]
  bool open_ = false;
  std::vector<Op> ops_;
};

// Nominal bytes of the memory-bound kernels, each input read once and each output written
// once, as the backend marks them and forge-bench-gpu-kernels reports them. N rows (tokens),
// C the width, tb bytes per activation; statistics (mean, rstd) and parameters are fp32.
namespace nominal_bytes {
// wte rows and wpe read (fp32), the activations written.
inline double Embedding(double N, double T, double C, double tb) {
  return N * C * (tb + 4) + 4 * T * C;
}
// dres read; the touched rows of dwte and dwpe read and written (an upper bound: repeated
// tokens count once per position).
inline double EmbeddingBackward(double N, double T, double C, double tb) {
  return N * C * (tb + 8) + 8 * T * C;
}
// x read, y written, mean and rstd written.
inline double LayerNorm(double N, double C, double tb) { return 2 * N * C * tb + 8 * N; }
// dy and x read, dinp read and written, mean and rstd read.
inline double LayerNormBackward(double N, double C, double tb) { return 4 * N * C * tb + 8 * N; }
// dout read; the bias gradient read and written.
inline double BiasGradient(double N, double cols, double tb) { return (N * tb + 8) * cols; }
// The logits read, and with the backward their gradient written.
inline double CrossEntropy(double N, double V, double tb, bool backward) {
  return (backward ? 2 : 1) * N * V * tb;
}
inline double GradientNorm(double params) { return 4 * params; }
// Weight, gradient and both moments read and written (the gradient as scaled and clipped),
// and the low-precision copy written (lowp_tb bytes each; 0 without one).
inline double AdamW(double params, double lowp_tb) { return (32 + lowp_tb) * params; }
}  // namespace nominal_bytes

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_STEP_PROFILE_H_
