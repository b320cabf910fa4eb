#include "coordinator/rendezvous.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace forge::coordinator {

absl::Status RendezvousStore::Set(const std::string& scope, const std::string& key,
                                  std::string value) {
  if (key.empty() || key.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("key must be 1..256 characters (got ", key.size(), ")"));
  }
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("value of ", key, " is ", value.size(),
                                                   " bytes; the limit is ", kMaxValueBytes));
  }
  absl::MutexLock lock(&mu_);
  if (!scopes_.contains(scope) && static_cast<int>(scopes_.size()) >= kMaxScopes) {
    auto oldest = scopes_.begin();
    for (auto it = scopes_.begin(); it != scopes_.end(); ++it) {
      if (it->second.last_used < oldest->second.last_used) oldest = it;
    }
    scopes_.erase(oldest);
  }
  Scope& s = scopes_[scope];
  s.last_used = ++clock_;
  if (!s.values.contains(key) && static_cast<int>(s.values.size()) >= kMaxKeysPerScope) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rendezvous ", scope, " already holds ", kMaxKeysPerScope, " keys"));
  }
  const size_t old = s.values.contains(key) ? s.values[key].size() + key.size() : 0;
  if (s.bytes - old + key.size() + value.size() > kMaxScopeBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rendezvous ", scope, " would exceed ", kMaxScopeBytes, " bytes"));
  }
  s.bytes = s.bytes - old + key.size() + value.size();
  s.values[key] = std::move(value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> RendezvousStore::Get(const std::string& scope, const std::string& key,
                                                 absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = scopes_.find(scope);
    return it != scopes_.end() && it->second.values.contains(key);
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&present), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "rendezvous key ", key, " was not set within ", absl::FormatDuration(timeout),
        " (a peer rank never started)"));
  }
  Scope& s = scopes_[scope];
  s.last_used = ++clock_;
  return s.values[key];
}

void RendezvousStore::DropOtherScopes(const std::string& prefix, const std::string& keep) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(scopes_, [&](const auto& kv) {
    return kv.first != keep && absl::StartsWith(kv.first, prefix);
  });
}

void RendezvousStore::DropScopes(const std::string& prefix) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(scopes_, [&](const auto& kv) { return absl::StartsWith(kv.first, prefix); });
}

}  // namespace forge::coordinator
