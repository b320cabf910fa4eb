// forge checkpoints, forge export.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/catalog_view.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/crypto.h"
#include "common/file_transfer.h"
#include "common/file_util.h"
#include "common/spec_names.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kModelFile[] = "model.safetensors";
constexpr char kManifestFile[] = "MANIFEST.json";

absl::Status Corrupt(const std::string& checkpoint_id, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("checkpoint ", checkpoint_id, ": ", what,
                                          "; nothing was written. Try again; if it persists, the "
                                          "checkpoint is damaged on the coordinator"));
}

// Checks every received file but the manifest against the checkpoint's MANIFEST.json
// ({"files": [{"name", "bytes", "sha256"}], "manifest_sha256": ...}). A file the manifest does
// not list (config.json, written beside the checkpoint) was checked against the transfer
// header only; a note says so.
absl::Status CheckAgainstManifest(const CommandEnv& env, const std::string& checkpoint_id,
                                  const TransferReceiver& receiver) {
  ASSIGN_OR_RETURN(const std::string text, receiver.Contents(kManifestFile));
  Json manifest = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_array()) {
    return Corrupt(checkpoint_id, "MANIFEST.json is not {\"files\": [...]}");
  }
  if (auto hash = manifest.find("manifest_sha256"); hash != manifest.end()) {
    Json rest = manifest;
    rest.erase("manifest_sha256");
    if (!hash->is_string() || *hash != Sha256Hex(rest.dump())) {
      return Corrupt(checkpoint_id, "MANIFEST.json does not match its own manifest_sha256");
    }
  }
  for (const forge::v1::FileInfo& got : receiver.files()) {
    if (got.name() == kManifestFile) continue;
    const Json* entry = nullptr;
    for (const Json& e : manifest["files"]) {
      if (e.is_object() && e.value("name", Json()) == got.name()) entry = &e;
    }
    if (entry == nullptr) {
      if (got.name() == kModelFile) {
        return Corrupt(checkpoint_id, "MANIFEST.json does not list model.safetensors");
      }
      *env.err << "forge: note: " << got.name()
               << " is not listed in the checkpoint's MANIFEST.json; it was checked against the "
                  "transfer's sha256 only\n";
      continue;
    }
    const Json bytes = entry->value("bytes", Json());
    const Json sha = entry->value("sha256", Json());
    if (!bytes.is_number_integer() || bytes.get<int64_t>() != got.size() || !sha.is_string() ||
        sha.get<std::string>() != got.sha256()) {
      return Corrupt(checkpoint_id,
                     absl::StrCat(got.name(), " (", got.size(), " bytes, sha256 ", got.sha256(),
                                  ") does not match MANIFEST.json (", entry->dump(), ")"));
    }
  }
  return absl::OkStatus();
}

// A DATA_LOSS from the receiver, in the words of Corrupt(); other statuses as they are.
absl::Status Wrap(const std::string& checkpoint_id, absl::Status status) {
  return absl::IsDataLoss(status) ? Corrupt(checkpoint_id, status.message()) : status;
}

// Downloads into `receiver`; the files are verified against the header but not committed.
absl::Status Download(CoordinatorClient& client, const std::string& checkpoint_id,
                      TransferReceiver& receiver) {
  forge::v1::DownloadCheckpointRequest request;
  request.set_checkpoint_id(checkpoint_id);
  for (const char* f : kExportFiles) request.add_files(f);
  auto context = client.NewTransferContext();
  IdleWatchdog watchdog(context.get(), client.options().timeout);
  auto reader = client.checkpoints().DownloadCheckpoint(context.get(), request);
  forge::v1::FileTransfer message;
  absl::Status local;
  bool have_header = false;
  while (local.ok() && reader->Read(&message)) {
    watchdog.Kick();
    if (message.has_header()) {
      if (have_header) {
        local = Corrupt(checkpoint_id, "the coordinator sent a second header");
        break;
      }
      have_header = true;
      local = Wrap(checkpoint_id, receiver.Begin(message.header()));
    } else if (!have_header) {
      local = Corrupt(checkpoint_id, "the coordinator sent data before the file list");
    } else {
      local = Wrap(checkpoint_id, receiver.Add(message.chunk()));
    }
  }
  if (!local.ok()) {
    context->TryCancel();
    reader->Finish().ok();
    return local;
  }
  const grpc::Status status = reader->Finish();
  if (watchdog.fired()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the download made no progress for ", absl::FormatDuration(client.options().timeout),
        "; the coordinator at ", client.options().coordinator,
        " stopped sending (raise --timeout if it is busy)"));
  }
  RETURN_IF_ERROR(client.Finish(status));
  if (!have_header) return Corrupt(checkpoint_id, "the coordinator sent no file list");
  for (const char* want : kExportFiles) {
    bool found = false;
    for (const forge::v1::FileInfo& f : receiver.files()) found = found || f.name() == want;
    if (!found) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", checkpoint_id, " has no ", want,
                       "; it cannot be exported as a Hugging "
                       "Face model (was it written by an older worker?)"));
    }
  }
  return Wrap(checkpoint_id, receiver.Finish());
}

}  // namespace

