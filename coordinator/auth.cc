#include "coordinator/auth.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace forge::coordinator {
namespace {

using forge::v1::TokenKind;

const char* KindWord(TokenKind kind) {
  switch (kind) {
    case forge::v1::TOKEN_KIND_ADMIN: return "admin";
    case forge::v1::TOKEN_KIND_TENANT: return "tenant";
    case forge::v1::TOKEN_KIND_WORKER: return "worker";
    default: return "unknown";
  }
}

}  // namespace

AuthManager::AuthManager(Store* store, Clock* clock) : store_(store), clock_(clock) {}

absl::Status AuthManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<TenantRecord> tenants, store_->LoadTenants());
  ASSIGN_OR_RETURN(std::vector<TokenRecord> tokens, store_->LoadTokens());
  absl::MutexLock lock(&mu_);
  for (auto& t : tenants) tenants_[t.name] = std::move(t);
  for (auto& t : tokens) tokens_by_hash_[t.hash] = std::move(t);
  return absl::OkStatus();
}

absl::StatusOr<std::pair<TokenRecord, std::string>> AuthManager::NewToken(
    TokenKind kind, absl::string_view tenant, absl::string_view note) const {
  ASSIGN_OR_RETURN(std::string secret_bytes, SecureRandomBytes(32));
  ASSIGN_OR_RETURN(std::string id_bytes, SecureRandomBytes(8));
  std::string secret = absl::StrCat("forge_", KindWord(kind), "_", Base64UrlEncode(secret_bytes));
  TokenRecord rec;
  rec.id = absl::StrCat("t-", HexEncode(id_bytes));
  rec.hash = Sha256Hex(secret);
  rec.kind = kind;
  rec.tenant = std::string(tenant);
  rec.note = std::string(note);
  rec.create_time = clock_->Now();
  return std::make_pair(std::move(rec), std::move(secret));
}

absl::Status AuthManager::EnsureAdminTokenFile(const std::string& path) {
  if (FileExists(path)) {
    ASSIGN_OR_RETURN(std::string content, ReadFile(path));
    std::string secret(absl::StripAsciiWhitespace(content));
    absl::MutexLock lock(&mu_);
    auto it = tokens_by_hash_.find(Sha256Hex(secret));
    if (it == tokens_by_hash_.end() || it->second.revoked ||
        it->second.kind != forge::v1::TOKEN_KIND_ADMIN) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " does not hold a valid admin token for this state directory; remove the file "
                "and restart the coordinator to create a new admin token"));
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto created, NewToken(forge::v1::TOKEN_KIND_ADMIN, "", "bootstrap admin"));
  WriteBatch batch;
  batch.put_tokens.push_back(created.first);
  RETURN_IF_ERROR(store_->CommitSync(std::move(batch)));
  {
    absl::MutexLock lock(&mu_);
    tokens_by_hash_[created.first.hash] = created.first;
  }
  RETURN_IF_ERROR(WriteFileAtomic(path, created.second + "\n", 0600));
  FORGE_LOG(INFO) << "event=admin_token_created token_id=" << created.first.id
                  << " file=" << path;
  return absl::OkStatus();
}

absl::StatusOr<Principal> AuthManager::Authenticate(absl::string_view header) const {
  if (header.empty()) {
    return absl::UnauthenticatedError(
        "missing token: send metadata \"authorization: Bearer <token>\" (forge: set "
        "FORGE_TOKEN or --token-file)");
  }
  absl::string_view secret = header;
  if (!absl::ConsumePrefix(&secret, "Bearer ") && !absl::ConsumePrefix(&secret, "bearer ")) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected \"Bearer <token>\"");
  }
  secret = absl::StripAsciiWhitespace(secret);
  return AuthenticateHash(Sha256Hex(secret));
}

absl::StatusOr<Principal> AuthManager::AuthenticateHash(absl::string_view token_hash) const {
  absl::MutexLock lock(&mu_);
  auto it = tokens_by_hash_.find(token_hash);
  if (it == tokens_by_hash_.end()) {
    return absl::UnauthenticatedError("unknown token: check FORGE_TOKEN or --token-file");
  }
  if (it->second.revoked) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", it->second.id, " has been revoked; ask an admin for a new one"));
  }
  Principal p;
  p.kind = it->second.kind;
  p.tenant = it->second.tenant;
  p.token_id = it->second.id;
  return p;
}

