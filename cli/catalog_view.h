// How the tenant's catalog looks in the CLI: the `forge data list` and `forge checkpoints`
// tables.
#ifndef FORGE_CLI_CATALOG_VIEW_H_
#define FORGE_CLI_CATALOG_VIEW_H_

#include <string>

#include "absl/time/time.h"
#include "forge/v1/training.pb.h"

namespace forge::cli {

// NAME DOCUMENTS TOKENS HELD-OUT SIZE CREATED, one row per dataset in the given order. Ages
// are relative to `now`.
std::string DatasetsTable(const forge::v1::ListDatasetsResponse& response, absl::Time now);

// ID JOB STEP STAGE PARENT ATTEMPT SIZE CREATED, one row per checkpoint in the given order.
std::string CheckpointsTable(const forge::v1::ListCheckpointsResponse& response, absl::Time now);

// MODEL STAGE CHECKPOINT SHAPE REGISTERED NOTE, then (when there are any) CHANNEL CHECKPOINT
// JOB PROMOTED GUARD: the model catalog and the promotion channels.
std::string ModelsTable(const forge::v1::ListModelsResponse& response, absl::Time now);

// Sorts the checkpoints newest first: by creation time, then by step (both descending), then
// by id, so the order is stable whatever order the coordinator answered in.
void SortNewestFirst(forge::v1::ListCheckpointsResponse* response);

}  // namespace forge::cli

#endif  // FORGE_CLI_CATALOG_VIEW_H_
