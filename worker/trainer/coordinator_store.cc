#include "worker/trainer/coordinator_store.h"

#include <gloo/common/error.h>

#include "absl/strings/str_cat.h"

namespace forge::trainer {

void CoordinatorStore::set(const std::string& key, const std::vector<char>& data) {
  absl::Status s = client_->RendezvousSet(key, std::string(data.begin(), data.end()));
  if (!s.ok()) throw gloo::IoException(absl::StrCat("rendezvous set ", key, ": ", s.ToString()));
}

std::vector<char> CoordinatorStore::get(const std::string& key) {
  absl::StatusOr<std::string> v =
      client_->RendezvousGet(key, absl::FromChrono(timeout_));
  if (!v.ok()) {
    throw gloo::IoException(absl::StrCat("rendezvous get ", key, ": ", v.status().ToString()));
  }
  return std::vector<char>(v->begin(), v->end());
}

void CoordinatorStore::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> v = client_->RendezvousGet(key, absl::FromChrono(timeout));
    if (!v.ok()) {
      throw gloo::IoException(absl::StrCat("rendezvous wait ", key, ": ", v.status().ToString()));
    }
  }
}

}  // namespace forge::trainer
