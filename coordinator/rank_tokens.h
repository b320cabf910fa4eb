// Rank tokens: the bearer tokens trainer processes use for TrainerService, one per rank of a
// job attempt. A token is HMAC-SHA256(key, "<job>/<attempt>/<rank>") under a key the
// coordinator keeps in its state dir (0600), so tokens survive a coordinator restart without
// being stored, a token is useless for any other attempt or rank (rank 1 cannot upload or
// finish as rank 0), and no tenant or worker token ever reaches a trainer process.
//
// Thread safety: immutable after Open; thread-safe.
#ifndef FORGE_COORDINATOR_RANK_TOKENS_H_
#define FORGE_COORDINATOR_RANK_TOKENS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace forge::coordinator {

class RankTokens {
 public:
  // Loads the key from `key_path`, creating it (32 random bytes, mode 0600) on first use.
  static absl::StatusOr<std::unique_ptr<RankTokens>> Open(const std::string& key_path);

  std::string TokenFor(absl::string_view job_id, int attempt, int rank) const;
  // `authorization` is the metadata value ("Bearer <token>"). UNAUTHENTICATED when missing
  // or not the token of job_id/attempt/rank.
  absl::Status Verify(absl::string_view authorization, absl::string_view job_id, int attempt,
                      int rank) const;

 private:
  explicit RankTokens(std::string key) : key_(std::move(key)) {}
  const std::string key_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_RANK_TOKENS_H_
