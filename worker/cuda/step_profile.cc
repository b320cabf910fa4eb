#include "worker/cuda/step_profile.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/cuda/cuda_util.h"

namespace forge::cuda {

StepProfile::~StepProfile() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

absl::StatusOr<cudaEvent_t> StepProfile::Event(size_t i) {
  while (events_.size() <= i) {
    cudaEvent_t e = nullptr;
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDefault));  // timed
    events_.push_back(e);
  }
  return events_[i];
}

absl::Status StepProfile::Begin(cudaStream_t stream) {
  marks_.clear();
  open_ = false;
  absl::StatusOr<cudaEvent_t> e = Event(0);
  if (!e.ok()) return e.status();
  FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(*e, stream));
  open_ = true;
  return absl::OkStatus();
}

absl::Status StepProfile::Mark(const char* op, cudaStream_t stream, double flops, double bytes) {
  if (!open_) return absl::FailedPreconditionError("step profile: Mark before Begin");
  absl::StatusOr<cudaEvent_t> e = Event(marks_.size() + 1);
  if (!e.ok()) return e.status();
  FORGE_CUDA_RETURN_IF_ERROR(cudaEventRecord(*e, stream));
  marks_.push_back({op, flops, bytes});
  return absl::OkStatus();
}

absl::Status StepProfile::End() {
  if (!open_) return absl::FailedPreconditionError("step profile: End before Begin");
  open_ = false;
  if (marks_.empty()) return absl::OkStatus();
  FORGE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[marks_.size()]));
  for (size_t i = 0; i < marks_.size(); ++i) {
    float ms = 0;
    FORGE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
    // A step has a score of distinct ops: a scan finds each.
    auto it =
        std::find_if(ops_.begin(), ops_.end(), [&](const Op& o) { return o.name == marks_[i].op; });
    if (it == ops_.end()) it = ops_.insert(it, {.name = marks_[i].op});
    Op& op = *it;
    ++op.calls;
    op.ms += ms;
    op.flops += marks_[i].flops;
    op.bytes += marks_[i].bytes;
  }
  marks_.clear();
  return absl::OkStatus();
}

double StepProfile::total_ms() const {
  double total = 0;
  for (const Op& op : ops_) total += op.ms;
  return total;
}

void StepProfile::Clear() { ops_.clear(); }

std::string StepProfile::Table(int steps) const {
  const double n = steps > 0 ? steps : 1;
  const double total = total_ms();
  // Per second, in units of `unit`; blank where not counted.
  auto rate = [](double amount, double ms, double unit) -> std::string {
    return amount > 0 && ms > 0 ? absl::StrFormat("%.3g", amount / (ms * 1e-3) / unit) : "";
  };
  std::string out =
      "| op | calls/step | ms/step | share | TFLOP/s | GB/s |\n|---|---|---|---|---|---|\n";
  for (const Op& op : ops_) {
    absl::StrAppendFormat(&out, "| %s | %.4g | %.3f | %.1f %% | %s | %s |\n", op.name, op.calls / n,
                          op.ms / n, total > 0 ? 100 * op.ms / total : 0.0,
                          rate(op.flops, op.ms, 1e12), rate(op.bytes, op.ms, 1e9));
  }
  absl::StrAppendFormat(&out, "| total | | %.3f | 100 %% | | |\n", total / n);
  return out;
}

}  // namespace forge::cuda
