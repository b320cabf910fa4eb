#include "coordinator/storage_gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/names.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "coordinator/storage_files.h"

namespace forge::coordinator {

// The files on disk and in transit (storage_files.h); this file keeps the catalog.
using storage::ErrnoStatus;
using storage::FindFile;
using storage::JoinPath;
using storage::kCheckpointManifest;
using storage::kMaxChunkBytes;
using storage::ParentOf;
using storage::Place;
using storage::Quote;
using storage::ReadAt;
using storage::ReceiveChunks;
using storage::RemoveTree;
using storage::SameFiles;
using storage::SameModel;
using storage::SendDatasetFiles;
using storage::SendFiles;
using storage::UploadWriter;
using storage::ValidateFiles;
using storage::VerifyCheckpointManifest;
using storage::VerifyDatasetUpload;
using storage::WithPrefix;
using storage::WriteAll;

namespace {

namespace fs = std::filesystem;

using forge::v1::CheckpointInfo;
using forge::v1::DatasetInfo;
using forge::v1::FileInfo;

constexpr int kMaxDatasetFiles = 10000;
constexpr int kMaxCheckpointFiles = 16;
constexpr int64_t kMaxCheckpointManifestBytes = int64_t{1} << 20;
constexpr size_t kMaxJobIdLength = 128;
constexpr int64_t kMaxLogLineBytes = int64_t{1} << 20;

}  // namespace

// Thread safety: the catalogs and the in-flight reservations are guarded by mu_, which is
// never held across file I/O or a store commit; log appends are serialized by log_mu_.
class StorageGateway::Impl {
 public:
  Impl(StorageGatewayOptions options, Store* store)
      : options_(std::move(options)),
        store_(store),
        clock_(options_.clock != nullptr ? options_.clock : RealClock()) {}

  absl::Status Recover();

  absl::StatusOr<DatasetInfo> RegisterDataset(const std::string& tenant,
                                              const forge::v1::DatasetHeader& header,
                                              const NextMessage<forge::v1::DatasetUpload>& next);
  std::vector<DatasetInfo> ListDatasets(const std::string& tenant) const;
  absl::StatusOr<DatasetInfo> GetDataset(const std::string& tenant, absl::string_view name) const;
  absl::Status SendDataset(const std::string& tenant, absl::string_view name,
                           const WriteTransfer& write) const;

  absl::StatusOr<CheckpointInfo> ReceiveCheckpoint(
      const std::string& tenant, const std::string& job_id, int32_t attempt, int keep_last,
      const forge::v1::CheckpointHeader& header,
      const NextMessage<forge::v1::CheckpointUpload>& next,
      const std::function<bool(const std::string&)>& in_use, const CheckpointInfo* lineage);
  std::vector<CheckpointInfo> ListCheckpoints(const std::string& tenant,
                                              absl::string_view job_id) const;
  absl::StatusOr<CheckpointInfo> GetCheckpoint(const std::string& tenant,
                                               absl::string_view id) const;
  absl::StatusOr<CheckpointInfo> LatestCheckpoint(absl::string_view job_id) const;
  absl::Status SendCheckpoint(const std::string& tenant, absl::string_view id,
                              const std::vector<std::string>& files,
                              const WriteTransfer& write) const;

  absl::Status AppendLog(const std::string& tenant, const std::string& job_id,
                         absl::string_view lines);
  absl::StatusOr<std::string> ReadLog(const std::string& tenant, const std::string& job_id,
                                      int64_t offset, int64_t max_bytes,
                                      int64_t* next_offset) const;
  absl::StatusOr<std::string> ReadLogTail(const std::string& tenant, const std::string& job_id,
                                          int64_t max_bytes, bool* truncated) const;

  const std::string& root() const { return options_.root; }

 private:
  using DatasetKey = std::pair<std::string, std::string>;  // (tenant, name)
  using StepKey = std::pair<std::string, int64_t>;          // (job, step)

