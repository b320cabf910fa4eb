// Tenants and tokens: who is calling, and what they may do.
//
// Tokens are random secrets "forge_<kind>_<43 base64url chars>" (256 bits). Only their
// sha256 is stored (in memory and in the Store); a secret is returned once, at creation.
// Lookups are by hash, so authentication never compares secrets directly.
//
// Thread safety: all methods are thread-safe (mutex-guarded). Create* methods commit through
// the Store and call `done` from the store's writer thread after the commit.
#ifndef FORGE_COORDINATOR_AUTH_H_
#define FORGE_COORDINATOR_AUTH_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "coordinator/store.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::coordinator {

// The authenticated caller of an RPC.
struct Principal {
  forge::v1::TokenKind kind = forge::v1::TOKEN_KIND_UNSPECIFIED;
  std::string tenant;    // tenant tokens only
  std::string token_id;  // for logs; never the secret

  bool is_admin() const { return kind == forge::v1::TOKEN_KIND_ADMIN; }
  bool is_worker() const { return kind == forge::v1::TOKEN_KIND_WORKER; }
  bool is_tenant() const { return kind == forge::v1::TOKEN_KIND_TENANT; }
  // True when this principal may see objects owned by `owner_tenant`.
  bool CanSee(absl::string_view owner_tenant) const {
    return is_admin() || (is_tenant() && tenant == owner_tenant);
  }
};

struct CreatedToken {
  std::string secret;
  std::string token_id;
};

class AuthManager {
 public:
  AuthManager(Store* store, Clock* clock);

  // Loads tenants and tokens from the store. Call once before serving.
  absl::Status Recover();

  // Ensures an admin token exists in `path` (mode 0600): if the file is missing, creates a new
  // admin token, commits it, and writes the file. If it exists, checks that it holds a known,
  // unrevoked admin token (FAILED_PRECONDITION otherwise, telling the operator to remove the
  // file to mint a new one).
  absl::Status EnsureAdminTokenFile(const std::string& path);

  // Authenticates the value of an `authorization` metadata entry ("Bearer <secret>").
  // UNAUTHENTICATED for a missing, malformed, unknown or revoked token; the message never
  // echoes the secret.
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization_header) const;
  // The same check for a token known by its hex sha256 (a dashboard session keeps the hash,
  // never the secret), so a revoked token ends its sessions at once.
  absl::StatusOr<Principal> AuthenticateHash(absl::string_view token_hash) const;

  // Creates a tenant and its first token.
  void CreateTenant(absl::string_view name,
                    std::function<void(absl::StatusOr<CreatedToken>)> done);
  // Creates a token of `kind`; `tenant` must name an existing tenant for tenant tokens.
  void CreateToken(forge::v1::TokenKind kind, absl::string_view tenant, absl::string_view note,
                   std::function<void(absl::StatusOr<CreatedToken>)> done);
  void RevokeToken(absl::string_view token_id, std::function<void(absl::Status)> done);

  std::vector<TenantRecord> ListTenants() const;
  std::vector<TokenRecord> ListTokens() const;
  bool TenantExists(absl::string_view name) const;

 private:
  absl::StatusOr<std::pair<TokenRecord, std::string>> NewToken(forge::v1::TokenKind kind,
                                                               absl::string_view tenant,
                                                               absl::string_view note) const;

  Store* const store_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, TokenRecord> tokens_by_hash_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, TenantRecord> tenants_ ABSL_GUARDED_BY(mu_);
  // Tenant names being created (committed but callback not yet run), to refuse duplicates.
  absl::flat_hash_map<std::string, bool> pending_tenants_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_AUTH_H_
