// Command-line spelling: the interface contract spells multi-word flags with dashes
// (--state-dir), while absl flag names are C identifiers (state_dir).
#ifndef FORGE_COMMON_FLAGS_UTIL_H_
#define FORGE_COMMON_FLAGS_UTIL_H_

#include <string>
#include <vector>

namespace forge {

// Returns argv with dashes inside flag names turned into underscores ("--state-dir=a-b" ->
// "--state_dir=a-b"); values, positional arguments and everything after "--" are untouched.
std::vector<std::string> DashesToUnderscores(int argc, char** argv);

// Parses argv with absl::ParseCommandLine after DashesToUnderscores.
void ParseDashedCommandLine(int argc, char** argv);

}  // namespace forge

#endif  // FORGE_COMMON_FLAGS_UTIL_H_