absl::Status RunCheckpoints(const CommandEnv& env, const std::string& job_id, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListCheckpointsRequest request;
  request.set_job_id(job_id);
  forge::v1::ListCheckpointsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(
      client->Finish(client->checkpoints().ListCheckpoints(context.get(), request, &response)));
  SortNewestFirst(&response);
  if (format == OutputFormat::kTable && response.checkpoints().empty()) {
    *env.err << (job_id.empty() ? std::string("no checkpoints")
                                : absl::StrCat("no checkpoints of job ", job_id))
             << "\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return CheckpointsTable(response, env.clock->Now()); });
}

absl::Status RunModels(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListModelsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->models().ListModels(context.get(), forge::v1::ListModelsRequest(), &response)));
  if (format == OutputFormat::kTable && response.models().empty() &&
      response.channels().empty()) {
    *env.err << "no models; register a checkpoint with: forge models register NAME "
                "--checkpoint ID [--stage pre-training|mid-training|post-training]\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return ModelsTable(response, env.clock->Now()); });
}

absl::Status RunModelRegister(const CommandEnv& env, const std::string& name,
                              const std::string& checkpoint, const std::string& stage,
                              const std::string& note, OutputFormat format) {
  forge::v1::RegisterModelRequest request;
  request.set_name(name);
  request.set_checkpoint(checkpoint);
  request.set_note(note);
  if (!stage.empty()) {
    absl::StatusOr<forge::v1::Stage> s = ParseStage(stage);
    if (!s.ok()) return UsageError(absl::StrCat("--stage: ", s.status().message()));
    request.set_stage(*s);
  }
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ModelEntry entry;
  auto context = client->NewContext();
  RETURN_IF_ERROR(
      client->Finish(client->models().RegisterModel(context.get(), request, &entry)));
  forge::v1::ListModelsResponse one;
  *one.add_models() = entry;
  return WriteOutput(*env.out, format, entry,
                     [&] { return ModelsTable(one, env.clock->Now()); });
}

absl::Status RunExport(const CommandEnv& env, const std::string& checkpoint_id,
                       const std::string& dir, bool force) {
  if (dir.empty()) return UsageError("DIR is empty; give the directory to export into");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return UsageError(absl::StrCat(dir,
                                   " exists and is not a directory; give a directory for "
                                   "DIR (it is created if missing)"));
  }
  const std::string model_path = absl::StrCat(dir, "/", kModelFile);
  if (!force && fs::exists(model_path, ec)) {
    return UsageError(absl::StrCat(model_path,
                                   " already exists; pass --force to replace it, or "
                                   "export into another DIR"));
  }
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  const bool created = !fs::exists(dir, ec);
  if (absl::Status s = MakeDirs(dir); !s.ok()) {
    return UsageError(absl::StrCat("cannot create DIR: ", s.message()));
  }
  absl::Status result;
  {
    TransferReceiver receiver(dir);  // removes its temporaries when it goes out of scope
    result = Download(*client, checkpoint_id, receiver);
    if (result.ok()) result = CheckAgainstManifest(env, checkpoint_id, receiver);
    if (result.ok()) result = receiver.Commit({"config.json", kModelFile});
    if (result.ok()) {
      Table table({"FILE", "SIZE", "SHA256"});
      for (const forge::v1::FileInfo& f : receiver.files()) {
        if (f.name() == kManifestFile) continue;
        table.AddRow({absl::StrCat(dir, "/", f.name()), FormatBytes(f.size()), f.sha256()});
      }
      *env.out << table.Render();
      *env.err << "forge: exported checkpoint " << checkpoint_id << " to " << dir
               << " (verified against its MANIFEST.json); load it with "
                  "transformers.GPT2LMHeadModel.from_pretrained(\""
               << dir << "\")\n";
    }
  }
  if (!result.ok() && created) fs::remove(dir, ec);  // only if still empty
  return result;
}

}  // namespace forge::cli
