#include "worker/engine/eval.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/communicator.h"

namespace forge::engine {

absl::StatusOr<EvalResult> EvaluateHeldOut(ModelBackend& model, const Dataset& data, int seq_len,
                                           int batch, int64_t max_tokens, Communicator* comm) {
  const int world = comm == nullptr ? 1 : comm->world_size();
  const int rank = comm == nullptr ? 0 : comm->rank();
  const std::vector<int64_t>& docs = data.Documents(Split::kHeldOut);
  if (docs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset ", data.name(), " has no held-out documents; prepare it with --heldout > 0"));
  }
  EvalResult result;
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * seq_len, 0);
  std::vector<int32_t> targets(tokens.size(), -1);
  std::vector<float> losses(tokens.size());
  int rows = 0;
  double loss_sum = 0;
  int64_t window = 0;  // windows walked so far, on every rank alike
  absl::Status failed;  // this rank's forward pass failed: stop evaluating, still exchange
  auto flush = [&]() {
    if (rows == 0) return;
    if (failed.ok()) {
      failed = model.ForwardLosses(tokens.data(), targets.data(), rows, seq_len, losses.data());
      // Summed per token, so the mean over all windows is exact.
      if (failed.ok()) {
        for (size_t i = 0; i < static_cast<size_t>(rows) * seq_len; ++i) loss_sum += losses[i];
      }
    }
    std::fill(tokens.begin(), tokens.end(), 0);
    std::fill(targets.begin(), targets.end(), -1);
    rows = 0;
  };
  for (int64_t d : docs) {
    if (max_tokens > 0 && result.tokens >= max_tokens) break;
    absl::Span<const uint16_t> doc = data.Document(d);
    if (doc.size() < 2) continue;
    ++result.documents;
    // Windows of up to seq_len + 1 tokens starting every seq_len tokens.
    for (size_t start = 0; start + 1 < doc.size(); start += seq_len) {
      const size_t len = std::min<size_t>(seq_len, doc.size() - 1 - start);
      result.tokens += static_cast<int64_t>(len);
      if (window++ % world != rank) {
        if (max_tokens > 0 && result.tokens >= max_tokens) break;
        continue;
      }
      int32_t* tok = tokens.data() + static_cast<size_t>(rows) * seq_len;
      int32_t* tgt = targets.data() + static_cast<size_t>(rows) * seq_len;
      for (size_t i = 0; i < len; ++i) {
        tok[i] = doc[start + i];
        tgt[i] = doc[start + i + 1];
      }
      if (++rows == batch) flush();
      if (max_tokens > 0 && result.tokens >= max_tokens) break;
    }
  }
  flush();
  if (world > 1) {
    // Slots [2r, 2r + 1]: rank r's loss sum as a float and the float remainder (together
    // exact to ~48 bits); the last slot counts the ranks whose forward pass failed.
    std::vector<float> sums(2 * world + 1, 0.0f);
    const float hi = static_cast<float>(loss_sum);
    sums[2 * rank] = hi;
    sums[2 * rank + 1] = static_cast<float>(loss_sum - hi);
    sums.back() = failed.ok() ? 0.0f : 1.0f;
    RETURN_IF_ERROR(comm->AllReduceSum(sums.data(), sums.size()));
    if (!failed.ok()) return failed;
    if (sums.back() > 0) {
      return absl::AbortedError(absl::StrCat(
          "held-out evaluation of ", data.name(), ": the forward pass failed on ",
          static_cast<int>(sums.back()), " other rank(s); see their logs"));
    }
    loss_sum = 0;
    for (int r = 0; r < world; ++r) loss_sum += double{sums[2 * r]} + double{sums[2 * r + 1]};
  } else if (!failed.ok()) {
    return failed;
  }
  if (result.tokens == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset ", data.name(), ": held-out documents are too short to evaluate"));
  }
  result.loss = loss_sum / static_cast<double>(result.tokens);
  result.bits_per_byte = result.loss / std::log(2.0);
  return result;
}

}  // namespace forge::engine
