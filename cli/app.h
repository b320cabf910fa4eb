// The forge command line: flags, subcommands and help (CLI11), dispatching to commands.h.
#ifndef FORGE_CLI_APP_H_
#define FORGE_CLI_APP_H_

#include <ostream>

namespace forge::cli {

// Runs `forge` with the process's arguments and environment (FORGE_COORDINATOR,
// FORGE_TOKEN), writing results to `out` and errors ("forge: <message>") to `err`. Returns
// the exit code (exit_codes.h).
int RunForgeCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace forge::cli

#endif  // FORGE_CLI_APP_H_
