// Operators' view end to end, with the real binaries on loopback: a coordinator serving the
// dashboard and /metrics on --http and sending webhooks, real workers and trainers. One job
// keeps running, one is restarted (its trainer killed) and one fails (killed with no restarts
// left); a worker is killed and declared dead. Then:
//   - headless Chromium signs in with the admin token and sees what a person would: the jobs
//     listed with their states, the running job's loss curve drawn with points, the dead
//     worker shown dead; screenshots are saved as test artifacts;
//   - /metrics is parsed by the strict exposition parser (and promtool when installed) and
//     its numbers match what happened; every metric the Grafana dashboard uses exists;
//   - the webhook receiver got job_restarted, job_failed and worker_lost, signed.
#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "common/file_util.h"
#include "common/prometheus_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness.h"
#include "tests/webdriver.h"
#include "tests/webhook_receiver.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;

// A loopback port nothing listens on now.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string secret = cluster_.WriteFile("alert.secret", "s3cret-for-hmac\n");
    cluster_.StartCoordinator(
        {"--http=127.0.0.1:0", "--http-port-file=" + cluster_.dir() + "/http.port",
         "--alert-webhook=" + receiver_.url(), "--alert-secret-file=" + secret,
         "--step-timeout-ms=20000", "--collective-timeout-ms=8000"});
    ASSERT_TRUE(WaitFor(
        [&] {
          absl::StatusOr<std::string> s = ReadFile(cluster_.dir() + "/http.port");
          return s.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*s), &http_port_) &&
                 http_port_ > 0;
        },
        absl::Seconds(10)));
    tenant_ = cluster_.CreateTenant("acme");
    jobs_ = forge::v1::JobService::NewStub(cluster_.channel());
    cluster_.RegisterDataset(tenant_, "general", 80, 1);
    cluster_.RegisterDataset(tenant_, "tickets", 80, 2);
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", http_port_, path);
  }

  std::string Submit(const std::string& name, int steps, int max_restarts) {
    const std::string spec = cluster_.WriteFile(
        name + ".yaml",
        absl::StrCat("name: ", name, "\n",
                     "model: {layers: 2, heads: 4, width: 128, context: 64, vocab: 256}\n"
                     "data:\n"
                     "  mixture:\n"
                     "    - {dataset: general, weight: 0.25}\n"
                     "    - {dataset: tickets, weight: 0.75}\n"
                     "train: {steps: ",
                     steps,
                     ", seq_len: 64, batch_tokens: 2048, lr: 3e-3, "
                     "warmup_steps: 5, seed: 3}\n"
                     "resources: {ranks: 1, device: cpu}\n"
                     "checkpoint: {every_steps: 20, keep_last: 2}\n"
                     "max_restarts: ",
                     max_restarts, "\n"));
    CliResult r = cluster_.Cli({"submit", spec}, tenant_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::string(absl::StripTrailingAsciiWhitespace(r.out));
  }

  forge::v1::Job Get(const std::string& id) {
    grpc::ClientContext ctx;
    Cluster::Authorize(&ctx, tenant_);
    forge::v1::GetJobRequest req;
    req.set_job_id(id);
    forge::v1::Job job;
    EXPECT_TRUE(jobs_->GetJob(&ctx, req, &job).ok());
    return job;
  }

  bool WaitStep(const std::string& id, int64_t step, int attempt = 1) {
    return WaitFor(
        [&] {
          forge::v1::Job j = Get(id);
          return j.attempt() >= attempt && j.progress().step() >= step &&
                 j.state() == forge::v1::JOB_STATE_RUNNING && !TrainerPids(id).empty();
        },
        absl::Seconds(90));
  }

  WebhookReceiver receiver_;  // declared first: outlives the coordinator that posts to it
  Cluster cluster_;
  int http_port_ = 0;
  std::string tenant_;
  std::unique_ptr<forge::v1::JobService::Stub> jobs_;
};

