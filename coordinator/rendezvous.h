// The rendezvous store trainer ranks meet through (Gloo's rendezvous::Store semantics: set,
// and get that waits for the key), one key space per job attempt. In memory: a rendezvous
// lives only as long as the ranks are starting; a coordinator restart during one makes the
// ranks time out and the attempt restart.
//
// Bounds: 4,096 keys and 4 MiB per scope, 64 KiB per value, 1,024 scopes (the least
// recently used scope is dropped first; a live rendezvous touches its scope on every call).
// A job's older attempts' scopes are dropped when a newer attempt sets a key.
//
// Thread safety: thread-safe; Get blocks the calling thread up to its timeout.
#ifndef FORGE_COORDINATOR_RENDEZVOUS_H_
#define FORGE_COORDINATOR_RENDEZVOUS_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace forge::coordinator {

class RendezvousStore {
 public:
  static constexpr int kMaxKeysPerScope = 4096;
  static constexpr size_t kMaxValueBytes = 64 << 10;
  static constexpr int kMaxScopes = 1024;
  static constexpr size_t kMaxScopeBytes = 4 << 20;

  absl::Status Set(const std::string& scope, const std::string& key, std::string value);
  // DEADLINE_EXCEEDED when the key is not set within `timeout`.
  absl::StatusOr<std::string> Get(const std::string& scope, const std::string& key,
                                  absl::Duration timeout);
  // Drops every scope whose name starts with `prefix` (a job's finished attempts).
  void DropScopes(const std::string& prefix);
  // Drops every scope starting with `prefix` except `keep` (a job's earlier attempts).
  void DropOtherScopes(const std::string& prefix, const std::string& keep);

 private:
  struct Scope {
    absl::flat_hash_map<std::string, std::string> values;
    size_t bytes = 0;
    int64_t last_used = 0;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Scope> scopes_ ABSL_GUARDED_BY(mu_);
  int64_t clock_ ABSL_GUARDED_BY(mu_) = 0;  // logical time for LRU
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_RENDEZVOUS_H_