  std::string Abs(absl::string_view rel) const { return JoinPath(options_.root, rel); }
  static std::string DatasetRel(absl::string_view tenant, absl::string_view name) {
    return absl::StrCat("tenants/", tenant, "/datasets/", name);
  }
  static std::string CheckpointRel(absl::string_view tenant, absl::string_view job,
                                   int64_t step) {
    return absl::StrFormat("tenants/%s/checkpoints/%s/step-%08d", tenant, job, step);
  }
  std::string LogPath(absl::string_view tenant, absl::string_view job) const {
    return Abs(absl::StrCat("tenants/", tenant, "/logs/", job, ".log"));
  }

  // A fresh empty directory under the tenant's .incoming.
  absl::StatusOr<std::string> NewIncomingDir(const std::string& tenant) const;
  // Which of the job's committed checkpoints retention would delete once `added` commits
  // (before asking in_use).
  std::vector<CheckpointInfo> RetentionCandidates(const std::string& job_id, int keep_last,
                                                  const CheckpointInfo& added) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const StorageGatewayOptions options_;
  Store* const store_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<DatasetKey, DatasetInfo> datasets_ ABSL_GUARDED_BY(mu_);
  std::set<DatasetKey> datasets_in_flight_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, CheckpointInfo> checkpoints_ ABSL_GUARDED_BY(mu_);
  // job -> step -> checkpoint id
  absl::flat_hash_map<std::string, std::map<int64_t, std::string>> steps_ ABSL_GUARDED_BY(mu_);
  std::set<StepKey> checkpoints_in_flight_ ABSL_GUARDED_BY(mu_);