TEST_F(DashboardTest, AnOperatorSeesRunningRestartedAndFailedJobsAndADeadWorker) {
  const std::string token = cluster_.CreateWorkerToken();
  cluster_.StartWorker(token, "cpu:2", "w-train");
  const std::string running = Submit("support-expert", 100000, 2);
  const std::string failing = Submit("doomed-run", 100000, 0);
  ASSERT_TRUE(WaitStep(running, 30)) << "log: " << cluster_.dir();
  ASSERT_TRUE(WaitStep(failing, 5));

  // A trainer killed: its job restarts (one restart allowed), or fails (none allowed).
  for (pid_t pid : TrainerPids(running)) kill(pid, SIGKILL);
  for (pid_t pid : TrainerPids(failing)) kill(pid, SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return Get(failing).state() == forge::v1::JOB_STATE_FAILED; },
                      absl::Seconds(60)));
  ASSERT_TRUE(WaitStep(running, 40, 2)) << "the restarted job did not train again";
  // A second worker, started once the jobs are placed on the first (so it holds no rank),
  // and killed.
  const int doomed =
      cluster_.StartWorker(token, "cpu:1", "w-doomed", {"--trainer=" + cluster_.IdleTrainer()});
  ASSERT_TRUE(WaitFor(
      [&] {
        httplib::Client c("127.0.0.1", http_port_);
        auto r = c.Get("/metrics", {{"Authorization", "Bearer " + cluster_.admin_token()}});
        return r && r->status == 200 &&
               absl::StrContains(r->body, "forge_workers{state=\"alive\"} 2");
      },
      absl::Seconds(30)));
  cluster_.worker(doomed)->Kill(SIGKILL);
  ASSERT_TRUE(WaitFor(
      [&] {
        httplib::Client c("127.0.0.1", http_port_);
        auto r = c.Get("/metrics", {{"Authorization", "Bearer " + cluster_.admin_token()}});
        return r && r->status == 200 &&
               absl::StrContains(r->body, "forge_workers{state=\"dead\"} 1");
      },
      absl::Seconds(30)));

  // --- /metrics, strictly parsed -------------------------------------------------------------
  httplib::Client http("127.0.0.1", http_port_);
  auto unauth = http.Get("/metrics");
  ASSERT_TRUE(unauth);
  EXPECT_EQ(unauth->status, 401);
  auto scraped = http.Get("/metrics", {{"Authorization", "Bearer " + cluster_.admin_token()}});
  ASSERT_TRUE(scraped);
  ASSERT_EQ(scraped->status, 200);
  EXPECT_THAT(scraped->get_header_value("Content-Type"), HasSubstr("version=0.0.4"));
  absl::StatusOr<std::vector<prometheus::Family>> families =
      prometheus::ParseExposition(scraped->body);
  ASSERT_TRUE(families.ok()) << families.status() << "\n" << scraped->body;
  auto value = [&](const std::string& name, std::map<std::string, std::string> labels) {
    return prometheus::FindValue(*families, name, labels).value_or(-1);
  };
  EXPECT_EQ(value("forge_jobs", {{"state", "failed"}}), 1);
  EXPECT_EQ(value("forge_jobs", {{"state", "running"}}), 1);
  EXPECT_EQ(value("forge_jobs_finished_total", {{"state", "failed"}}), 1);
  EXPECT_GE(value("forge_job_restarts_total", {}), 1);
  EXPECT_EQ(value("forge_jobs_submitted_total", {}), 2);
  EXPECT_EQ(value("forge_workers", {{"state", "dead"}}), 1);
  EXPECT_EQ(value("forge_workers", {{"state", "alive"}}), 1);
  EXPECT_GE(value("forge_job_step", {{"job_id", running}, {"tenant", "acme"}}), 40);
  EXPECT_EQ(value("forge_job_attempt", {{"job_id", running}, {"tenant", "acme"}}), 2);
  EXPECT_GT(value("forge_job_source_tokens",
                  {{"job_id", running}, {"source", "tickets"}, {"tenant", "acme"}}),
            0);
  EXPECT_EQ(value("forge_job_step", {{"job_id", failing}, {"tenant", "acme"}}), -1)
      << "finished jobs have no per-job series";
  EXPECT_GE(value("forge_rpc_requests_total",
                  {{"method", "forge.v1.JobService/SubmitJob"}, {"code", "OK"}}),
            2);
  EXPECT_GE(value("forge_checkpoints_committed_total", {}), 1);
  EXPECT_EQ(value("forge_queue_wait_seconds_count", {{"reason", "submitted"}}), 2);
  EXPECT_EQ(value("forge_queue_wait_seconds_count", {{"reason", "restart"}}), 1);
  const std::string dump = cluster_.WriteFile("metrics.txt", scraped->body);
  std::filesystem::copy_file(dump, ArtifactDir() + "/dashboard_metrics.txt",
                             std::filesystem::copy_options::overwrite_existing);
  if (access("/usr/bin/promtool", X_OK) == 0) {
    const std::string out = cluster_.dir() + "/promtool.out";
    const int rc = system(
        absl::StrCat("/usr/bin/promtool check metrics < ", dump, " > ", out, " 2>&1").c_str());
    EXPECT_EQ(rc, 0) << *ReadFile(out);
    EXPECT_EQ(*ReadFile(out), "") << "promtool lint findings";
  }
  // Every metric the Grafana dashboard and the alert rules use is served.
  const std::string check =
      absl::StrCat("python3 ", FORGE_SOURCE_DIR, "/deploy/check_dashboard.py ", FORGE_SOURCE_DIR,
                   "/deploy/grafana/forge-dashboard.json ", dump, " --rules ", FORGE_SOURCE_DIR,
                   "/deploy/prometheus/forge-alerts.yml > ", cluster_.dir(), "/check.out 2>&1");
  EXPECT_EQ(system(check.c_str()), 0) << *ReadFile(cluster_.dir() + "/check.out");

  // --- A real Prometheus scrapes it, with the shipped config -----------------------------------
  if (access("/usr/bin/prometheus", X_OK) == 0) {
    // deploy/prometheus/ with the test's port, token file and a 1 s interval.
    const std::string prom = cluster_.dir() + "/prometheus";
    std::filesystem::create_directories(prom);
    std::filesystem::copy_file(
        absl::StrCat(FORGE_SOURCE_DIR, "/deploy/prometheus/forge-alerts.yml"),
        prom + "/forge-alerts.yml");
    std::string config =
        *ReadFile(absl::StrCat(FORGE_SOURCE_DIR, "/deploy/prometheus/prometheus.yml"));
    config = absl::StrReplaceAll(config,
                                 {{"15s", "1s"},
                                  {"scrape_timeout: 10s", "scrape_timeout: 1s"},
                                  {"/etc/forge/admin.token", cluster_.dir() + "/state/admin.token"},
                                  {"127.0.0.1:7780", absl::StrCat("127.0.0.1:", http_port_)}});
    ASSERT_TRUE(WriteFileAtomic(prom + "/prometheus.yml", config).ok());
    const int web = FreePort();  // for Prometheus' own web listener
    Process prometheus({"/usr/bin/prometheus", "--config.file=" + prom + "/prometheus.yml",
                        "--storage.tsdb.path=" + prom + "/data",
                        absl::StrCat("--web.listen-address=127.0.0.1:", web)},
                       prom + "/prometheus.log");
    httplib::Client api("127.0.0.1", web);
    auto query = [&](const std::string& q) -> nlohmann::json {
      auto r =
          api.Get(absl::StrCat("/api/v1/query?query=", httplib::detail::encode_query_param(q)));
      if (!r || r->status != 200) return nlohmann::json();
      nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
      return j.is_object() ? j["data"]["result"] : nlohmann::json();
    };
    EXPECT_TRUE(WaitFor(
        [&] {
          nlohmann::json up = query("up{job=\"forge-coordinator\"}");
          nlohmann::json step = query(absl::StrCat("forge_job_step{job_id=\"", running, "\"}"));
          return up.is_array() && up.size() == 1 && up[0]["value"][1] == "1" && step.is_array() &&
                 step.size() == 1;
        },
        absl::Seconds(30)))
        << "Prometheus did not scrape the coordinator; its log: "
        << ReadFile(prom + "/prometheus.log").value_or("");
    nlohmann::json rules = nlohmann::json::parse(
        api.Get("/api/v1/rules") ? api.Get("/api/v1/rules")->body : "{}", nullptr, false);
    EXPECT_EQ(rules.value("status", ""), "success") << "the shipped alert rules load";
  }

  // --- Webhooks --------------------------------------------------------------------------------
  ASSERT_TRUE(WaitFor(
      [&] {
        return receiver_.Has("job_restarted", "job", "id", running) &&
               receiver_.Has("job_failed", "job", "id", failing) &&
               receiver_.Has("worker_lost", "worker", "id", "w-doomed");
      },
      absl::Seconds(20)))
      << "events: " << nlohmann::json(receiver_.Events()).dump();
  for (const auto& e : receiver_.Events()) {
    if (e.value("event", "") == "job_failed") {
      EXPECT_EQ(e.value("url", ""), Url("/jobs/" + failing)) << "alerts link to the job's page";
    }
  }
  for (const std::string& sig : receiver_.Signatures()) {
    EXPECT_THAT(sig, ::testing::MatchesRegex("sha256=[0-9a-f]{64}"));
  }

  // --- The dashboard in a real browser -----------------------------------------------------------
  if (const std::string why = BrowserUnavailableReason(); !why.empty()) {
    GTEST_SKIP() << "browser part skipped: " << why;
  }
  absl::StatusOr<std::unique_ptr<Browser>> browser = Browser::Start(cluster_.dir() + "/browser");
  ASSERT_TRUE(browser.ok()) << browser.status();
  Browser& b = **browser;
  ASSERT_TRUE(b.Navigate(Url("/")).ok());
  ASSERT_TRUE(b.WaitFor("#token", absl::Seconds(10)).ok()) << "no sign-in form";
  auto field = b.FindAll("#token");
  ASSERT_TRUE(field.ok() && !field->empty());
  ASSERT_TRUE(b.Type((*field)[0], cluster_.admin_token()).ok());
  auto button = b.FindAll("#signin");
  ASSERT_TRUE(button.ok() && !button->empty());
  ASSERT_TRUE(b.Click((*button)[0]).ok());
  ASSERT_TRUE(b.WaitFor("#count-running", absl::Seconds(10)).ok()) << *b.PageSource();

  // The overview: both jobs listed with their states, the dead worker called out.
  auto row_state = [&](const std::string& job) -> std::string {
    auto rows = b.FindAll(absl::StrCat("tr[data-job=\"", job, "\"]"));
    if (!rows.ok() || rows->empty()) return "";
    return b.Attribute((*rows)[0], "data-state").value_or("");
  };
  EXPECT_EQ(row_state(running), "running");
  EXPECT_EQ(row_state(failing), "failed");
  auto dead_card = b.FindAll("#dead-card");
  ASSERT_TRUE(dead_card.ok() && !dead_card->empty());
  EXPECT_THAT(*b.Text((*dead_card)[0]), HasSubstr("w-doomed"));
  ASSERT_TRUE(b.Screenshot(ArtifactDir() + "/dashboard_overview.png").ok());

  // The running job's page: its loss curve is drawn with points, restarts are marked.
  ASSERT_TRUE(b.Navigate(Url("/jobs/" + running)).ok());
  auto curve = b.WaitFor("#chart-loss polyline.series", absl::Seconds(10));
  ASSERT_TRUE(curve.ok()) << *b.PageSource();
  const std::string points = b.Attribute((*curve)[0], "data-points").value_or("0");
  int n = 0;
  ASSERT_TRUE(absl::SimpleAtoi(points, &n));
  EXPECT_GE(n, 10);
  // The browser laid the curve out: its polyline spans real pixels.
  auto width =
      b.Execute("return document.querySelector('#chart-loss polyline.series').getBBox().width;");
  ASSERT_TRUE(width.ok()) << width.status();
  EXPECT_GT(width->get<double>(), 100);
  auto markers = b.FindAll("#chart-loss .marker");
  ASSERT_TRUE(markers.ok());
  EXPECT_GE(markers->size(), 1u) << "the restart is marked on the curve";
  auto risk = b.FindAll("#at-risk");
  ASSERT_TRUE(risk.ok() && !risk->empty());
  EXPECT_THAT(*b.Text((*risk)[0]), ::testing::MatchesRegex("step [0-9]+.*"))
      << "the newest checkpoint is shown";
  auto attempts = b.FindAll("#attempts tbody tr");
  ASSERT_TRUE(attempts.ok());
  EXPECT_EQ(attempts->size(), 2u);
  auto mixture = b.FindAll("#chart-mixture polyline.series");
  ASSERT_TRUE(mixture.ok());
  EXPECT_EQ(mixture->size(), 4u) << "realised and requested share per source";
  ASSERT_TRUE(b.Screenshot(ArtifactDir() + "/dashboard_job.png").ok());

  // The live refresh replaces the page's content in place: the step moves on.
  auto step_text = [&]() -> std::string {
    auto r = b.Execute("return document.querySelector('#run-card .bar').title;");
    return r.ok() ? r->get<std::string>() : "";
  };
  const std::string before = step_text();
  EXPECT_TRUE(WaitFor([&] { return step_text() != before; }, absl::Seconds(15)))
      << "still " << before;

  // The fleet: the killed worker is shown dead.
  ASSERT_TRUE(b.Navigate(Url("/workers")).ok());
  auto dead = b.WaitFor("tr[data-worker=\"w-doomed\"]", absl::Seconds(10));
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(b.Attribute((*dead)[0], "data-state").value_or(""), "dead");
  EXPECT_THAT(*b.Text((*dead)[0]), HasSubstr("dead"));
  auto alive = b.FindAll("tr[data-worker=\"w-train\"]");
  ASSERT_TRUE(alive.ok() && !alive->empty());
  EXPECT_EQ(b.Attribute((*alive)[0], "data-state").value_or(""), "alive");
  ASSERT_TRUE(b.Screenshot(ArtifactDir() + "/dashboard_workers.png").ok());

  // Signing out ends the session.
  auto out = b.FindAll("header form button");
  ASSERT_TRUE(out.ok() && !out->empty());
  ASSERT_TRUE(b.Click((*out)[0]).ok());
  ASSERT_TRUE(b.WaitFor("#token", absl::Seconds(10)).ok());
  ASSERT_TRUE(b.Navigate(Url("/workers")).ok());
  EXPECT_TRUE(b.WaitFor("#token", absl::Seconds(10)).ok()) << "signed out, sent to sign in";
}

}  // namespace
}  // namespace forge::testing
