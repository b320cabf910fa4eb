// The forge commands, one function each, independent of flag parsing (app.cc) so tests can
// run them against an in-process coordinator. Each writes its result to env.out, notes for
// people to env.err, and returns the outcome; ExitCodeFor() turns it into the exit code.
#ifndef FORGE_CLI_COMMANDS_H_
#define FORGE_CLI_COMMANDS_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/client.h"
#include "cli/output.h"
#include "common/clock.h"
#include "common/dataset.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::cli {

// What a command runs with. Nothing here is owned; all of it outlives the command.
struct CommandEnv {
  // The client, connected on first use; fails with a usage error when no token was given.
  // Commands call it only after checking their local input, so a bad spec is reported even
  // without a token.
  std::function<absl::StatusOr<CoordinatorClient*>()> client;
  std::ostream* out = nullptr;  // results: ids, tokens, tables, JSON
  std::ostream* err = nullptr;  // notes for people
  const Clock* clock = RealClock();
};

struct SubmitOptions {
  // UNAVAILABLE answers are retried, with the same request_id, for this long in all...
  absl::Duration retry_for = absl::Seconds(10);
  // ...waiting this long after the first, doubling up to max_backoff.
  absl::Duration first_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(2);
};

// forge submit SPEC.yaml: parses the spec (a usage error naming FILE:LINE:COL when it is
// invalid), submits it with a fresh random request_id and prints the job id alone.
absl::Status RunSubmit(const CommandEnv& env, const std::string& spec_path,
                       const SubmitOptions& options = {});

// forge jobs [--state S]...: `states` are names as ParseJobState takes them; empty = all.
absl::Status RunJobs(const CommandEnv& env, const std::vector<std::string>& states,
                     OutputFormat format);

// forge status JOB.
absl::Status RunStatus(const CommandEnv& env, const std::string& job_id, OutputFormat format);

// forge cancel JOB [--reason R].
absl::Status RunCancel(const CommandEnv& env, const std::string& job_id, const std::string& reason,
                       OutputFormat format);

// forge workers.
absl::Status RunWorkers(const CommandEnv& env, OutputFormat format);

// forge admin tenant create NAME: prints the tenant's token alone (a note on env.err says it
// is shown once).
absl::Status RunTenantCreate(const CommandEnv& env, const std::string& name);

// forge admin tenant list.
absl::Status RunTenantList(const CommandEnv& env, OutputFormat format);

// forge admin token create --worker | --tenant NAME | --admin [--note N]: prints the token
// alone. REQUIRES: `tenant` is set exactly when kind is TOKEN_KIND_TENANT.
absl::Status RunTokenCreate(const CommandEnv& env, forge::v1::TokenKind kind,
                            const std::string& tenant, const std::string& note);

// forge admin token list.
absl::Status RunTokenList(const CommandEnv& env, OutputFormat format);

// forge admin token revoke TOKEN_ID.
absl::Status RunTokenRevoke(const CommandEnv& env, const std::string& token_id);

// forge data prepare: turns local text files into a dataset directory (common/dataset.h).
// Local only: never calls env.client, so it needs no coordinator and no token. Prints the
// manifest path alone on env.out and a one-line summary on env.err. Bad options, unreadable
// or invalid input and an occupied out dir without options.overwrite are usage errors.
absl::Status RunDataPrepare(const CommandEnv& env, const PrepareOptions& options);

}  // namespace forge::cli

#endif  // FORGE_CLI_COMMANDS_H_
