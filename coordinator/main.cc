// forge-coordinator: the Forge control plane.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/flags_util.h"
#include "common/log.h"
#include "coordinator/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7700",
          "HOST:PORT to serve gRPC on; port 0 picks a free port (see --port-file)");
ABSL_FLAG(std::string, state_dir, "", "directory for the SQLite database and admin.token");
ABSL_FLAG(std::string, storage_root, "",
          "shared directory for checkpoints, datasets and exports");
ABSL_FLAG(std::string, port_file, "", "if set, the bound port is written to this file");
ABSL_FLAG(std::string, http, "",
          "HOST:PORT for the dashboard, /metrics and /healthz (e.g. 127.0.0.1:7780; port 0 "
          "picks a free one, see --http-port-file); off when empty");
ABSL_FLAG(std::string, http_port_file, "", "if set, the bound --http port is written here");
ABSL_FLAG(std::string, dashboard_url, "",
          "where people reach the dashboard (e.g. https://forge.example.com behind a TLS proxy), "
          "for the links in alerts; default http://<--http address>");
ABSL_FLAG(std::string, alert_webhook, "",
          "comma-separated http(s) URLs that receive alerts as JSON POSTs (job_failed, "
          "job_restarted, worker_lost, guard_blocked, schedule_skipped)");
ABSL_FLAG(std::string, alert_secret_file, "",
          "file holding a secret; each alert then carries X-Forge-Signature-256: "
          "sha256=HMAC-SHA256(secret, body)");
ABSL_FLAG(std::string, alert_events, "", "comma-separated event types to send (default: all)");
ABSL_FLAG(int, heartbeat_interval_ms, 1000, "how often workers send heartbeats (ms)");
ABSL_FLAG(int, heartbeat_grace_ms, 3000, "a worker silent this long is dead (ms)");
ABSL_FLAG(int, reconnect_grace_ms, 8000,
          "after this coordinator starts, a worker that was alive when it last stopped has this "
          "long to reconnect before it is declared dead and its jobs restart (ms); "
          "--heartbeat-grace-ms when that is longer (workers' reconnect backoff reaches 5 s "
          "during an outage)");
ABSL_FLAG(int, step_timeout_ms, 120000,
          "a trainer rank that reports no step for this long fails its attempt (ms); covers "
          "start-up (data fetch, rendezvous, checkpoint load)");
ABSL_FLAG(int, collective_timeout_ms, 60000,
          "handed to trainers: an all-reduce waiting longer fails the rank (ms)");
ABSL_FLAG(int, ack_timeout_ms, 30000,
          "an assignment not acknowledged by its worker within this time fails the attempt (ms)");
ABSL_FLAG(int, schedule_tick_ms, 1000,
          "how often schedules look for a due slot (ms); tests make it shorter");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "forge-coordinator --listen=HOST:PORT --state-dir=DIR --storage-root=DIR\n\n"
      "Serves the Forge API (jobs, workers, admin) over gRPC. On first start it writes an "
      "admin token to DIR/admin.token (mode 0600).");
  forge::ParseDashedCommandLine(argc, argv);  // --state-dir as well as --state_dir
  forge::SetLogTag("coordinator");

  // Block the stop signals before any thread starts; one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  forge::coordinator::CoordinatorOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.storage_root = absl::GetFlag(FLAGS_storage_root);
  o.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  o.heartbeat_grace = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_grace_ms));
  o.reconnect_grace = absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_grace_ms));
  o.ack_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_ack_timeout_ms));
  o.step_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_step_timeout_ms));
  o.collective_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_collective_timeout_ms));
  o.http_listen = absl::GetFlag(FLAGS_http);
  o.dashboard_url = absl::GetFlag(FLAGS_dashboard_url);
  for (absl::string_view url :
       absl::StrSplit(absl::GetFlag(FLAGS_alert_webhook), ',', absl::SkipWhitespace())) {
    o.alerts.webhook_urls.emplace_back(absl::StripAsciiWhitespace(url));
  }
  for (absl::string_view e :
       absl::StrSplit(absl::GetFlag(FLAGS_alert_events), ',', absl::SkipWhitespace())) {
    o.alerts.events.emplace_back(absl::StripAsciiWhitespace(e));
  }
  if (std::string f = absl::GetFlag(FLAGS_alert_secret_file); !f.empty()) {
    absl::StatusOr<std::string> secret = forge::ReadFile(f);
    if (!secret.ok()) {
      std::cerr << "forge-coordinator: --alert-secret-file: " << secret.status().message() << "\n";
      return 2;
    }
    o.alerts.secret = std::string(absl::StripAsciiWhitespace(*secret));
    if (o.alerts.secret.empty()) {
      std::cerr << "forge-coordinator: --alert-secret-file: " << f << " is empty\n";
      return 2;
    }
  }
  if (o.alerts.webhook_urls.empty() && (!o.alerts.events.empty() || !o.alerts.secret.empty())) {
    std::cerr << "forge-coordinator: --alert-events and --alert-secret-file need "
                 "--alert-webhook=URL\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_schedule_tick_ms) < 1) {
    std::cerr << "forge-coordinator: --schedule-tick-ms must be >= 1\n";
    return 2;
  }
  o.schedule_tick_interval = absl::Milliseconds(absl::GetFlag(FLAGS_schedule_tick_ms));
  if (o.heartbeat_interval <= absl::ZeroDuration() || o.heartbeat_grace < o.heartbeat_interval) {
    std::cerr << "forge-coordinator: --heartbeat-grace-ms must be >= --heartbeat-interval-ms > 0\n";
    return 2;
  }
  auto coordinator = forge::coordinator::Coordinator::Start(o);
  if (!coordinator.ok()) {
    std::cerr << "forge-coordinator: " << coordinator.status().message() << "\n";
    return coordinator.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (auto s = forge::WriteFileAtomic(pf, absl::StrCat((*coordinator)->port(), "\n")); !s.ok()) {
      std::cerr << "forge-coordinator: --port-file: " << s.message() << "\n";
      return 1;
    }
  }
  if (const std::string& h = o.http_listen; !h.empty() && !absl::StartsWith(h, "127.") &&
                                              !absl::StartsWith(h, "localhost:") &&
                                              !absl::StartsWith(h, "[::1]:")) {
    FORGE_LOG(WARNING) << "event=http_not_loopback listen=" << h
                       << " note=\"the dashboard speaks plain HTTP: tokens and session cookies "
                          "cross the network in the clear; put it behind a TLS proxy\"";
  }
  if (std::string pf = absl::GetFlag(FLAGS_http_port_file); !pf.empty()) {
    if ((*coordinator)->http_port() == 0) {
      std::cerr << "forge-coordinator: --http-port-file needs --http\n";
      return 2;
    }
    if (auto s = forge::WriteFileAtomic(pf, absl::StrCat((*coordinator)->http_port(), "\n"));
        !s.ok()) {
      std::cerr << "forge-coordinator: --http-port-file: " << s.message() << "\n";
      return 1;
    }
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    FORGE_LOG(INFO) << "event=signal sig=" << sig;
    (*coordinator)->Shutdown();
  });
  signals.detach();
  (*coordinator)->Wait();
  coordinator->reset();
  FORGE_LOG(INFO) << "event=coordinator_stopped";
  return 0;
}
