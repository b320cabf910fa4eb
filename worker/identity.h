// Who a worker is: its id (stable across restarts), its hostname, and its token.
//
// Stateless functions; thread-compatible. Errors name the flag they concern.
#ifndef FORGE_WORKER_IDENTITY_H_
#define FORGE_WORKER_IDENTITY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace forge::worker {

// The name file under the work dir that keeps a generated worker id.
inline constexpr absl::string_view kWorkerIdFile = "worker_id";

// This machine's hostname (gethostname), or "localhost" if it has none.
std::string LocalHostname();

// Reads the worker token from `path`, trimmed of surrounding whitespace. INVALID_ARGUMENT
// naming --token-file when the file cannot be read or holds nothing.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The worker id kept in `work_dir`/worker_id. On first use creates it as
// "<hostname>-<6 random hex digits>" (the hostname reduced to [A-Za-z0-9._-], at most 100
// chars) and writes it atomically; later calls return the stored id. A stored id that is not
// a valid identifier is FAILED_PRECONDITION naming the file (fix or delete it).
absl::StatusOr<std::string> LoadOrCreateWorkerId(const std::string& work_dir,
                                                 absl::string_view hostname);

}  // namespace forge::worker

#endif  // FORGE_WORKER_IDENTITY_H_
