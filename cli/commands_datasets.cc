// forge data register, forge data list.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/catalog_view.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/dataset.h"
#include "common/file_transfer.h"
#include "common/file_util.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

namespace fs = std::filesystem;

struct LocalFile {
  std::string name, path;
  FileDigest digest;
};

// The files of the prepared dataset in `dir`, in upload order: manifest.json, then the shards
// it lists. Other entries are not part of the dataset and are left out (a note names them).
absl::StatusOr<std::vector<LocalFile>> DatasetFiles(const CommandEnv& env, const std::string& dir) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(dir + "/" + kManifestFileName));
  const nlohmann::json manifest = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> names = {kManifestFileName};
  if (manifest.is_object() && manifest.contains("shards") && manifest["shards"].is_array()) {
    for (const nlohmann::json& shard : manifest["shards"]) {
      if (shard.is_object() && shard.contains("file") && shard["file"].is_string()) {
        names.push_back(shard["file"].get<std::string>());
      }
    }
  }
  std::vector<LocalFile> files;
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::error_code ec;
    if (!IsPlainFileName(name) || !fs::is_regular_file(path, ec)) {
      return UsageError(absl::StrCat(path, " is not a plain file; DIR must be a directory ",
                                     "written by `forge data prepare --out DIR`"));
    }
    files.push_back({name, path, {}});
  }
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    bool listed = false;
    for (const std::string& n : names) listed = listed || n == name;
    if (!listed && entry.is_regular_file(ec)) {
      *env.err << "forge: skipping " << entry.path().string()
               << ": not part of the dataset (its manifest does not list it)\n";
    }
  }
  return files;
}

// One upload of `files` as dataset `name`.
absl::StatusOr<forge::v1::DatasetInfo> Upload(CoordinatorClient& client, const std::string& name,
                                              const std::vector<LocalFile>& files) {
  forge::v1::DatasetInfo info;
  auto context = client.NewTransferContext();
  IdleWatchdog watchdog(context.get(), client.options().timeout);
  auto writer = client.data().RegisterDataset(context.get(), &info);

  forge::v1::DatasetUpload header;
  header.mutable_header()->set_name(name);
  for (const LocalFile& f : files) {
    forge::v1::FileInfo* fi = header.mutable_header()->add_files();
    fi->set_name(f.name);
    fi->set_size(f.digest.size);
    fi->set_sha256(f.digest.sha256);
  }
  // A failed Write means the stream is over; Finish() then says why.
  bool open = writer->Write(header);
  absl::Status local;
  for (int i = 0; open && local.ok() && i < static_cast<int>(files.size()); ++i) {
    local = ForEachChunk(files[i].path, files[i].digest.size,
                         [&](int64_t offset, absl::string_view data) -> absl::Status {
                           forge::v1::DatasetUpload chunk;
                           chunk.mutable_chunk()->set_file(i);
                           chunk.mutable_chunk()->set_offset(offset);
                           chunk.mutable_chunk()->set_data(std::string(data));
                           open = writer->Write(chunk);
                           watchdog.Kick();
                           return open ? absl::OkStatus() : absl::CancelledError("stream closed");
                         });
    if (absl::IsCancelled(local)) local = absl::OkStatus();  // Finish() tells why
  }
  if (!local.ok()) {
    context->TryCancel();
    writer->Finish().ok();
    return local;
  }
  if (open) writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (watchdog.fired()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the upload made no progress for ", absl::FormatDuration(client.options().timeout),
        "; the coordinator at ", client.options().coordinator,
        " stopped answering (raise --timeout if it is busy)"));
  }
  RETURN_IF_ERROR(client.Finish(status));
  return info;
}

}  // namespace

absl::Status RunDataRegister(const CommandEnv& env, const std::string& name, const std::string& dir,
                             OutputFormat format, const RegisterOptions& options) {
  if (absl::Status s = ValidateResourceName("NAME", name); !s.ok()) {
    return UsageError(s.message());
  }
  // Everything about DIR is checked here, before a byte is sent: a broken dataset must never
  // reach the coordinator half-uploaded.
  absl::StatusOr<Dataset> dataset = Dataset::Open(dir, VerifyMode::kFull);
  if (absl::IsNotFound(dataset.status())) {
    return UsageError(absl::StrCat(dir, " holds no ", kManifestFileName,
                                   ": DIR must be a directory written by `forge data prepare "
                                   "--out DIR`"));
  }
  if (!dataset.ok()) {
    return UsageError(absl::StrCat("refusing to register ", dir, ": ", dataset.status().message(),
                                   "\nPrepare it again with `forge data prepare --overwrite`."));
  }
  if (dataset->name() != name) {
    *env.err << "forge: note: " << dir << " was prepared as \"" << dataset->name()
             << "\"; registering it as \"" << name << "\"\n";
  }
  ASSIGN_OR_RETURN(std::vector<LocalFile> files, DatasetFiles(env, dir));
  int64_t total = 0;
  for (LocalFile& f : files) {
    absl::StatusOr<FileDigest> digest = DigestFile(f.path);
    if (!digest.ok()) return UsageError(digest.status().message());
    f.digest = *std::move(digest);
    total += f.digest.size;
  }

  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  *env.err << "forge: uploading " << files.size() << " files (" << FormatBytes(total)
           << ") as dataset " << name << "\n";
  absl::StatusOr<forge::v1::DatasetInfo> info;
  for (int attempt = 1;; ++attempt) {
    info = Upload(*client, name, files);
    if (info.ok() || !absl::IsUnavailable(info.status()) || attempt >= options.max_tries) break;
    *env.err << "forge: the coordinator is unavailable; uploading again in "
             << absl::FormatDuration(options.backoff) << " (try " << attempt + 1 << " of "
             << options.max_tries << ")\n";
    env.sleep(options.backoff);
  }
  if (!info.ok()) return info.status();
  forge::v1::ListDatasetsResponse one;
  *one.add_datasets() = *info;
  return WriteOutput(*env.out, format, *info, [&] { return DatasetsTable(one, env.clock->Now()); });
}

absl::Status RunDataList(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListDatasetsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->data().ListDatasets(context.get(), forge::v1::ListDatasetsRequest(), &response)));
  if (format == OutputFormat::kTable && response.datasets().empty()) {
    *env.err << "no datasets registered; upload one with `forge data register NAME DIR`\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return DatasetsTable(response, env.clock->Now()); });
}

}  // namespace forge::cli
