// Validation of names and ids that end up in paths, SQL rows and logs.
#ifndef FORGE_COMMON_NAMES_H_
#define FORGE_COMMON_NAMES_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace forge {

// A tenant name: 1..64 chars of [a-z0-9-], starting with a letter.
absl::Status ValidateTenantName(absl::string_view field, absl::string_view name);

// A resource name (dataset, model, channel): 1..64 chars of [a-z0-9._-], starting with a
// letter or digit.
absl::Status ValidateResourceName(absl::string_view field, absl::string_view name);

// An identifier (job name, worker id, request id): 1..max_len chars of [A-Za-z0-9._-],
// starting with a letter or digit.
absl::Status ValidateIdentifier(absl::string_view field, absl::string_view id, size_t max_len);

}  // namespace forge

#endif  // FORGE_COMMON_NAMES_H_
