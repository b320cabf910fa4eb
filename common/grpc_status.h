// Status translation at the RPC boundary: absl::Status <-> grpc::Status. Codes map one to one.
#ifndef FORGE_COMMON_GRPC_STATUS_H_
#define FORGE_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace forge {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace forge

#endif  // FORGE_COMMON_GRPC_STATUS_H_
