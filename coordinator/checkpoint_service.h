// CheckpointService (training.proto): tenants list their committed checkpoints and download
// them. The RPC layer only authenticates and translates; the work is StorageGateway's.
//
// DownloadCheckpoint (server streaming) uses the synchronous API: StorageGateway pushes the
// files chunk by chunk and each ServerWriter::Write blocks until the client takes it (flow
// control), which would stall a callback thread. ListCheckpoints uses the callback API.
//
// Who may call: tenant tokens (their own checkpoints); admin tokens may list every tenant's
// (downloads need the owning tenant's token); worker tokens are PERMISSION_DENIED.
#ifndef FORGE_COORDINATOR_CHECKPOINT_SERVICE_H_
#define FORGE_COORDINATOR_CHECKPOINT_SERVICE_H_

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "coordinator/auth.h"
#include "coordinator/storage_gateway.h"

namespace forge::coordinator {

// `auth` and `gateway` must outlive the service.
std::unique_ptr<grpc::Service> NewCheckpointService(AuthManager* auth, StorageGateway* gateway);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_CHECKPOINT_SERVICE_H_
