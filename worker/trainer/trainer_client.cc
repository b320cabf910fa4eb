#include "worker/trainer/trainer_client.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_transfer.h"
#include "common/file_util.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace forge::trainer {
namespace {

bool Transient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsAborted(s) ||
         absl::IsResourceExhausted(s);
}

}  // namespace

TrainerClient::TrainerClient(TrainerClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // Reconnect quickly after a coordinator restart (gRPC's default backoff grows to minutes).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  stub_ = forge::v1::TrainerService::NewStub(grpc::CreateCustomChannel(
      options_.coordinator, grpc::InsecureChannelCredentials(), args));
}

void TrainerClient::Prepare(grpc::ClientContext* ctx, absl::Duration timeout) const {
  ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.rank_token));
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::Status TrainerClient::Retry(const std::string& what,
                                  const std::function<absl::Status()>& call) const {
  const absl::Time give_up = absl::Now() + options_.patience;
  absl::Duration delay = absl::Milliseconds(200);
  while (true) {
    absl::Status s = call();
    if (s.ok() || !Transient(s)) return s;
    if (absl::Now() + delay > give_up) {
      return absl::UnavailableError(absl::StrCat(what, ": the coordinator did not answer within ",
                                                 absl::FormatDuration(options_.patience), " (",
                                                 s.message(), ")"));
    }
    FORGE_LOG(WARNING) << "event=coordinator_retry what=" << what << " error=" << s;
    absl::SleepFor(delay);
    delay = std::min(delay * 2, absl::Seconds(3));
  }
}

absl::Status TrainerClient::RendezvousSet(const std::string& key, const std::string& value) {
  return Retry("rendezvous set", [&] {
    forge::v1::RendezvousSetRequest req;
    *req.mutable_rank() = options_.rank;
    req.set_key(key);
    req.set_value(value);
    forge::v1::RendezvousSetResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.call_timeout);
    return FromGrpcStatus(stub_->RendezvousSet(&ctx, req, &resp));
  });
}

absl::StatusOr<std::string> TrainerClient::RendezvousGet(const std::string& key,
                                                         absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string value;
  absl::Status s = Retry("rendezvous get", [&]() -> absl::Status {
    const absl::Duration left = std::max(absl::ZeroDuration(), deadline - absl::Now());
    forge::v1::RendezvousGetRequest req;
    *req.mutable_rank() = options_.rank;
    req.set_key(key);
    req.set_timeout_ms(absl::ToInt64Milliseconds(left));
    forge::v1::RendezvousGetResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, left + absl::Seconds(5));
    absl::Status st = FromGrpcStatus(stub_->RendezvousGet(&ctx, req, &resp));
    if (absl::IsDeadlineExceeded(st) && absl::Now() >= deadline) {
      // The key never came: a peer rank did not start. Not transient any more.
      return absl::FailedPreconditionError(
          absl::StrCat("rendezvous: key ", key, " not set within ",
                       absl::FormatDuration(timeout), " (a peer rank did not start)"));
    }
    if (st.ok()) value = resp.value();
    return st;
  });
  if (!s.ok()) return s;
  return value;
}

absl::StatusOr<forge::v1::ProgressResponse> TrainerClient::ReportProgress(
    forge::v1::ProgressReport report) {
  *report.mutable_rank() = options_.rank;
  forge::v1::ProgressResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx, absl::Seconds(5));
  RETURN_IF_ERROR(FromGrpcStatus(stub_->ReportProgress(&ctx, report, &resp)));
  return resp;
}

absl::Status TrainerClient::FinishJob(forge::v1::FinishJobRequest request) {
  *request.mutable_rank() = options_.rank;
  return Retry("finish", [&] {
    forge::v1::FinishJobResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.call_timeout);
    return FromGrpcStatus(stub_->FinishJob(&ctx, request, &resp));
  });
}