  absl::Mutex log_mu_;
};

absl::Status StorageGateway::Impl::Recover() {
  RETURN_IF_ERROR(MakeDirs(options_.root));
  ASSIGN_OR_RETURN(std::vector<DatasetInfo> datasets, store_->LoadDatasets());
  ASSIGN_OR_RETURN(std::vector<CheckpointInfo> checkpoints, store_->LoadCheckpoints());
  std::set<std::string> committed;
  {
    absl::MutexLock lock(&mu_);
    for (DatasetInfo& d : datasets) {
      committed.insert(DatasetRel(d.tenant(), d.name()));
      DatasetKey key(d.tenant(), d.name());
      datasets_[key] = std::move(d);
    }
    for (CheckpointInfo& c : checkpoints) {
      committed.insert(c.path());
      steps_[c.job_id()][c.step()] = c.id();
      std::string id = c.id();
      checkpoints_[id] = std::move(c);
    }
  }
  // Anything under tenants/ that no committed row names is an upload that never committed
  // (or a retention deletion that did not finish): garbage.
  int removed = 0;
  auto remove = [&](const fs::path& p, absl::string_view reason) {
    FORGE_LOG(INFO) << "event=storage_garbage_removed path="
                    << p.lexically_relative(options_.root).string() << " reason=" << reason;
    RemoveTree(p.string());
    ++removed;
  };
  auto children = [](const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      out.push_back(it->path());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  for (const fs::path& tenant_dir : children(fs::path(options_.root) / "tenants")) {
    const std::string tenant = tenant_dir.filename().string();
    if (fs::exists(tenant_dir / ".incoming")) remove(tenant_dir / ".incoming", "incomplete_upload");
    for (const fs::path& d : children(tenant_dir / "datasets")) {
      if (!committed.count(DatasetRel(tenant, d.filename().string()))) remove(d, "uncommitted");
    }
    for (const fs::path& job_dir : children(tenant_dir / "checkpoints")) {
      for (const fs::path& step_dir : children(job_dir)) {
        const std::string rel = absl::StrCat("tenants/", tenant, "/checkpoints/",
                                             job_dir.filename().string(), "/",
                                             step_dir.filename().string());
        if (!committed.count(rel)) remove(step_dir, "uncommitted");
      }
      std::error_code ec;
      if (fs::is_empty(job_dir, ec) && !ec) fs::remove(job_dir, ec);
    }
  }
  for (const std::string& rel : committed) {
    if (!fs::exists(Abs(rel))) {
      FORGE_LOG(ERROR) << "event=storage_committed_missing path=" << rel
                       << " note=\"a catalog row whose files are gone; restore the storage "
                          "root from a backup\"";
    }
  }
  FORGE_LOG(INFO) << "event=storage_opened root=" << options_.root
                  << " datasets=" << datasets.size() << " checkpoints=" << checkpoints.size()
                  << " garbage_removed=" << removed;
  return absl::OkStatus();
}

absl::StatusOr<std::string> StorageGateway::Impl::NewIncomingDir(const std::string& tenant) const {
  ASSIGN_OR_RETURN(std::string random, SecureRandomBytes(8));
  const std::string dir =
      Abs(absl::StrCat("tenants/", tenant, "/.incoming/", HexEncode(random)));
  RETURN_IF_ERROR(MakeDirs(dir));
  return dir;
}

// --- Datasets --------------------------------------------------------------------------------

absl::StatusOr<DatasetInfo> StorageGateway::Impl::RegisterDataset(
    const std::string& tenant, const forge::v1::DatasetHeader& header,
    const NextMessage<forge::v1::DatasetUpload>& next) {
  RETURN_IF_ERROR(ValidateTenantName("tenant", tenant));
  RETURN_IF_ERROR(ValidateResourceName("header.name", header.name()));
  const std::string& name = header.name();
  ASSIGN_OR_RETURN(const int64_t total, ValidateFiles(header.files(), kMaxDatasetFiles,
                                                      options_.max_dataset_bytes, "dataset"));
  const int manifest = FindFile(header.files(), kManifestFileName);
  if (manifest < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.files must include ", kManifestFileName,
        "; upload the whole directory written by `forge data prepare`"));
  }
  const DatasetKey key(tenant, name);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = datasets_.find(key); it != datasets_.end()) {
      const DatasetInfo& existing = it->second;
      // manifest.json lists every shard's sha256, so its hash identifies the content.
      if (existing.manifest_sha256() == header.files(manifest).sha256() &&
          existing.files() == header.files_size() && existing.bytes() == total) {
        FORGE_LOG(INFO) << "event=dataset_register_unchanged tenant=" << tenant
                        << " dataset=" << name;
        return existing;
      }
      return absl::AlreadyExistsError(absl::StrCat(
          "dataset ", name, " already exists with different content (manifest sha256 ",
          existing.manifest_sha256(), "); register the new data under another name"));
    }
    if (!datasets_in_flight_.insert(key).second) {
      return absl::AbortedError(absl::StrCat("dataset ", name,
                                             " is being registered by another upload; retry "
                                             "when it finishes"));
    }
  }
  absl::Cleanup release = [&] {
    absl::MutexLock lock(&mu_);
    datasets_in_flight_.erase(key);
  };
  ASSIGN_OR_RETURN(const std::string incoming, NewIncomingDir(tenant));
  absl::Cleanup remove_incoming = [&] { RemoveTree(incoming); };  // a no-op once renamed
  const std::string prefix = absl::StrCat("dataset ", name, ": ");
  {
    UploadWriter writer(incoming, header.files());
    RETURN_IF_ERROR(WithPrefix(ReceiveChunks(writer, next), prefix));
  }
  DatasetInfo info;
  {
    absl::StatusOr<Dataset> ds = VerifyDatasetUpload(incoming, header.files(), prefix);
    if (!ds.ok()) return ds.status();
    info.set_name(name);
    info.set_tenant(tenant);
    info.set_documents(ds->num_documents());
    info.set_tokens(ds->num_tokens());
    info.set_held_out_documents(static_cast<int64_t>(ds->Documents(Split::kHeldOut).size()));
    info.set_bytes(total);
    info.set_manifest_sha256(ds->manifest_sha256());
    *info.mutable_create_time() = ToProtoTime(clock_->Now());
    info.set_files(header.files_size());
  }
  const std::string dest = Abs(DatasetRel(tenant, name));
  RETURN_IF_ERROR(Place(incoming, dest));
  WriteBatch batch;
  batch.put_datasets.push_back(info);
  if (absl::Status s = store_->CommitSync(std::move(batch)); !s.ok()) {
    RemoveTree(dest);
    return WithPrefix(s, prefix);
  }
  {
    absl::MutexLock lock(&mu_);
    datasets_[key] = info;
  }
  FORGE_LOG(INFO) << "event=dataset_registered tenant=" << tenant << " dataset=" << name
                  << " files=" << info.files() << " bytes=" << info.bytes()
                  << " documents=" << info.documents() << " tokens=" << info.tokens();
  return info;
}

