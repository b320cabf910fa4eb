#include "worker/rank_table.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace forge::worker {
namespace {

absl::string_view KindName(forge::v1::DeviceKind kind) {
  switch (kind) {
    case forge::v1::DEVICE_KIND_CPU:
      return "cpu";
    case forge::v1::DEVICE_KIND_CUDA:
      return "cuda";
    default:
      return "unspecified";
  }
}

}  // namespace

RankTable::RankTable(std::vector<forge::v1::Device> devices) : devices_(std::move(devices)) {}

const forge::v1::Device* RankTable::FindDevice(absl::string_view id) const {
  for (const forge::v1::Device& d : devices_) {
    if (d.id() == id) return &d;
  }
  return nullptr;
}

absl::Status RankTable::Accept(const forge::v1::Assignment& a,
                               std::vector<forge::v1::RankInfo>* superseded) {
  if (a.job_id().empty()) return absl::InvalidArgumentError("assignment has no job_id");
  if (a.rank() < 0 || (a.world_size() > 0 && a.rank() >= a.world_size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", a.rank(), " is outside world_size ", a.world_size()));
  }
  const forge::v1::Device* device = FindDevice(a.device());
  if (device == nullptr) {
    std::vector<std::string> ids;
    for (const forge::v1::Device& d : devices_) ids.push_back(d.id());
    return absl::InvalidArgumentError(absl::StrCat(
        "device '", a.device(), "' is not on this worker (it has ", absl::StrJoin(ids, ", "), ")"));
  }
  forge::v1::DeviceKind wanted = a.spec().resources().device();
  if (wanted == forge::v1::DEVICE_KIND_UNSPECIFIED) wanted = forge::v1::DEVICE_KIND_CPU;
  if (wanted != device->kind()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", a.device(), " is a ", KindName(device->kind()),
                     " device but the job asks for ", KindName(wanted)));
  }

  absl::MutexLock lock(&mu_);
  for (const auto& [key, held] : ranks_) {
    if (held.job_id() != a.job_id()) continue;
    if (held.attempt() > a.attempt()) {
      return absl::FailedPreconditionError(
          absl::StrCat("stale attempt ", a.attempt(), " of job ", a.job_id(),
                       ": this worker holds its attempt ", held.attempt()));
    }
  }
  auto it = ranks_.find(Key(a.job_id(), a.rank()));
  if (it != ranks_.end() && it->second.attempt() == a.attempt()) {
    if (it->second.device() == a.device()) return absl::OkStatus();  // a resend
    return absl::FailedPreconditionError(absl::StrCat("job ", a.job_id(), " attempt ", a.attempt(),
                                                      " rank ", a.rank(), " is already held on ",
                                                      it->second.device()));
  }
  for (const auto& [key, held] : ranks_) {
    // Ranks of an older attempt of the same job are about to be dropped: not a conflict.
    if (held.device() == a.device() && held.job_id() != a.job_id()) {
      return absl::FailedPreconditionError(absl::StrCat("device ", a.device(), " is busy with job ",
                                                        held.job_id(), " rank ", held.rank()));
    }
    if (held.device() == a.device() && held.attempt() == a.attempt()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", a.device(), " is busy with rank ", held.rank(), " of the same job"));
    }
  }
  for (auto i = ranks_.begin(); i != ranks_.end();) {
    if (i->second.job_id() == a.job_id() && i->second.attempt() < a.attempt()) {
      if (superseded != nullptr) superseded->push_back(i->second);
      i = ranks_.erase(i);
    } else {
      ++i;
    }
  }
  forge::v1::RankInfo info;
  info.set_job_id(a.job_id());
  info.set_attempt(a.attempt());
  info.set_rank(a.rank());
  info.set_device(a.device());
  info.set_phase(std::string(kPhaseAssigned));
  ranks_[Key(a.job_id(), a.rank())] = std::move(info);
  return absl::OkStatus();
}

std::vector<forge::v1::RankInfo> RankTable::Stop(absl::string_view job_id, int32_t attempt) {
  std::vector<forge::v1::RankInfo> stopped;
  absl::MutexLock lock(&mu_);
  for (auto i = ranks_.begin(); i != ranks_.end();) {
    if (i->second.job_id() == job_id && i->second.attempt() <= attempt) {
      stopped.push_back(std::move(i->second));
      i = ranks_.erase(i);
    } else {
      ++i;
    }
  }
  return stopped;
}

bool RankTable::SetPhase(absl::string_view job_id, int32_t attempt, int32_t rank,
                         absl::string_view phase, int32_t exit_code,
                         absl::string_view exit_reason) {
  absl::MutexLock lock(&mu_);
  auto it = ranks_.find(Key(std::string(job_id), rank));
  if (it == ranks_.end() || it->second.attempt() != attempt) return false;
  it->second.set_phase(std::string(phase));
  it->second.set_exit_code(exit_code);
  it->second.set_exit_reason(std::string(exit_reason));
  return true;
}

std::vector<forge::v1::RankInfo> RankTable::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<forge::v1::RankInfo> out;
  out.reserve(ranks_.size());
  for (const auto& [key, info] : ranks_) out.push_back(info);
  return out;
}

}  // namespace forge::worker