absl::StatusOr<forge::v1::CheckpointInfo> TrainerClient::UploadCheckpoint(const std::string& dir,
                                                                          int64_t step) {
  ASSIGN_OR_RETURN(std::string manifest_text, ReadFile(dir + "/MANIFEST.json"));
  nlohmann::json manifest = nlohmann::json::parse(manifest_text, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("files")) {
    return absl::DataLossError(absl::StrCat(dir, "/MANIFEST.json is not a checkpoint manifest"));
  }
  forge::v1::CheckpointHeader header;
  *header.mutable_rank() = options_.rank;
  header.set_step(step);
  std::vector<std::string> names;
  for (const auto& f : manifest["files"]) names.push_back(f["name"].get<std::string>());
  names.push_back("MANIFEST.json");
  // Files are hashed and sent in pieces straight from disk: a checkpoint is never held in
  // memory whole (the snapshot buffer already is).
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(FileDigest digest, DigestFile(dir + "/" + name));
    forge::v1::FileInfo* info = header.add_files();
    info->set_name(name);
    info->set_size(digest.size);
    info->set_sha256(std::move(digest.sha256));
  }
  forge::v1::CheckpointInfo result;
  RETURN_IF_ERROR(Retry("checkpoint upload", [&]() -> absl::Status {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Minutes(30));
    auto writer = stub_->UploadCheckpoint(&ctx, &result);
    forge::v1::CheckpointUpload msg;
    *msg.mutable_header() = header;
    absl::Status sent = writer->Write(msg) ? absl::OkStatus()
                                           : absl::UnavailableError("upload stream closed");
    for (int f = 0; sent.ok() && f < header.files_size(); ++f) {
      const forge::v1::FileInfo& info = header.files(f);
      sent = ForEachChunk(dir + "/" + info.name(), info.size(),
                          [&](int64_t offset, absl::string_view data) -> absl::Status {
                            forge::v1::CheckpointUpload chunk;
                            chunk.mutable_chunk()->set_file(f);
                            chunk.mutable_chunk()->set_offset(offset);
                            chunk.mutable_chunk()->set_data(data.data(), data.size());
                            if (writer->Write(chunk)) return absl::OkStatus();
                            return absl::UnavailableError("upload stream closed");
                          });
    }
    if (!sent.ok() && !absl::IsUnavailable(sent)) {  // a local file problem, not the stream
      ctx.TryCancel();
      writer->Finish();
      return sent;
    }
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }));
  return result;
}

absl::Status TrainerClient::Download(
    const std::string& what, const std::string& dir,
    const std::function<std::unique_ptr<grpc::ClientReader<forge::v1::FileTransfer>>(
        grpc::ClientContext*)>& open) {
  if (FileExists(dir + "/.complete")) return absl::OkStatus();
  RETURN_IF_ERROR(MakeDirs(dir, 0700));
  return Retry(what, [&]() -> absl::Status {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Minutes(30));
    auto reader = open(&ctx);
    // Verified temporaries (size and sha256 checked as the data arrives), renamed into place
    // only when every file is complete.
    TransferReceiver receiver(dir);
    absl::Status received;
    forge::v1::FileTransfer msg;
    bool began = false;
    while (received.ok() && reader->Read(&msg)) {
      if (msg.has_header()) {
        received = began ? absl::DataLossError(absl::StrCat(what, ": a second header"))
                         : receiver.Begin(msg.header());
        began = true;
      } else {
        received = began ? receiver.Add(msg.chunk())
                         : absl::DataLossError(absl::StrCat(what, ": a chunk before the header"));
      }
    }
    if (!received.ok()) {
      ctx.TryCancel();
      reader->Finish();
      return received;
    }
    RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
    if (!began) return absl::DataLossError(absl::StrCat(what, ": no header"));
    RETURN_IF_ERROR(receiver.Finish());
    std::vector<std::string> names;
    for (const forge::v1::FileInfo& f : receiver.files()) names.push_back(f.name());
    RETURN_IF_ERROR(receiver.Commit(names));
    return WriteFileAtomic(dir + "/.complete", "");
  });
}

absl::Status TrainerClient::FetchDataset(const std::string& name, const std::string& dir) {
  return Download(absl::StrCat("dataset ", name), dir, [&](grpc::ClientContext* ctx) {
    forge::v1::FetchDatasetRequest req;
    *req.mutable_rank() = options_.rank;
    req.set_dataset(name);
    return stub_->FetchDataset(ctx, req);
  });
}

absl::Status TrainerClient::FetchCheckpoint(const std::string& id, const std::string& dir) {
  return Download(absl::StrCat("checkpoint ", id), dir, [&](grpc::ClientContext* ctx) {
    forge::v1::FetchCheckpointRequest req;
    *req.mutable_rank() = options_.rank;
    req.set_checkpoint_id(id);
    return stub_->FetchCheckpoint(ctx, req);
  });
}

}  // namespace forge::trainer