std::vector<DatasetInfo> StorageGateway::Impl::ListDatasets(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  std::vector<DatasetInfo> out;
  for (auto it = datasets_.lower_bound({tenant, ""}); it != datasets_.end(); ++it) {
    if (!tenant.empty() && it->first.first != tenant) break;
    out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<DatasetInfo> StorageGateway::Impl::GetDataset(const std::string& tenant,
                                                            absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = datasets_.find(DatasetKey(tenant, std::string(name)));
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("dataset ", Quote(name),
                                            " is not registered; register it with `forge data "
                                            "register NAME DIR` (see `forge data list`)"));
  }
  return it->second;
}

absl::Status StorageGateway::Impl::SendDataset(const std::string& tenant, absl::string_view name,
                                               const WriteTransfer& write) const {
  ASSIGN_OR_RETURN(DatasetInfo info, GetDataset(tenant, name));
  return SendDatasetFiles(Abs(DatasetRel(info.tenant(), info.name())), options_.chunk_bytes,
                          write);
}

// --- Checkpoints -----------------------------------------------------------------------------

std::vector<CheckpointInfo> StorageGateway::Impl::RetentionCandidates(
    const std::string& job_id, int keep_last, const CheckpointInfo& added) const {
  std::vector<CheckpointInfo> out;
  if (keep_last <= 0) return out;  // keep everything
  absl::MutexLock lock(&mu_);
  auto it = steps_.find(job_id);
  if (it == steps_.end()) return out;
  std::map<int64_t, std::string> steps = it->second;
  steps[added.step()] = added.id();
  int kept = 0;
  for (auto s = steps.rbegin(); s != steps.rend(); ++s) {
    // The newest (first here) is within keep_last >= 1, so it is never a candidate; neither
    // is the checkpoint being added, whose answer must name a listed checkpoint.
    if (++kept <= keep_last || s->second == added.id()) continue;
    out.push_back(checkpoints_.at(s->second));
  }
  return out;
}

