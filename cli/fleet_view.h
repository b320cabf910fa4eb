// How the fleet and the administration objects look in the CLI's table output: workers,
// tenants and tokens.
#ifndef FORGE_CLI_FLEET_VIEW_H_
#define FORGE_CLI_FLEET_VIEW_H_

#include <string>

#include "absl/time/time.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::cli {

// "ALIVE", "DEAD".
std::string WorkerStateName(forge::v1::WorkerState state);

// "admin", "tenant", "worker".
std::string TokenKindName(forge::v1::TokenKind kind);

// The devices of a worker counted by kind: "4 cpu", "8 cuda", "16 cpu, 2 cuda"; "none".
std::string DeviceSummary(const forge::v1::Worker& worker);

// ID HOST STATE DEVICES RANKS LAST-HEARTBEAT ("3s ago"), in the response's order.
std::string WorkersTable(const forge::v1::ListWorkersResponse& response, absl::Time now);

// NAME AGE.
std::string TenantsTable(const forge::v1::ListTenantsResponse& response, absl::Time now);

// ID KIND TENANT STATE AGE NOTE; STATE is "active" or "revoked".
std::string TokensTable(const forge::v1::ListTokensResponse& response, absl::Time now);

}  // namespace forge::cli

#endif  // FORGE_CLI_FLEET_VIEW_H_
