#include "cli/app.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

constexpr char kConnectionHelp[] =
    "Connection:\n"
    "  The coordinator is --coordinator, else $FORGE_COORDINATOR, else 127.0.0.1:7700.\n"
    "  The token is read from --token-file FILE, else $FORGE_TOKEN holds the token itself.\n"
    "  A new coordinator writes an admin token to STATE_DIR/admin.token; an admin creates\n"
    "  tenants (`forge admin tenant create NAME`), whose tokens submit and follow jobs.\n";

constexpr char kLeafFooter[] =
    "Global options (--coordinator, --token-file, --timeout) go before or after the command;\n"
    "see `forge --help` for them and for the exit codes.\n";

constexpr char kSubmitFooter[] =
    "SPEC.yaml is a forge.v1.JobSpec written as YAML: every key is the proto field name, e.g.\n"
    "  name: acme-support-expert\n"
    "  base: {model: forge-small, stage: mid-training}   # or {checkpoint: ID}, or model: {preset: "
    "tiny}\n"
    "  data: {mixture: [{dataset: general-english, weight: 0.25}, {dataset: acme-tickets, weight: "
    "0.75}]}\n"
    "  train: {steps: 2000, seq_len: 256, lr: 3e-4, lr_decay: cosine}\n"
    "  resources: {ranks: 2, device: cpu}\n"
    "Unknown keys and wrong types are reported with FILE:LINE:COL (exit 2) before anything is\n"
    "sent. An UNAVAILABLE coordinator is retried for ~10 s with the same request id, so a job is\n"
    "never submitted twice. Prints the job id alone on stdout.\n\n";

constexpr char kDataPrepareFooter[] =
    "Each --input is a .txt file (one document, or one per blank-line-separated paragraph with\n"
    "--split-paragraphs), a .jsonl file (one document per line, its string field \"text\"), or\n"
    "a directory searched for both. Tokens are bytes (vocab 256); identical documents are kept\n"
    "once; a document is held out by its hash, so the split does not depend on input order.\n"
    "Writes DIR/shard-NNNNN.bin and DIR/manifest.json (last); prints the manifest path alone.\n"
    "Runs locally: no coordinator and no token are needed.\n"
    "Example:\n"
    "  forge data prepare --input ~/.cache/forge/brown/text --name brown --out data/brown\n\n";

constexpr char kDataRegisterFooter[] =
    "DIR is a directory written by `forge data prepare --out DIR`. It is checked first (every\n"
    "shard against the manifest's sha256), so a damaged directory is refused before anything\n"
    "is sent; then manifest.json and its shards are uploaded. Registering the same content\n"
    "again is harmless (the coordinator answers with the existing entry); other content under\n"
    "a registered NAME is refused (exit 3).\n\n";

constexpr char kExportFooter[] =
    "Writes DIR/model.safetensors and DIR/config.json, a Hugging Face GPT-2 model:\n"
    "  transformers.GPT2LMHeadModel.from_pretrained(DIR)\n"
    "Every file is checked against the checkpoint's MANIFEST.json (size and sha256) before it\n"
    "gets its real name, so a failed export leaves no partial file. DIR is created if missing;\n"
    "an existing DIR/model.safetensors is replaced only with --force.\n\n";

constexpr char kWatchFooter[] =
    "On a terminal, one line is redrawn:\n"
    "  [######..............] step 120/400 | loss 2.513 | 18.2k tok/s | ETA 0:41 | RUNNING\n"
    "otherwise one line per change (at most one a second). A restart prints a line with its\n"
    "reason. When the job ends, prints how (state, message, final checkpoint, evals).\n"
    "Exits 0 when the job SUCCEEDED, 7 when it FAILED, 8 when it was CANCELLED, and 6 when the\n"
    "coordinator stays unreachable for longer than --patience.\n\n";

constexpr char kLogsFooter[] =
    "Prints the output of the job's trainer ranks, every attempt, each line prefixed\n"
    "\"a<attempt> r<rank> | \". With -f, keeps following until the job has ended and every\n"
    "line is printed. A restarting coordinator is waited for up to --patience.\n\n";

constexpr char kTokenCreateFooter[] =
    "Examples:\n"
    "  forge admin token create --worker --note rack-7 > worker.token\n"
    "  forge admin token create --tenant acme > acme.token\n"
    "The token is printed alone on stdout and shown only once.\n\n";

// The -o/--output option of a read command.
void AddOutputOption(CLI::App* command, std::string* output) {
  command->add_option("-o,--output", *output, "table (for people) or json (proto JSON)")
      ->check(CLI::IsMember({"table", "json"}))
      ->type_name("FORMAT")
      ->capture_default_str();
}

