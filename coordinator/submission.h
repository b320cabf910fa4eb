// The checks a job spec passes before JobManager::Submit, shared by JobService.SubmitJob and
// the schedules (a schedule's spec is checked at create time and again at every slot).
//
// Thread safety: thread-safe (the gateway and the catalog are thread-safe; the report cache
// has its own lock).
#ifndef FORGE_COORDINATOR_SUBMISSION_H_
#define FORGE_COORDINATOR_SUBMISSION_H_

#include <deque>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/contamination.h"
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
  // Reports are cached by the exact datasets compared (tenant, names and manifest hashes, in
  // order), so a resubmission over unchanged data, or a schedule's slot re-checking its spec,
  // does not read the training data again; new data has a new manifest, hence a new key.
  absl::StatusOr<std::string> CheckHeldOut(const std::string& tenant,
                                           const forge::v1::JobSpec& spec) const;

  // Contamination checks actually run (not answered from the cache), since construction.
  int64_t contamination_scans() const;

  static constexpr size_t kCachedReports = 64;

 private:
  const StorageGateway* const storage_;
  const ModelCatalog* const catalog_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, ContaminationReport> reports_ ABSL_GUARDED_BY(mu_);
  mutable std::deque<std::string> report_order_ ABSL_GUARDED_BY(mu_);  // oldest first
  mutable int64_t scans_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SUBMISSION_H_
