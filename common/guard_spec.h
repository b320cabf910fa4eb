// The suites a job's regression guard watches: GuardSpec.suite, or GuardSpec.suites when the
// spec lists several (job.proto).
#ifndef FORGE_COMMON_GUARD_SPEC_H_
#define FORGE_COMMON_GUARD_SPEC_H_

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "forge/v1/job.pb.h"

namespace forge {

inline std::vector<std::string> GuardedSuites(const forge::v1::GuardSpec& guard) {
  if (guard.suites_size() > 0) return {guard.suites().begin(), guard.suites().end()};
  return {guard.suite()};
}

// "general-english" or "general-english, code".
inline std::string GuardedSuitesText(const forge::v1::GuardSpec& guard) {
  return absl::StrJoin(GuardedSuites(guard), ", ");
}

}  // namespace forge

#endif  // FORGE_COMMON_GUARD_SPEC_H_
