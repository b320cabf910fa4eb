// A Gloo rendezvous::Store backed by the coordinator's TrainerService (rendezvous RPCs),
// scoped by the coordinator to the rank's job attempt. Gloo's Store reports failures by
// throwing; so does this one (gloo::IoException), and the Communicator turns that into a
// Status.
#ifndef FORGE_WORKER_TRAINER_COORDINATOR_STORE_H_
#define FORGE_WORKER_TRAINER_COORDINATOR_STORE_H_

#include <gloo/rendezvous/store.h>

#include <chrono>
#include <string>
#include <vector>

#include "worker/trainer/trainer_client.h"

namespace forge::trainer {

class CoordinatorStore final : public gloo::rendezvous::Store {
 public:
  // `client` must outlive the store.
  CoordinatorStore(TrainerClient* client, std::chrono::milliseconds timeout)
      : client_(client), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  TrainerClient* const client_;
  const std::chrono::milliseconds timeout_;
};

}  // namespace forge::trainer

#endif  // FORGE_WORKER_TRAINER_COORDINATOR_STORE_H_