absl::StatusOr<CheckpointInfo> StorageGateway::Impl::ReceiveCheckpoint(
    const std::string& tenant, const std::string& job_id, int32_t attempt, int keep_last,
    const forge::v1::CheckpointHeader& header,
    const NextMessage<forge::v1::CheckpointUpload>& next,
    const std::function<bool(const std::string&)>& in_use, const CheckpointInfo* lineage) {
  RETURN_IF_ERROR(ValidateTenantName("tenant", tenant));
  RETURN_IF_ERROR(ValidateIdentifier("job_id", job_id, kMaxJobIdLength));
  if (header.step() < 0 || header.step() > 99'999'999) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.step must be 0..99999999 (got ", header.step(), ")"));
  }
  ASSIGN_OR_RETURN(const int64_t total,
                   ValidateFiles(header.files(), kMaxCheckpointFiles,
                                 options_.max_checkpoint_bytes, "checkpoint"));
  const int manifest = FindFile(header.files(), kCheckpointManifest);
  if (manifest < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.files must include ", kCheckpointManifest,
        " (written last by the trainer, with every file's size and sha256)"));
  }
  if (header.files(manifest).size() > kMaxCheckpointManifestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header.files: ", kCheckpointManifest,
                                                   " must be at most ",
                                                   kMaxCheckpointManifestBytes, " bytes"));
  }
  const StepKey key(job_id, header.step());
  {
    absl::MutexLock lock(&mu_);
    if (auto job = steps_.find(job_id); job != steps_.end()) {
      if (auto s = job->second.find(header.step()); s != job->second.end()) {
        const CheckpointInfo& existing = checkpoints_.at(s->second);
        // A step is checkpointed once. The same upload again (its answer was lost), or the
        // same step from a later attempt of the job (a restart replays it bit for bit: same
        // weights, other lineage), gets the committed checkpoint back.
        if (existing.tenant() == tenant && (SameFiles(existing.files(), header.files()) ||
                                            SameModel(existing.files(), header.files()))) {
          return existing;
        }
        return absl::AlreadyExistsError(absl::StrCat(
            "job ", job_id, " already has a committed checkpoint at step ", header.step(), " (",
            existing.id(), ") with different weights; a step is checkpointed once"));
      }
    }
    if (!checkpoints_in_flight_.insert(key).second) {
      return absl::AbortedError(absl::StrCat("a checkpoint of job ", job_id, " at step ",
                                             header.step(),
                                             " is being uploaded already; retry when it "
                                             "finishes"));
    }
  }
  absl::Cleanup release = [&] {
    absl::MutexLock lock(&mu_);
    checkpoints_in_flight_.erase(key);
  };
  const std::string prefix =
      absl::StrCat("checkpoint of job ", job_id, " step ", header.step(), ": ");
  ASSIGN_OR_RETURN(const std::string incoming, NewIncomingDir(tenant));
  absl::Cleanup remove_incoming = [&] { RemoveTree(incoming); };
  {
    UploadWriter writer(incoming, header.files());
    RETURN_IF_ERROR(WithPrefix(ReceiveChunks(writer, next), prefix));
  }
  ASSIGN_OR_RETURN(std::string manifest_text,
                   ReadFile(JoinPath(incoming, kCheckpointManifest)));
  RETURN_IF_ERROR(WithPrefix(VerifyCheckpointManifest(manifest_text, header.files()), prefix));

  ASSIGN_OR_RETURN(std::string random, SecureRandomBytes(8));
  CheckpointInfo info;
  if (lineage != nullptr) {
    info.set_stage(lineage->stage());
    info.set_parent(lineage->parent());
    *info.mutable_shape() = lineage->shape();
  }
  info.set_id(absl::StrCat("c-", HexEncode(random)));
  info.set_job_id(job_id);
  info.set_tenant(tenant);
  info.set_attempt(attempt);
  info.set_step(header.step());
  info.set_bytes(total);
  *info.mutable_files() = header.files();
  *info.mutable_create_time() = ToProtoTime(clock_->Now());
  info.set_path(CheckpointRel(tenant, job_id, header.step()));
  const std::string dest = Abs(info.path());
  RETURN_IF_ERROR(Place(incoming, dest));

  // Retention rides in the same batch: the new row and the deletions commit together, rows
  // before files.
  std::vector<CheckpointInfo> doomed;
  for (CheckpointInfo& c : RetentionCandidates(job_id, keep_last, info)) {
    if (in_use && in_use(c.id())) continue;
    doomed.push_back(std::move(c));
  }
  WriteBatch batch;
  batch.put_checkpoints.push_back(info);
  for (const CheckpointInfo& c : doomed) batch.delete_checkpoints.push_back(c.id());
  if (absl::Status s = store_->CommitSync(std::move(batch)); !s.ok()) {
    RemoveTree(dest);
    return WithPrefix(s, prefix);
  }
  {
    absl::MutexLock lock(&mu_);
    checkpoints_[info.id()] = info;
    steps_[job_id][info.step()] = info.id();
    for (const CheckpointInfo& c : doomed) {
      checkpoints_.erase(c.id());
      auto job = steps_.find(c.job_id());
      if (job != steps_.end() && job->second.count(c.step()) &&
          job->second[c.step()] == c.id()) {
        job->second.erase(c.step());
      }
    }
  }
  FORGE_LOG(INFO) << "event=checkpoint_committed job=" << job_id << " attempt=" << attempt
                  << " step=" << info.step() << " checkpoint=" << info.id()
                  << " files=" << info.files_size() << " bytes=" << info.bytes();
  for (const CheckpointInfo& c : doomed) {
    RemoveTree(Abs(c.path()));
    FORGE_LOG(INFO) << "event=checkpoint_deleted job=" << c.job_id() << " step=" << c.step()
                    << " checkpoint=" << c.id() << " reason=retention keep_last=" << keep_last;
  }
  return info;
}

