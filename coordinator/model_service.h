// ModelService (training.proto): the model catalog (base models by stage) and promotion
// channels of the caller's tenant. The RPC layer only authenticates and translates; the work
// is ModelCatalog's. Tenant tokens only.
#ifndef FORGE_COORDINATOR_MODEL_SERVICE_H_
#define FORGE_COORDINATOR_MODEL_SERVICE_H_

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "coordinator/auth.h"
#include "coordinator/model_catalog.h"

namespace forge::coordinator {

// `auth` and `catalog` must outlive the service.
std::unique_ptr<grpc::Service> NewModelService(AuthManager* auth, ModelCatalog* catalog);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_MODEL_SERVICE_H_
