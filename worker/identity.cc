#include "worker/identity.h"

#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace forge::worker {
namespace {

constexpr size_t kMaxWorkerIdLength = 128;  // RegisterWorker.worker_id

std::string SanitizeHostname(absl::string_view hostname) {
  std::string out;
  for (char c : hostname) {
    if (out.size() >= 100) break;
    const bool ok =
        absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    out.push_back(ok ? c : '-');
  }
  // An identifier starts with a letter or digit.
  while (!out.empty() && !absl::ascii_isalnum(static_cast<unsigned char>(out.front()))) {
    out.erase(out.begin());
  }
  return out.empty() ? "worker" : out;
}

}  // namespace

std::string LocalHostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "--token-file is required: a file holding the worker token (create one with "
        "`forge admin token create --worker`)");
  }
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token-file=", path, ": cannot read it (", contents.status().message(),
                     "); point it at a file holding the worker token"));
  }
  std::string token(absl::StripAsciiWhitespace(*contents));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token-file=", path,
        " is empty; write the worker token into it (`forge admin token create --worker`)"));
  }
  return token;
}

absl::StatusOr<std::string> LoadOrCreateWorkerId(const std::string& work_dir,
                                                 absl::string_view hostname) {
  const std::string path = absl::StrCat(work_dir, "/", kWorkerIdFile);
  if (FileExists(path)) {
    ASSIGN_OR_RETURN(std::string stored, ReadFile(path));
    std::string id(absl::StripAsciiWhitespace(stored));
    if (absl::Status s = ValidateIdentifier(path, id, kMaxWorkerIdLength); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(s.message(), "; fix the file or delete it to generate a new worker id"));
    }
    return id;
  }
  ASSIGN_OR_RETURN(std::string random, SecureRandomBytes(3));
  const std::string id = absl::StrCat(SanitizeHostname(hostname), "-", HexEncode(random));
  RETURN_IF_ERROR(WriteFileAtomic(path, absl::StrCat(id, "\n"), 0644));
  return id;
}

}  // namespace forge::worker
