// ScheduleService (coordinator.proto): the caller's nightly retraining schedules. The RPC
// layer only authenticates and translates; the work is ScheduleManager's. Tenant tokens only.
#ifndef FORGE_COORDINATOR_SCHEDULE_SERVICE_H_
#define FORGE_COORDINATOR_SCHEDULE_SERVICE_H_

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "coordinator/auth.h"
#include "coordinator/schedule_manager.h"

namespace forge::coordinator {

// `auth` and `schedules` must outlive the service.
std::unique_ptr<grpc::Service> NewScheduleService(AuthManager* auth, ScheduleManager* schedules);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SCHEDULE_SERVICE_H_