std::vector<CheckpointInfo> StorageGateway::Impl::ListCheckpoints(
    const std::string& tenant, absl::string_view job_id) const {
  std::vector<CheckpointInfo> out;
  absl::MutexLock lock(&mu_);
  auto visible = [&](const CheckpointInfo& c) { return tenant.empty() || c.tenant() == tenant; };
  if (!job_id.empty()) {
    auto job = steps_.find(job_id);
    if (job == steps_.end()) return out;
    for (auto s = job->second.rbegin(); s != job->second.rend(); ++s) {
      const CheckpointInfo& c = checkpoints_.at(s->second);
      if (visible(c)) out.push_back(c);
    }
    return out;
  }
  for (const auto& [id, c] : checkpoints_) {
    if (visible(c)) out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) {
    const absl::Time ta = FromProtoTime(a.create_time()), tb = FromProtoTime(b.create_time());
    if (ta != tb) return ta > tb;
    if (a.job_id() != b.job_id()) return a.job_id() < b.job_id();
    return a.step() > b.step();
  });
  return out;
}

absl::StatusOr<CheckpointInfo> StorageGateway::Impl::GetCheckpoint(const std::string& tenant,
                                                                  absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = checkpoints_.find(id);
  if (it == checkpoints_.end() || (!tenant.empty() && it->second.tenant() != tenant)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", Quote(id),
                                            " not found; list committed checkpoints with "
                                            "`forge checkpoints`"));
  }
  return it->second;
}

absl::StatusOr<CheckpointInfo> StorageGateway::Impl::LatestCheckpoint(
    absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  auto job = steps_.find(job_id);
  if (job == steps_.end() || job->second.empty()) {
    return absl::NotFoundError(
        absl::StrCat("job ", Quote(job_id), " has no committed checkpoint"));
  }
  return checkpoints_.at(job->second.rbegin()->second);
}

absl::Status StorageGateway::Impl::SendCheckpoint(const std::string& tenant,
                                                  absl::string_view id,
                                                  const std::vector<std::string>& files,
                                                  const WriteTransfer& write) const {
  ASSIGN_OR_RETURN(CheckpointInfo info, GetCheckpoint(tenant, id));
  std::vector<FileInfo> selected;
  if (files.empty()) {
    selected.assign(info.files().begin(), info.files().end());
  } else {
    std::set<std::string> seen;
    for (size_t i = 0; i < files.size(); ++i) {
      const int j = FindFile(info.files(), files[i]);
      if (j < 0) {
        std::vector<std::string> names;
        for (const FileInfo& f : info.files()) names.push_back(f.name());
        return absl::NotFoundError(absl::StrCat("files[", i, "]: checkpoint ", info.id(),
                                                " has no file ", Quote(files[i]), " (it has ",
                                                absl::StrJoin(names, ", "), ")"));
      }
      if (seen.insert(files[i]).second) selected.push_back(info.files(j));
    }
  }
  return SendFiles(Abs(info.path()), selected, options_.chunk_bytes, write);
}

// --- Logs ------------------------------------------------------------------------------------

absl::Status StorageGateway::Impl::AppendLog(const std::string& tenant, const std::string& job_id,
                                             absl::string_view lines) {
  RETURN_IF_ERROR(ValidateTenantName("tenant", tenant));
  RETURN_IF_ERROR(ValidateIdentifier("job_id", job_id, kMaxJobIdLength));
  if (lines.empty()) return absl::OkStatus();
  std::string data(lines);
  if (data.back() != '\n') data.push_back('\n');  // readers only ever see whole lines
  const std::string path = LogPath(tenant, job_id);
  RETURN_IF_ERROR(MakeDirs(ParentOf(path)));
  // One write(2) per append under log_mu_: concurrent appenders never interleave a line.
  absl::MutexLock lock(&log_mu_);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot open", path);
  absl::Status s = WriteAll(fd, data, path);
  ::close(fd);
  return s;
}

