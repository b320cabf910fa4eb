// Small filesystem helpers that return Status and name the path in every error.
#ifndef FORGE_COMMON_FILE_UTIL_H_
#define FORGE_COMMON_FILE_UTIL_H_

#include <sys/types.h>

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forge {

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to `path` atomically and durably: a temporary file in the same directory is
// written, fsync'ed, given `mode`, renamed over `path`, and the directory is fsync'ed.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, mode_t mode = 0644);

// Creates `path` and missing parents with `mode` (like mkdir -p). OK if it exists.
absl::Status MakeDirs(const std::string& path, mode_t mode = 0755);

bool FileExists(const std::string& path);

}  // namespace forge

#endif  // FORGE_COMMON_FILE_UTIL_H_
