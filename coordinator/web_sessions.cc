#include "coordinator/web_sessions.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace forge::coordinator {

WebSessions::WebSessions(const AuthManager* auth, Clock* clock, WebSessionOptions options)
    : auth_(auth), clock_(clock), options_(options) {}

absl::StatusOr<std::string> WebSessions::Open(absl::string_view token) {
  token = absl::StripAsciiWhitespace(token);
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "paste a Forge token (an admin token, or the tenant token from `forge admin tenant "
        "create`)");
  }
  const std::string hash = Sha256Hex(token);
  absl::StatusOr<Principal> who = auth_->AuthenticateHash(hash);
  if (!who.ok()) return who.status();
  if (!who->is_admin() && !who->is_tenant()) {
    return absl::PermissionDeniedError(
        "worker tokens cannot sign in to the dashboard; use an admin or tenant token");
  }
  absl::StatusOr<std::string> raw = SecureRandomBytes(32);
  if (!raw.ok()) return raw.status();
  std::string id = Base64UrlEncode(*raw);
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto by_age = [](const auto& a, const auto& b) {
    return a.second.last_used < b.second.last_used;
  };
  size_t mine = 0;
  auto my_oldest = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second.token_hash != hash) continue;
    ++mine;
    if (my_oldest == sessions_.end() || by_age(*it, *my_oldest)) my_oldest = it;
  }
  if (mine >= options_.max_sessions_per_token) {
    sessions_.erase(my_oldest);
  } else if (sessions_.size() >= options_.max_sessions) {
    sessions_.erase(std::min_element(sessions_.begin(), sessions_.end(), by_age));
  }
  sessions_[Sha256Hex(id)] = Session{hash, now};
  return id;
}

absl::StatusOr<Principal> WebSessions::Lookup(absl::string_view session_id) {
  std::string token_hash;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(Sha256Hex(session_id));
    if (it == sessions_.end()) {
      return absl::UnauthenticatedError("not signed in, or the session ended: sign in again");
    }
    const absl::Time now = clock_->Now();
    if (now - it->second.last_used > options_.idle_timeout) {
      sessions_.erase(it);
      return absl::UnauthenticatedError("the session expired: sign in again");
    }
    it->second.last_used = now;
    token_hash = it->second.token_hash;
  }
  absl::StatusOr<Principal> who = auth_->AuthenticateHash(token_hash);
  if (!who.ok()) {
    Close(session_id);
    return who.status();
  }
  return who;
}

void WebSessions::Close(absl::string_view session_id) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(Sha256Hex(session_id));
}

size_t WebSessions::size() const {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace forge::coordinator