absl::StatusOr<std::string> StorageGateway::Impl::ReadLog(const std::string& tenant,
                                                          const std::string& job_id,
                                                          int64_t offset, int64_t max_bytes,
                                                          int64_t* next_offset) const {
  RETURN_IF_ERROR(ValidateTenantName("tenant", tenant));
  RETURN_IF_ERROR(ValidateIdentifier("job_id", job_id, kMaxJobIdLength));
  if (offset < 0 || max_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log read: offset must be >= 0 and max_bytes > 0 (got offset ", offset,
        ", max_bytes ", max_bytes, ")"));
  }
  *next_offset = offset;
  const std::string path = LogPath(tenant, job_id);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if (offset == 0) return std::string();  // nothing logged yet
    return absl::OutOfRangeError(absl::StrCat("log of job ", job_id, " has no byte at offset ",
                                              offset, "; read from offset 0"));
  }
  if (fd < 0) return ErrnoStatus("cannot open", path);
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat", path);
  if (offset > st.st_size) {
    return absl::OutOfRangeError(absl::StrCat(
        "log of job ", job_id, " is ", st.st_size, " bytes; offset ", offset,
        " is past its end (continue from the next_offset of the previous read)"));
  }
  const int64_t avail = st.st_size - offset;
  ASSIGN_OR_RETURN(std::string data, ReadAt(fd, offset, std::min(avail, max_bytes), path));
  size_t end = data.rfind('\n');
  if (end == std::string::npos && static_cast<int64_t>(data.size()) < avail) {
    // One line longer than max_bytes: return it whole rather than never progressing.
    ASSIGN_OR_RETURN(data, ReadAt(fd, offset, std::min(avail, kMaxLogLineBytes), path));
    end = data.find('\n');
    if (end == std::string::npos && static_cast<int64_t>(data.size()) == kMaxLogLineBytes) {
      end = data.size() - 1;  // a pathological line: split it rather than stall
    }
  }
  if (end == std::string::npos) return std::string();  // a line still being written
  data.resize(end + 1);
  *next_offset = offset + static_cast<int64_t>(data.size());
  return data;
}

absl::StatusOr<std::string> StorageGateway::Impl::ReadLogTail(const std::string& tenant,
                                                              const std::string& job_id,
                                                              int64_t max_bytes,
                                                              bool* truncated) const {
  RETURN_IF_ERROR(ValidateTenantName("tenant", tenant));
  RETURN_IF_ERROR(ValidateIdentifier("job_id", job_id, kMaxJobIdLength));
  *truncated = false;
  if (max_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("log tail: max_bytes must be > 0 (got ", max_bytes, ")"));
  }
  const std::string path = LogPath(tenant, job_id);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::string();
  if (fd < 0) return ErrnoStatus("cannot open", path);
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat", path);
  const int64_t start = std::max<int64_t>(0, st.st_size - max_bytes);
  ASSIGN_OR_RETURN(std::string data, ReadAt(fd, start, st.st_size - start, path));
  if (start > 0) {  // drop the partial first line
    *truncated = true;
    const size_t nl = data.find('\n');
    data.erase(0, nl == std::string::npos ? data.size() : nl + 1);
  }
  const size_t end = data.rfind('\n');  // and a line still being written
  data.resize(end == std::string::npos ? 0 : end + 1);
  return data;
}

// --- StorageGateway --------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<StorageGateway>> StorageGateway::Open(
    StorageGatewayOptions options, Store* store) {
  if (options.root.empty()) {
    return absl::InvalidArgumentError("storage gateway: root must name the storage root");
  }
  if (store == nullptr) return absl::InvalidArgumentError("storage gateway: store is null");
  if (options.chunk_bytes < 1 || options.chunk_bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "storage gateway: chunk_bytes must be 1..", kMaxChunkBytes, " (got ",
        options.chunk_bytes, ")"));
  }
  while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
  auto impl = std::make_unique<Impl>(std::move(options), store);
  RETURN_IF_ERROR(impl->Recover());
  return std::unique_ptr<StorageGateway>(new StorageGateway(std::move(impl)));
}

StorageGateway::StorageGateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StorageGateway::~StorageGateway() = default;

