#include "worker/engine/eval.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace forge::engine {

absl::StatusOr<EvalResult> EvaluateHeldOut(ModelBackend& model, const Dataset& data, int seq_len,
                                           int batch, int64_t max_tokens) {
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
  auto flush = [&]() -> absl::Status {
    if (rows == 0) return absl::OkStatus();
    // Summed per token, so the mean over all windows is exact.
    RETURN_IF_ERROR(model.ForwardLosses(tokens.data(), targets.data(), rows, seq_len,
                                        losses.data()));
    for (size_t i = 0; i < static_cast<size_t>(rows) * seq_len; ++i) loss_sum += losses[i];
    std::fill(tokens.begin(), tokens.end(), 0);
    std::fill(targets.begin(), targets.end(), -1);
    rows = 0;
    return absl::OkStatus();
  };
  for (int64_t d : docs) {
    if (max_tokens > 0 && result.tokens >= max_tokens) break;
    absl::Span<const uint16_t> doc = data.Document(d);
    if (doc.size() < 2) continue;
    ++result.documents;
    // Windows of up to seq_len + 1 tokens starting every seq_len tokens.
    for (size_t start = 0; start + 1 < doc.size(); start += seq_len) {
      const size_t len = std::min<size_t>(seq_len, doc.size() - 1 - start);
      int32_t* tok = tokens.data() + static_cast<size_t>(rows) * seq_len;
      int32_t* tgt = targets.data() + static_cast<size_t>(rows) * seq_len;
      for (size_t i = 0; i < len; ++i) {
        tok[i] = doc[start + i];
        tgt[i] = doc[start + i + 1];
      }
      result.tokens += static_cast<int64_t>(len);
      if (++rows == batch) RETURN_IF_ERROR(flush());
      if (max_tokens > 0 && result.tokens >= max_tokens) break;
    }
  }
  RETURN_IF_ERROR(flush());
  if (result.tokens == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset ", data.name(), ": held-out documents are too short to evaluate"));
  }
  result.loss = loss_sum / static_cast<double>(result.tokens);
  result.bits_per_byte = result.loss / std::log(2.0);
  return result;
}

}  // namespace forge::engine
