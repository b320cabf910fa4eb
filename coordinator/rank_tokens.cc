#include "coordinator/rank_tokens.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace forge::coordinator {

absl::StatusOr<std::unique_ptr<RankTokens>> RankTokens::Open(const std::string& key_path) {
  std::string key;
  if (FileExists(key_path)) {
    ASSIGN_OR_RETURN(key, ReadFile(key_path));
    if (key.size() != 32) {
      return absl::DataLossError(absl::StrCat(
          key_path, " holds ", key.size(), " bytes, not a 32-byte key; delete it to make a new "
          "one (running trainers then lose their tokens and restart)"));
    }
  } else {
    ASSIGN_OR_RETURN(key, SecureRandomBytes(32));
    RETURN_IF_ERROR(WriteFileAtomic(key_path, key, 0600));
  }
  return std::unique_ptr<RankTokens>(new RankTokens(std::move(key)));
}

std::string RankTokens::TokenFor(absl::string_view job_id, int attempt, int rank) const {
  const std::string message =
      absl::StrCat("forge-rank-token/v2/", job_id, "/", attempt, "/", rank);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &len);
  return absl::StrCat("fr_", Base64UrlEncode(absl::string_view(
                                 reinterpret_cast<const char*>(mac), len)));
}

absl::Status RankTokens::Verify(absl::string_view authorization, absl::string_view job_id,
                                int attempt, int rank) const {
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer)) {
    return absl::UnauthenticatedError(
        "missing rank token: trainer calls carry `authorization: Bearer <rank token>`");
  }
  if (!ConstantTimeEquals(authorization.substr(kBearer.size()),
                          TokenFor(job_id, attempt, rank))) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the rank token is not valid for job ", job_id, " attempt ", attempt, " rank ", rank));
  }
  return absl::OkStatus();
}

}  // namespace forge::coordinator