absl::StatusOr<DatasetInfo> StorageGateway::RegisterDataset(
    const std::string& tenant, const forge::v1::DatasetHeader& header,
    const NextMessage<forge::v1::DatasetUpload>& next) {
  absl::StatusOr<DatasetInfo> info = impl_->RegisterDataset(tenant, header, next);
  if (!info.ok()) {
    FORGE_LOG(WARNING) << "event=dataset_register_failed tenant=" << tenant
                       << " dataset=" << Quote(header.name())
                       << " code=" << absl::StatusCodeToString(info.status().code())
                       << " error=\"" << info.status().message() << "\"";
  }
  return info;
}
std::vector<DatasetInfo> StorageGateway::ListDatasets(const std::string& tenant) const {
  return impl_->ListDatasets(tenant);
}
absl::StatusOr<DatasetInfo> StorageGateway::GetDataset(const std::string& tenant,
                                                       absl::string_view name) const {
  return impl_->GetDataset(tenant, name);
}
absl::StatusOr<Dataset> StorageGateway::OpenDataset(const std::string& tenant,
                                                    absl::string_view name) const {
  RETURN_IF_ERROR(impl_->GetDataset(tenant, name).status());
  return Dataset::Open(JoinPath(root(), absl::StrCat("tenants/", tenant, "/datasets/", name)),
                       VerifyMode::kHeaders);
}

absl::Status StorageGateway::SendDataset(const std::string& tenant, absl::string_view name,
                                         const WriteTransfer& write) const {
  return impl_->SendDataset(tenant, name, write);
}
absl::StatusOr<CheckpointInfo> StorageGateway::ReceiveCheckpoint(
    const std::string& tenant, const std::string& job_id, int32_t attempt, int keep_last,
    const forge::v1::CheckpointHeader& header,
    const NextMessage<forge::v1::CheckpointUpload>& next,
    const std::function<bool(const std::string& checkpoint_id)>& in_use,
    const CheckpointInfo* lineage) {
  absl::StatusOr<CheckpointInfo> info = impl_->ReceiveCheckpoint(tenant, job_id, attempt,
                                                                 keep_last, header, next, in_use,
                                                                 lineage);
  if (!info.ok()) {
    FORGE_LOG(WARNING) << "event=checkpoint_upload_failed job=" << Quote(job_id)
                       << " attempt=" << attempt << " step=" << header.step()
                       << " code=" << absl::StatusCodeToString(info.status().code())
                       << " error=\"" << info.status().message() << "\"";
  }
  return info;
}
std::vector<CheckpointInfo> StorageGateway::ListCheckpoints(const std::string& tenant,
                                                            absl::string_view job_id) const {
  return impl_->ListCheckpoints(tenant, job_id);
}
absl::StatusOr<CheckpointInfo> StorageGateway::GetCheckpoint(const std::string& tenant,
                                                             absl::string_view id) const {
  return impl_->GetCheckpoint(tenant, id);
}
absl::StatusOr<CheckpointInfo> StorageGateway::LatestCheckpoint(absl::string_view job_id) const {
  return impl_->LatestCheckpoint(job_id);
}
absl::Status StorageGateway::SendCheckpoint(const std::string& tenant, absl::string_view id,
                                            const std::vector<std::string>& files,
                                            const WriteTransfer& write) const {
  return impl_->SendCheckpoint(tenant, id, files, write);
}
absl::Status StorageGateway::AppendLog(const std::string& tenant, const std::string& job_id,
                                       absl::string_view lines) {
  return impl_->AppendLog(tenant, job_id, lines);
}
absl::StatusOr<std::string> StorageGateway::ReadLogTail(const std::string& tenant,
                                                        const std::string& job_id,
                                                        int64_t max_bytes, bool* truncated) const {
  return impl_->ReadLogTail(tenant, job_id, max_bytes, truncated);
}

absl::StatusOr<std::string> StorageGateway::ReadLog(const std::string& tenant,
                                                    const std::string& job_id, int64_t offset,
                                                    int64_t max_bytes,
                                                    int64_t* next_offset) const {
  return impl_->ReadLog(tenant, job_id, offset, max_bytes, next_offset);
}
const std::string& StorageGateway::root() const { return impl_->root(); }

}  // namespace forge::coordinator
