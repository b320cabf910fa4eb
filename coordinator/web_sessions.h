// Browser sessions of the dashboard: a person signs in once with a Forge token and gets an
// opaque session cookie.
//
// A session keeps the sha256 of the token it was opened with (never the secret) and checks it
// against the AuthManager on every request, so revoking the token ends its sessions at once.
// Sessions live in memory: a coordinator restart signs everyone out. Session ids are 256-bit
// random strings compared by hash lookup.
//
// Thread safety: thread-safe (mu_).
#ifndef FORGE_COORDINATOR_WEB_SESSIONS_H_
#define FORGE_COORDINATOR_WEB_SESSIONS_H_

#include <cstddef>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/auth.h"

namespace forge::coordinator {

struct WebSessionOptions {
  absl::Duration idle_timeout = absl::Hours(12);  // sliding: each request extends it
  size_t max_sessions = 10000;                    // the oldest is dropped past this
  // Per token: signing in again past this drops that token's oldest session, so one token
  // cannot push everyone else's sessions out.
  size_t max_sessions_per_token = 64;
};

class WebSessions {
 public:
  WebSessions(const AuthManager* auth, Clock* clock, WebSessionOptions options = {});

  // Checks `token` (the bare secret, as pasted into the sign-in form) and opens a session.
  // Returns the session id for the cookie. Worker tokens are refused (PERMISSION_DENIED):
  // the dashboard is for people.
  absl::StatusOr<std::string> Open(absl::string_view token);
  // The caller of a session id: UNAUTHENTICATED when unknown, expired or its token revoked.
  absl::StatusOr<Principal> Lookup(absl::string_view session_id);
  void Close(absl::string_view session_id);
  size_t size() const;

 private:
  struct Session {
    std::string token_hash;
    absl::Time last_used;
  };

  const AuthManager* const auth_;
  Clock* const clock_;
  const WebSessionOptions options_;

  mutable absl::Mutex mu_;
  // Keyed by sha256(session id), so a timing side channel on the map cannot leak ids.
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_WEB_SESSIONS_H_