OutputFormat FormatOf(const std::string& output) {
  return output == "json" ? OutputFormat::kJson : OutputFormat::kTable;
}

// Prints a failed command's message, every line prefixed "forge: " (a spec can have several
// problems, one a line).
void PrintError(std::ostream& err, const absl::Status& status) {
  for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
    err << "forge: " << line << "\n";
  }
}

// The deepest command given on the command line ("forge admin token" -> token's App).
CLI::App* DeepestCommand(CLI::App* app) {
  const std::vector<CLI::App*> selected = app->get_subcommands();
  return selected.empty() ? app : DeepestCommand(selected.back());
}

// "forge admin token" for token's App.
std::string CommandPath(CLI::App* app) {
  std::string path = app->get_name();
  for (CLI::App* p = app->get_parent(); p != nullptr; p = p->get_parent()) {
    path = p->get_name() + " " + path;
  }
  return path;
}

// The message for a parse error. CLI11 reports an unknown or missing command as "A
// subcommand is required"; say which command group it was and what it offers.
std::string ParseErrorMessage(CLI::App& app, const CLI::ParseError& e) {
  CLI::App* command = DeepestCommand(&app);
  const std::vector<CLI::App*> children = command->get_subcommands([](CLI::App*) { return true; });
  if (children.empty()) return e.what();
  std::vector<std::string> names;
  for (CLI::App* child : children) names.push_back(child->get_name());
  const std::vector<std::string> extra = app.remaining(true);
  if (!extra.empty()) {
    return absl::StrCat("unknown command \"", extra.front(), "\" for `", CommandPath(command),
                        "`; use one of: ", absl::StrJoin(names, ", "));
  }
  return absl::StrCat("`", CommandPath(command), "` needs a command: ", absl::StrJoin(names, ", "));
}

// --timeout: seconds, > 0 and at most a day.
CLI::Validator PositiveSeconds() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double seconds = 0;
        if (!absl::SimpleAtod(text, &seconds) || !(seconds > 0) || seconds > 86400) {
          return "must be a number of seconds above 0 and at most 86400, got \"" + text + "\"";
        }
        return "";
      },
      "");
}

}  // namespace

int RunForgeCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app("forge: submit and follow training jobs on a Forge coordinator.", "forge");
  app.footer(absl::StrCat(kConnectionHelp, "\n", ExitCodesHelp()));
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand

  std::string coordinator = kDefaultCoordinator;
  std::string token_file;
  double timeout_s = 30;
  app.add_option("--coordinator", coordinator, "coordinator address HOST:PORT")
      ->envname("FORGE_COORDINATOR")
      ->type_name("HOST:PORT")
      ->capture_default_str();
  app.add_option("--token-file", token_file,
                 "file holding the token (else $FORGE_TOKEN holds the token itself)")
      ->type_name("FILE");
  app.add_option("--timeout", timeout_s, "seconds to wait for each answer of the coordinator")
      ->check(PositiveSeconds())
      ->type_name("SECONDS")
      ->capture_default_str();

  std::string output = "table";
  auto leaf = [&](CLI::App* parent, const std::string& name, const std::string& description) {
    CLI::App* command = parent->add_subcommand(name, description);
    command->footer(kLeafFooter);
    return command;
  };

  // Jobs.
  std::string spec_path, job_id, reason;
  std::vector<std::string> states;
  CLI::App* submit = leaf(&app, "submit", "Submit a job from a YAML spec; prints its id");
  submit->add_option("SPEC", spec_path, "the job spec (YAML)")->type_name("FILE")->required();
  submit->footer(absl::StrCat(kSubmitFooter, kLeafFooter));
  CLI::App* jobs = leaf(&app, "jobs", "List jobs, newest first");
  jobs->add_option("--state", states, "only jobs in STATE; repeat or separate with commas")
      ->type_name("STATE")
      ->delimiter(',');
  jobs->footer(absl::StrCat(
      "STATE is queued, running, restarting, succeeded, failed or cancelled.\n\n", kLeafFooter));
  AddOutputOption(jobs, &output);
  CLI::App* status =
      leaf(&app, "status", "Show one job: state, why, progress, attempts, evals, placement");
  status->add_option("JOB", job_id, "job id (j-...)")->type_name("ID")->required();
  AddOutputOption(status, &output);
  CLI::App* cancel = leaf(&app, "cancel", "Cancel a queued or running job");
  cancel->add_option("JOB", job_id, "job id (j-...)")->type_name("ID")->required();
  cancel->add_option("--reason", reason, "why; kept in the job's message")->type_name("TEXT");
  AddOutputOption(cancel, &output);

  FollowOptions follow;
  double interval_s = 0.5, patience_s = 60;
  auto add_follow_options = [&](CLI::App* command) {
    command->add_option("--interval", interval_s, "seconds between polls of the coordinator")
        ->check(PositiveSeconds())
        ->type_name("SECONDS")
        ->capture_default_str();
    command
        ->add_option("--patience", patience_s,
                     "seconds to wait for an unavailable (restarting) coordinator")
        ->check(PositiveSeconds())
        ->type_name("SECONDS")
        ->capture_default_str();
  };
  CLI::App* watch = leaf(&app, "watch", "Follow a job's progress until it ends");
  watch->add_option("JOB", job_id, "job id (j-...)")->type_name("ID")->required();
  add_follow_options(watch);
  AddOutputOption(watch, &output);
  watch->footer(absl::StrCat(kWatchFooter, kLeafFooter));
  bool follow_logs = false;
  CLI::App* logs = leaf(&app, "logs", "Print a job's trainer output");
  logs->add_option("JOB", job_id, "job id (j-...)")->type_name("ID")->required();
  logs->add_flag("-f,--follow", follow_logs, "keep printing new lines until the job ends");
  add_follow_options(logs);
  logs->footer(absl::StrCat(kLogsFooter, kLeafFooter));

  // Checkpoints.
  std::string checkpoint_id, export_dir;
  bool force = false;
  CLI::App* checkpoints =
      leaf(&app, "checkpoints", "List committed checkpoints (of JOB if given), newest first");
  checkpoints->add_option("JOB", job_id, "only this job's checkpoints (j-...)")->type_name("ID");
  AddOutputOption(checkpoints, &output);
  CLI::App* export_cmd =
      leaf(&app, "export", "Download a checkpoint as a Hugging Face model directory");
  export_cmd->add_option("CHECKPOINT", checkpoint_id, "checkpoint id (c-...)")
      ->type_name("ID")
      ->required();
  export_cmd->add_option("DIR", export_dir, "directory to write into (created if missing)")
      ->type_name("DIR")
      ->required();
  export_cmd->add_flag("--force", force, "replace an existing DIR/model.safetensors");
  export_cmd->footer(absl::StrCat(kExportFooter, kLeafFooter));

  // Model catalog.
  CLI::App* models = app.add_subcommand(
      "models", "List base models by stage and promotion channels; register a checkpoint");
  models->footer(kLeafFooter);
  AddOutputOption(models, &output);
  std::string model_name, model_stage, model_note;
  CLI::App* models_register = leaf(
      models, "register", "Bind a model name and stage to a committed checkpoint");
  models_register->add_option("NAME", model_name, "1..64 chars of [a-z0-9._-]")
      ->type_name("NAME")
      ->required();
  models_register->add_option("--checkpoint", checkpoint_id, "committed checkpoint id (c-...)")
      ->type_name("ID")
      ->required();
  models_register
      ->add_option("--stage", model_stage,
                   "pre-training, mid-training or post-training (default: the checkpoint's)")
      ->type_name("STAGE");
  models_register->add_option("--note", model_note, "free text for people")->type_name("TEXT");
  AddOutputOption(models_register, &output);

  // Schedules.
  CLI::App* schedule = app.add_subcommand(
      "schedule", "Retrain on a cron schedule: create, list, delete, history");
  schedule->require_subcommand(1);
  schedule->footer(kLeafFooter);
  ScheduleCreateOptions schedule_create_opts;
  std::string schedule_id;
  CLI::App* schedule_create = leaf(
      schedule, "create",
      "Submit SPEC at every slot of a cron schedule; prints the schedule id alone");
  schedule_create
      ->add_option("--cron", schedule_create_opts.cron,
                   "5 fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"")
      ->type_name("EXPR")
      ->required();
  schedule_create
      ->add_option("--time-zone", schedule_create_opts.time_zone,
                   "IANA time zone the fields are read in, e.g. Europe/Paris (default UTC)")
      ->type_name("TZ");
  schedule_create->add_option("--spec", schedule_create_opts.spec_path, "YAML job spec")
      ->type_name("SPEC.yaml")
      ->required();
  schedule_create->add_option("--name", schedule_create_opts.name,
                              "schedule name (default: the spec's name)")
      ->type_name("NAME");
  AddOutputOption(schedule_create, &output);
  CLI::App* schedule_list = leaf(schedule, "list", "List schedules, their next and last runs");
  AddOutputOption(schedule_list, &output);
  CLI::App* schedule_delete = leaf(schedule, "delete", "Delete a schedule (its jobs stay)");
  schedule_delete->add_option("ID", schedule_id, "schedule id (s-...)")
      ->type_name("ID")
      ->required();
  CLI::App* schedule_history =
      leaf(schedule, "history", "A schedule's runs, newest first: submitted, skipped, failed");
  schedule_history->add_option("ID", schedule_id, "schedule id (s-...)")
      ->type_name("ID")
      ->required();
  int history_limit = 1000;
  schedule_history->add_option("--limit", history_limit, "the newest N runs (1..10000)")
      ->type_name("N")
      ->default_val(1000);
  AddOutputOption(schedule_history, &output);

  // Fleet.
  CLI::App* workers = leaf(&app, "workers", "List worker hosts, their devices and ranks");
  AddOutputOption(workers, &output);

  // Administration (admin tokens).
  CLI::App* admin = app.add_subcommand("admin", "Manage tenants and tokens (admin token)");
  admin->require_subcommand(1);
  admin->footer(kLeafFooter);
  CLI::App* tenant = admin->add_subcommand("tenant", "Create and list tenants");
  tenant->require_subcommand(1);
  tenant->footer(kLeafFooter);
  std::string tenant_name;
  CLI::App* tenant_create =
      leaf(tenant, "create", "Create a tenant; prints its first token alone (shown once)");
  tenant_create->add_option("NAME", tenant_name, "1..64 chars of [a-z0-9-], starting with a letter")
      ->type_name("NAME")
      ->required();
  CLI::App* tenant_list = leaf(tenant, "list", "List tenants");
  AddOutputOption(tenant_list, &output);

  CLI::App* token = admin->add_subcommand("token", "Create, list and revoke tokens");
  token->require_subcommand(1);
  token->footer(kLeafFooter);
  bool worker_kind = false, admin_kind = false;
  std::string token_tenant, note, token_id;
  CLI::App* token_create = leaf(token, "create",
                                "Create a token; prints it alone (shown once). Give exactly one "
                                "of --worker, --tenant NAME, --admin");
  CLI::Option* worker_flag =
      token_create->add_flag("--worker", worker_kind, "a worker token (forge-worker only)");
  CLI::Option* tenant_opt =
      token_create->add_option("--tenant", token_tenant, "a token for existing tenant NAME")
          ->type_name("NAME");
  CLI::Option* admin_flag =
      token_create->add_flag("--admin", admin_kind, "an admin token (manages everything)");
  worker_flag->excludes(tenant_opt)->excludes(admin_flag);
  tenant_opt->excludes(admin_flag);
  token_create->add_option("--note", note, "free text for people, e.g. the host it is for")
      ->type_name("TEXT");
  token_create->footer(absl::StrCat(kTokenCreateFooter, kLeafFooter));
  CLI::App* token_list = leaf(token, "list", "List tokens (ids, kinds, never the secrets)");
  AddOutputOption(token_list, &output);
  CLI::App* token_revoke = leaf(token, "revoke", "Revoke a token by its id; effective at once");
  token_revoke->add_option("TOKEN_ID", token_id, "the token's id (see `forge admin token list`)")
      ->type_name("ID")
      ->required();

  // Datasets: local files, no coordinator.
  CLI::App* data = app.add_subcommand(
      "data", "Prepare datasets from local text, register (upload) and list them");
  data->require_subcommand(1);
  data->footer(kLeafFooter);
  PrepareOptions prepare;
  CLI::App* data_prepare =
      leaf(data, "prepare", "Turn text files into token shards and a manifest; prints its path");
  data_prepare->add_option("--input", prepare.inputs, ".txt or .jsonl files, or directories")
      ->type_name("PATH")
      ->required();
  data_prepare->add_option("--name", prepare.name, "dataset name: 1..64 chars of [a-z0-9._-]")
      ->type_name("NAME")
      ->required();
  data_prepare->add_option("--out", prepare.out_dir, "directory to write the dataset into")
      ->type_name("DIR")
      ->required();
  data_prepare
      ->add_option("--heldout", prepare.heldout_fraction,
                   "fraction of documents held out for evaluation, in [0, 1)")
      ->type_name("FRACTION")
      ->capture_default_str();
  data_prepare->add_flag("--split-paragraphs", prepare.split_paragraphs,
                         "one document per paragraph of each .txt file");
  data_prepare->add_flag("--overwrite", prepare.overwrite,
                         "replace the dataset in a non-empty --out directory");
  data_prepare->footer(kDataPrepareFooter);
  std::string dataset_name, dataset_dir;
  CLI::App* data_register =
      leaf(data, "register", "Upload a prepared dataset directory under NAME");
  data_register->add_option("NAME", dataset_name, "1..64 chars of [a-z0-9._-]")
      ->type_name("NAME")
      ->required();
  data_register->add_option("DIR", dataset_dir, "a directory written by `forge data prepare`")
      ->type_name("DIR")
      ->required();
  AddOutputOption(data_register, &output);
  data_register->footer(absl::StrCat(kDataRegisterFooter, kLeafFooter));
  CLI::App* data_list = leaf(data, "list", "List the registered datasets");
  AddOutputOption(data_list, &output);

  if (argc <= 1) {
    err << app.help();
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::ParseError& e) {
    err << "forge: " << ParseErrorMessage(app, e) << "\n"
        << "Run `" << CommandPath(DeepestCommand(&app)) << " --help` for usage.\n";
    return kExitUsage;
  }

  std::unique_ptr<CoordinatorClient> client;
  CommandEnv env;
  env.out = &out;
  env.err = &err;
  env.out_is_tty = &out == &std::cout && isatty(STDOUT_FILENO) == 1;
  follow.interval = absl::Seconds(interval_s);
  follow.patience = absl::Seconds(patience_s);
  env.client = [&]() -> absl::StatusOr<CoordinatorClient*> {
    if (client == nullptr) {
      ConnectionOptions options;
      options.coordinator = coordinator;
      options.timeout = absl::Seconds(timeout_s);
      ASSIGN_OR_RETURN(options.token, ResolveToken(token_file, std::getenv("FORGE_TOKEN")));
      if (options.coordinator.empty()) {
        return UsageError("--coordinator (or FORGE_COORDINATOR) is empty; give HOST:PORT");
      }
      client = std::make_unique<CoordinatorClient>(std::move(options));
    }
    return client.get();
  };

  const OutputFormat format = FormatOf(output);
  absl::Status result;
  if (*submit) {
    result = RunSubmit(env, spec_path);
  } else if (*jobs) {
    result = RunJobs(env, states, format);
  } else if (*status) {
    result = RunStatus(env, job_id, format);
  } else if (*cancel) {
    result = RunCancel(env, job_id, reason, format);
  } else if (*watch) {
    result = RunWatch(env, job_id, follow, format);
  } else if (*logs) {
    result = RunLogs(env, job_id, follow_logs, follow);
  } else if (*checkpoints) {
    result = RunCheckpoints(env, job_id, format);
  } else if (*models_register) {
    result = RunModelRegister(env, model_name, checkpoint_id, model_stage, model_note, format);
  } else if (*models) {
    result = RunModels(env, format);
  } else if (*schedule_create) {
    result = RunScheduleCreate(env, schedule_create_opts, format);
  } else if (*schedule_list) {
    result = RunScheduleList(env, format);
  } else if (*schedule_delete) {
    result = RunScheduleDelete(env, schedule_id);
  } else if (*schedule_history) {
    result = RunScheduleHistory(env, schedule_id, history_limit, format);
  } else if (*export_cmd) {
    result = RunExport(env, checkpoint_id, export_dir, force);
  } else if (*workers) {
    result = RunWorkers(env, format);
  } else if (*tenant_create) {
    result = RunTenantCreate(env, tenant_name);
  } else if (*tenant_list) {
    result = RunTenantList(env, format);
  } else if (*token_create) {
    const int kinds = int{worker_kind} + int{admin_kind} + int{tenant_opt->count() > 0};
    if (kinds != 1) {
      result = UsageError("give exactly one of --worker, --tenant NAME or --admin");
    } else {
      result = RunTokenCreate(env,
                              worker_kind  ? forge::v1::TOKEN_KIND_WORKER
                              : admin_kind ? forge::v1::TOKEN_KIND_ADMIN
                                           : forge::v1::TOKEN_KIND_TENANT,
                              token_tenant, note);
    }
  } else if (*token_list) {
    result = RunTokenList(env, format);
  } else if (*token_revoke) {
    result = RunTokenRevoke(env, token_id);
  } else if (*data_prepare) {
    result = RunDataPrepare(env, prepare);
  } else if (*data_register) {
    result = RunDataRegister(env, dataset_name, dataset_dir, format);
  } else if (*data_list) {
    result = RunDataList(env, format);
  } else {
    result = UsageError("no command given; run `forge --help`");
  }
  if (!result.ok()) PrintError(err, result);
  return ExitCodeFor(result);
}

}  // namespace forge::cli
