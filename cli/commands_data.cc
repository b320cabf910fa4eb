// forge data prepare.
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/dataset.h"
#include "common/names.h"

namespace forge::cli {
namespace {

// "1 shard" / "3 shards".
std::string Plural(int64_t n, absl::string_view one, absl::string_view many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

}  // namespace

absl::Status RunDataPrepare(const CommandEnv& env, const PrepareOptions& options) {
  if (absl::Status s = ValidateResourceName("--name", options.name); !s.ok()) {
    return UsageError(s.message());
  }
  if (!(options.heldout_fraction >= 0 && options.heldout_fraction < 1)) {
    return UsageError(absl::StrCat("--heldout must be a fraction in [0, 1), e.g. 0.05; got ",
                                   options.heldout_fraction));
  }
  absl::StatusOr<PrepareSummary> summary = PrepareDataset(options);
  if (!summary.ok()) {
    // Everything PrepareDataset refuses is about the local input or out dir: the user's to
    // fix (exit 2). Anything else (a full disk) stays as it is.
    switch (summary.status().code()) {
      case absl::StatusCode::kInvalidArgument:
      case absl::StatusCode::kNotFound:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kPermissionDenied:
        return UsageError(summary.status().message());
      default:
        return summary.status();
    }
  }
  *env.err << "forge: prepared dataset " << options.name << ": "
           << Plural(summary->documents, "document", "documents") << " ("
           << summary->heldout_documents << " held out), "
           << Plural(summary->tokens, "token", "tokens") << " in "
           << Plural(summary->shards, "shard", "shards") << " from "
           << Plural(summary->input_files, "file", "files") << "; dropped "
           << Plural(summary->duplicates_dropped, "duplicate", "duplicates") << " and "
           << summary->empty_dropped << " empty\n";
  *env.out << summary->manifest_path << "\n";
  env.out->flush();
  if (!*env.out) return absl::UnknownError("cannot write the manifest path (stdout closed?)");
  return absl::OkStatus();
}

}  // namespace forge::cli
