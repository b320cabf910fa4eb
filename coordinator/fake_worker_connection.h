// A WorkerConnection for tests and benchmarks of the managers without a gRPC stream: it
// accepts every message and drops it.
#ifndef FORGE_COORDINATOR_FAKE_WORKER_CONNECTION_H_
#define FORGE_COORDINATOR_FAKE_WORKER_CONNECTION_H_

#include "coordinator/worker_manager.h"

namespace forge::coordinator {

class FakeWorkerConnection final : public WorkerConnection {
 public:
  bool Send(const forge::v1::CoordinatorMessage&) override { return true; }
  void Close(absl::string_view) override {}
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_FAKE_WORKER_CONNECTION_H_