void AuthManager::CreateTenant(absl::string_view name,
                               std::function<void(absl::StatusOr<CreatedToken>)> done) {
  if (absl::Status s = ValidateTenantName("tenant name", name); !s.ok()) return done(s);
  absl::StatusOr<std::pair<TokenRecord, std::string>> created =
      NewToken(forge::v1::TOKEN_KIND_TENANT, name, "first token");
  if (!created.ok()) return done(created.status());
  std::string tenant(name);
  {
    absl::MutexLock lock(&mu_);
    if (tenants_.contains(tenant) || pending_tenants_.contains(tenant)) {
      return done(absl::AlreadyExistsError(absl::StrCat("tenant ", tenant, " already exists")));
    }
    pending_tenants_[tenant] = true;
  }
  TenantRecord rec{tenant, clock_->Now()};
  WriteBatch batch;
  batch.insert_tenants.push_back(rec);
  batch.put_tokens.push_back(created->first);
  store_->Commit(std::move(batch), [this, rec, created = *std::move(created),
                                    done = std::move(done)](absl::Status s) {
    {
      absl::MutexLock lock(&mu_);
      pending_tenants_.erase(rec.name);
      if (s.ok()) {
        tenants_[rec.name] = rec;
        tokens_by_hash_[created.first.hash] = created.first;
      }
    }
    if (!s.ok()) return done(s);
    FORGE_LOG(INFO) << "event=tenant_created tenant=" << rec.name
                    << " token_id=" << created.first.id;
    done(CreatedToken{created.second, created.first.id});
  });
}

void AuthManager::CreateToken(TokenKind kind, absl::string_view tenant, absl::string_view note,
                              std::function<void(absl::StatusOr<CreatedToken>)> done) {
  if (note.size() > 256) {
    return done(absl::InvalidArgumentError("note is longer than 256 characters; shorten it"));
  }
  switch (kind) {
    case forge::v1::TOKEN_KIND_TENANT:
      if (!TenantExists(tenant)) {
        return done(absl::NotFoundError(absl::StrCat(
            "tenant \"", tenant, "\" does not exist; create it with forge admin tenant create")));
      }
      break;
    case forge::v1::TOKEN_KIND_ADMIN:
    case forge::v1::TOKEN_KIND_WORKER:
      if (!tenant.empty()) {
        return done(absl::InvalidArgumentError(
            absl::StrCat("tenant must be empty for ", KindWord(kind), " tokens")));
      }
      break;
    default:
      return done(absl::InvalidArgumentError("kind must be admin, tenant or worker"));
  }
  absl::StatusOr<std::pair<TokenRecord, std::string>> created = NewToken(kind, tenant, note);
  if (!created.ok()) return done(created.status());
  WriteBatch batch;
  batch.put_tokens.push_back(created->first);
  store_->Commit(std::move(batch),
                 [this, created = *std::move(created), done = std::move(done)](absl::Status s) {
                   if (!s.ok()) return done(s);
                   {
                     absl::MutexLock lock(&mu_);
                     tokens_by_hash_[created.first.hash] = created.first;
                   }
                   FORGE_LOG(INFO) << "event=token_created kind=" << KindWord(created.first.kind)
                                   << " token_id=" << created.first.id;
                   done(CreatedToken{created.second, created.first.id});
                 });
}

void AuthManager::RevokeToken(absl::string_view token_id, std::function<void(absl::Status)> done) {
  TokenRecord rec;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(tokens_by_hash_.begin(), tokens_by_hash_.end(),
                           [&](const auto& kv) { return kv.second.id == token_id; });
    if (it == tokens_by_hash_.end()) {
      return done(absl::NotFoundError(absl::StrCat("token ", token_id, " not found")));
    }
    // Revoke in memory first so the token stops working at once; the commit makes it last.
    it->second.revoked = true;
    rec = it->second;
  }
  WriteBatch batch;
  batch.put_tokens.push_back(rec);
  store_->Commit(std::move(batch), [id = rec.id, done = std::move(done)](absl::Status s) {
    if (s.ok()) FORGE_LOG(INFO) << "event=token_revoked token_id=" << id;
    done(s);
  });
}

std::vector<TenantRecord> AuthManager::ListTenants() const {
  absl::MutexLock lock(&mu_);
  std::vector<TenantRecord> out;
  for (const auto& [name, rec] : tenants_) out.push_back(rec);
  std::sort(out.begin(), out.end(),
            [](const TenantRecord& a, const TenantRecord& b) { return a.name < b.name; });
  return out;
}

std::vector<TokenRecord> AuthManager::ListTokens() const {
  absl::MutexLock lock(&mu_);
  std::vector<TokenRecord> out;
  for (const auto& [hash, rec] : tokens_by_hash_) out.push_back(rec);
  std::sort(out.begin(), out.end(), [](const TokenRecord& a, const TokenRecord& b) {
    return a.create_time < b.create_time || (a.create_time == b.create_time && a.id < b.id);
  });
  return out;
}

bool AuthManager::TenantExists(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  return tenants_.contains(std::string(name));
}

}  // namespace forge::coordinator
