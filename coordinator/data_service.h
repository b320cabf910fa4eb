// DataService (training.proto): tenants register prepared datasets and list them. The RPC
// layer only authenticates and translates; the work is StorageGateway's.
//
// RegisterDataset (client streaming) uses the synchronous API: StorageGateway pulls the
// stream message by message and blocks on file I/O and the catalog commit, which fits a
// ServerReader on a sync-pool thread and would stall a callback thread. ListDatasets uses
// the callback API. The server needs no special setup for the mix.
//
// Who may call: tenant tokens (their own datasets); admin tokens may list every tenant's;
// worker tokens are PERMISSION_DENIED.
#ifndef FORGE_COORDINATOR_DATA_SERVICE_H_
#define FORGE_COORDINATOR_DATA_SERVICE_H_

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "coordinator/auth.h"
#include "coordinator/storage_gateway.h"

namespace forge::coordinator {

// `auth` and `gateway` must outlive the service.
std::unique_ptr<grpc::Service> NewDataService(AuthManager* auth, StorageGateway* gateway);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_DATA_SERVICE_H_
