// The checks a job spec passes before JobManager::Submit, shared by JobService.SubmitJob and
// the schedules (a schedule's spec is checked at create time and again at every slot).
//
// Thread safety: thread-safe (const; the gateway and the catalog are thread-safe).
#ifndef FORGE_COORDINATOR_SUBMISSION_H_
#define FORGE_COORDINATOR_SUBMISSION_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/job_manager.h"
#include "coordinator/model_catalog.h"
#include "coordinator/storage_gateway.h"
#include "forge/v1/job.pb.h"

namespace forge::coordinator {

// What the checks found, handed to JobManager::Submit.
struct CheckedSubmission {
  std::optional<ResolvedBase> base;  // set when the spec has `base`
  std::string contamination;         // the held-out check's summary
};

class SubmissionChecks {
 public:
  // `catalog` may be null (base.model is then UNIMPLEMENTED). Both must outlive this.
  SubmissionChecks(const StorageGateway* storage, const ModelCatalog* catalog)
      : storage_(storage), catalog_(catalog) {}

  // References, then the held-out check, then the base: the first refusal, or what
  // JobManager::Submit needs.
  absl::StatusOr<CheckedSubmission> Check(const std::string& tenant,
                                          const forge::v1::JobSpec& spec) const;

  // Every dataset and base checkpoint the spec names must be registered for the tenant.
  absl::Status CheckReferences(const std::string& tenant, const forge::v1::JobSpec& spec) const;
  // spec.base as a checkpoint id with its stage and shape (the catalog for base.model).
  absl::StatusOr<ResolvedBase> ResolveBase(const std::string& tenant,
                                           const forge::v1::JobSpec& spec) const;
  // The held-out contamination check of the spec's eval suites against its training sources
  // (contamination.h): the report's summary, or FAILED_PRECONDITION with it when the job is
  // contaminated and the spec does not allow it.
  absl::StatusOr<std::string> CheckHeldOut(const std::string& tenant,
                                           const forge::v1::JobSpec& spec) const;

 private:
  const StorageGateway* const storage_;
  const ModelCatalog* const catalog_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SUBMISSION_H_
