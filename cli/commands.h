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
#include "absl/time/clock.h"
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
  // Waits between polls and retries (watch, logs, data register); tests replace it to step a
  // fake coordinator and clock instead of waiting.
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) { absl::SleepFor(d); };
  // Whether `out` is a terminal: `forge watch` then redraws one line instead of printing one
  // line per change.
  bool out_is_tty = false;
};

struct SubmitOptions {
  // UNAVAILABLE answers are retried, with the same request_id, for this long in all...
  absl::Duration retry_for = absl::Seconds(10);
  // ...waiting this long after the first, doubling up to max_backoff.
  absl::Duration first_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(2);
};

// Reads and parses a YAML job spec: a usage error naming FILE:LINE:COL when it is invalid.
absl::StatusOr<forge::v1::JobSpec> LoadJobSpec(const std::string& path);

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

// forge models: the tenant's model catalog (models by stage) and promotion channels.
absl::Status RunModels(const CommandEnv& env, OutputFormat format);

// forge models register NAME --checkpoint ID [--stage S] [--note N]: binds (NAME, stage) to
// the checkpoint; `stage` empty takes the checkpoint's recorded stage. Prints the entry.
absl::Status RunModelRegister(const CommandEnv& env, const std::string& name,
                              const std::string& checkpoint, const std::string& stage,
                              const std::string& note, OutputFormat format);

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

struct RegisterOptions {
  // UNAVAILABLE answers restart the whole upload (the coordinator keeps nothing of a broken
  // one, and identical content registers idempotently) up to this many tries in all...
  int max_tries = 3;
  // ...waiting this long before each new try.
  absl::Duration backoff = absl::Seconds(2);
};

// forge data register NAME DIR: checks DIR as `forge data prepare` wrote it (every shard's
// sha256 against its manifest) before connecting (a usage error naming DIR otherwise), then
// streams manifest.json and the shards it lists (header with each file's size and sha256,
// then 1 MiB chunks in file order) and prints the DatasetInfo the coordinator answered.
absl::Status RunDataRegister(const CommandEnv& env, const std::string& name, const std::string& dir,
                             OutputFormat format, const RegisterOptions& options = {});

// forge data list: the tenant's registered datasets.
absl::Status RunDataList(const CommandEnv& env, OutputFormat format);

// forge checkpoints [JOB]: committed checkpoints (of JOB when not empty), newest first.
absl::Status RunCheckpoints(const CommandEnv& env, const std::string& job_id, OutputFormat format);

// The files `forge export` downloads; all three must be in the checkpoint.
inline constexpr const char* kExportFiles[] = {"model.safetensors", "config.json", "MANIFEST.json"};

// forge export CHECKPOINT DIR [--force]: downloads model.safetensors and config.json (a
// Hugging Face GPT-2 model directory) into DIR, created if missing. Each file is checked
// against the transfer header (size, sha256) and against the checkpoint's MANIFEST.json before
// any is renamed into place, so a failed export leaves no partial file under a real name.
// A usage error, before connecting, when DIR/model.safetensors exists and !force; DATA_LOSS
// (exit 1) when a file does not match.
absl::Status RunExport(const CommandEnv& env, const std::string& checkpoint_id,
                       const std::string& dir, bool force);

struct FollowOptions {
  absl::Duration interval = absl::Milliseconds(500);  // between polls
  // How long the coordinator may stay UNAVAILABLE (restarting) before the command gives up
  // with exit 6; each outage is noted once on env.err.
  absl::Duration patience = absl::Seconds(60);
};

// forge watch JOB: polls the job until it is terminal, showing its progress (one redrawn line
// on a terminal, else one line per change of step or state, at most one a second, and a line
// per restart), then how it ended. OK for SUCCEEDED; JobOutcomeError (exit 7 FAILED, 8
// CANCELLED) otherwise. With kJson, prints only the final job as proto JSON.
absl::Status RunWatch(const CommandEnv& env, const std::string& job_id,
                      const FollowOptions& options, OutputFormat format);

// forge logs JOB [-f]: writes the job's log from its start to env.out as it comes; with
// `follow`, keeps polling until the coordinator says the job finished and every line is in.
absl::Status RunLogs(const CommandEnv& env, const std::string& job_id, bool follow,
                     const FollowOptions& options);

struct ScheduleCreateOptions {
  std::string cron;       // 5-field cron expression (required)
  std::string time_zone;  // IANA name; empty = UTC
  std::string spec_path;  // YAML job spec (required)
  std::string name;       // empty = the spec's name
};
// forge schedule create --cron EXPR [--time-zone TZ] --spec SPEC.yaml [--name N]: prints the
// schedule id alone on env.out, then on env.err what it means and "next run: <time> (<tz>)"
// (with -o json: the Schedule). The spec is parsed locally first (a usage error naming
// FILE:LINE:COL); the coordinator checks the cron fields, the zone and the spec as a
// submission (exit 3 naming the flag or field).
absl::Status RunScheduleCreate(const CommandEnv& env, const ScheduleCreateOptions& options,
                               OutputFormat format);
// forge schedule list: ID NAME CRON TZ NEXT RUN LAST RUN OUTCOME.
absl::Status RunScheduleList(const CommandEnv& env, OutputFormat format);
// forge schedule delete ID.
absl::Status RunScheduleDelete(const CommandEnv& env, const std::string& schedule_id);
// forge schedule history ID: SLOT OUTCOME JOB MESSAGE, newest slot first.
absl::Status RunScheduleHistory(const CommandEnv& env, const std::string& schedule_id, int limit,
                                OutputFormat format);

}  // namespace forge::cli

#endif  // FORGE_CLI_COMMANDS_H_
