#include "coordinator/submission.h"

#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_presets.h"
#include "common/status_macros.h"
#include "coordinator/contamination.h"

namespace forge::coordinator {

absl::StatusOr<CheckedSubmission> SubmissionChecks::Check(const std::string& tenant,
                                                          const forge::v1::JobSpec& spec) const {
  CheckedSubmission out;
  RETURN_IF_ERROR(CheckReferences(tenant, spec));
  ASSIGN_OR_RETURN(out.contamination, CheckHeldOut(tenant, spec));
  if (spec.has_base()) {
    ASSIGN_OR_RETURN(ResolvedBase base, ResolveBase(tenant, spec));
    out.base = std::move(base);
  }
  return out;
}

absl::Status SubmissionChecks::CheckReferences(const std::string& tenant,
                                             const forge::v1::JobSpec& spec) const {
  auto check = [&](const std::string& field, const std::string& name) -> absl::Status {
    if (name.empty() || storage_->GetDataset(tenant, name).ok()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: ", field, ": dataset \"", name, "\" is not registered for tenant ", tenant,
        "; register it first (forge data register ", name, " DIR) or fix the name (forge data "
        "list shows what is registered)"));
  };
  for (int i = 0; i < spec.data().mixture_size(); ++i) {
    RETURN_IF_ERROR(check(absl::StrCat("data.mixture[", i, "].dataset"),
                          spec.data().mixture(i).dataset()));
  }
  for (int i = 0; i < spec.eval().suites_size(); ++i) {
    RETURN_IF_ERROR(check(absl::StrCat("eval.suites[", i, "]"), spec.eval().suites(i)));
  }
  if (!spec.base().checkpoint().empty() &&
      !storage_->GetCheckpoint(tenant, spec.base().checkpoint()).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: base.checkpoint: checkpoint ", spec.base().checkpoint(),
        " is not a committed checkpoint of tenant ", tenant, "; forge checkpoints lists them"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SubmissionChecks::CheckHeldOut(const std::string& tenant,
                                                         const forge::v1::JobSpec& spec) const {
  if (spec.eval().suites().empty() || spec.data().mixture().empty()) return std::string();
  // Each dataset opened once, whether it is a suite, a source or both.
  std::map<std::string, Dataset> open;
  auto get = [&](const std::string& name) -> absl::StatusOr<const Dataset*> {
    if (auto it = open.find(name); it != open.end()) return &it->second;
    ASSIGN_OR_RETURN(Dataset d, storage_->OpenDataset(tenant, name));
    return &open.emplace(name, std::move(d)).first->second;
  };
  std::vector<const Dataset*> suites, sources;
  std::set<std::string> seen;
  for (const std::string& s : spec.eval().suites()) {
    if (!seen.insert("s/" + s).second) continue;
    ASSIGN_OR_RETURN(const Dataset* d, get(s));
    suites.push_back(d);
  }
  for (const auto& m : spec.data().mixture()) {
    if (!seen.insert("t/" + m.dataset()).second) continue;
    ASSIGN_OR_RETURN(const Dataset* d, get(m.dataset()));
    sources.push_back(d);
  }
  std::string key = tenant;
  for (const Dataset* d : suites) absl::StrAppend(&key, "|s:", d->name(), "@", d->manifest_sha256());
  for (const Dataset* d : sources) absl::StrAppend(&key, "|t:", d->name(), "@", d->manifest_sha256());
  std::optional<ContaminationReport> cached;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = reports_.find(key); it != reports_.end()) cached = it->second;
  }
  if (!cached.has_value()) {
    // Outside the lock: a check reads every training token.
    ASSIGN_OR_RETURN(ContaminationReport fresh,
                     CheckContamination(suites, sources, ContaminationOptions{}));
    absl::MutexLock lock(&mu_);
    ++scans_;
    if (reports_.emplace(key, fresh).second) {
      report_order_.push_back(key);
      if (report_order_.size() > kCachedReports) {
        reports_.erase(report_order_.front());
        report_order_.pop_front();
      }
    }
    cached = std::move(fresh);
  }
  const ContaminationReport& report = *cached;
  const std::string summary = report.Summary();
  if (report.contaminated() && !spec.eval().allow_contamination()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job spec: eval.suites: held-out data is contaminated by the training data, so its "
        "evals could not be trusted; the job was not accepted.\n",
        summary,
        "\nfix: remove those documents from the training sources (or the suites), or set "
        "eval.allow_contamination: true to run with the overlap reported"));
  }
  return summary;
}

absl::StatusOr<ResolvedBase> SubmissionChecks::ResolveBase(const std::string& tenant,
                                                         const forge::v1::JobSpec& spec) const {
  const forge::v1::BaseSpec& b = spec.base();
  std::string checkpoint_id = b.checkpoint();
  if (!b.model().empty()) {
    if (catalog_ == nullptr) {
      return absl::UnimplementedError("base.model: this coordinator has no model catalog");
    }
    absl::StatusOr<forge::v1::ModelEntry> entry = catalog_->Resolve(tenant, b.model(), b.stage());
    if (!entry.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("job spec: ", entry.status().message()));
    }
    checkpoint_id = entry->checkpoint();
  }
  absl::StatusOr<forge::v1::CheckpointInfo> info = storage_->GetCheckpoint(tenant, checkpoint_id);
  if (!info.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: base: checkpoint ", checkpoint_id, " is not a committed checkpoint of tenant ",
        tenant, "; forge checkpoints lists them"));
  }
  if (info->shape().layers() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job spec: base: checkpoint ", checkpoint_id,
        " records no model shape (it predates the catalog's lineage); start from a newer "
        "checkpoint"));
  }
  if (spec.resources().device() == forge::v1::DEVICE_KIND_CUDA &&
      info->shape().width() % kCudaWidthMultiple != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("job spec: resources.device: cuda needs a model width that is a multiple of ",
                     kCudaWidthMultiple, "; the base, checkpoint ", checkpoint_id, ", has width ",
                     info->shape().width(), ": train it with resources.device: cpu"));
  }
  ResolvedBase r;
  r.checkpoint = checkpoint_id;
  r.stage = !b.model().empty() ? b.stage() : info->stage();
  r.shape = info->shape();
  return r;
}

int64_t SubmissionChecks::contamination_scans() const {
  absl::MutexLock lock(&mu_);
  return scans_;
}

}  // namespace forge::coordinator
