#include "cli/client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli/exit_codes.h"
#include "common/file_util.h"
#include "common/grpc_status.h"

namespace forge::cli {
namespace {

// Listing a large queue can exceed gRPC's 4 MiB default.
constexpr int kMaxReceiveBytes = 64 << 20;

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  // gRPC waits out a reconnect backoff (1 s growing to 120 s) before it dials a refused
  // address again; `submit` retries for ~10 s, so keep the backoff short enough to matter.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

absl::StatusOr<std::string> ResolveToken(const std::string& token_file, const char* env_token) {
  if (!token_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(token_file);
    if (!contents.ok()) {
      return UsageError(absl::StrCat("cannot read --token-file: ", contents.status().message()));
    }
    const absl::string_view token = absl::StripAsciiWhitespace(*contents);
    if (token.empty()) return UsageError(absl::StrCat("token file ", token_file, " is empty"));
    return std::string(token);
  }
  const absl::string_view token = absl::StripAsciiWhitespace(env_token == nullptr ? "" : env_token);
  if (token.empty()) {
    return UsageError(
        "no token: pass --token-file FILE (a file holding the token) or set FORGE_TOKEN to "
        "the token itself; a new coordinator writes its admin token to STATE_DIR/admin.token");
  }
  return std::string(token);
}

CoordinatorClient::CoordinatorClient(ConnectionOptions options)
    : CoordinatorClient(options, MakeChannel(options.coordinator)) {}

CoordinatorClient::CoordinatorClient(ConnectionOptions options,
                                     std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      jobs_(forge::v1::JobService::NewStub(channel_)),
      workers_(forge::v1::WorkerService::NewStub(channel_)),
      admin_(forge::v1::AdminService::NewStub(channel_)),
      data_(forge::v1::DataService::NewStub(channel_)),
      checkpoints_(forge::v1::CheckpointService::NewStub(channel_)),
      models_(forge::v1::ModelService::NewStub(channel_)),
      schedules_(forge::v1::ScheduleService::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> CoordinatorClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.timeout));
  return context;
}

std::unique_ptr<grpc::ClientContext> CoordinatorClient::NewTransferContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  return context;
}

absl::Status CoordinatorClient::Finish(const grpc::Status& status) const {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the coordinator at ", options_.coordinator, ": ", status.error_message(),
          "\nIs it running? Point forge at it with --coordinator HOST:PORT or "
          "FORGE_COORDINATOR."));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(
          absl::StrCat("the coordinator at ", options_.coordinator, " did not answer within ",
                       absl::FormatDuration(options_.timeout), " (raise --timeout if it is busy)"));
    case grpc::StatusCode::UNAUTHENTICATED:
      return absl::UnauthenticatedError(
          absl::StrCat(status.error_message(),
                       " (the token comes from --token-file, else FORGE_TOKEN; is it current?)"));
    default:
      return FromGrpcStatus(status);
  }
}

}  // namespace forge::cli
