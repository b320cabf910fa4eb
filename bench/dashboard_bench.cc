// Cost of the operators' view on a busy coordinator, in process (no socket): the job page of a
// long run (first view: its whole metric series read and drawn; refresh: only new points
// read), the overview and the job list with many
// jobs, and a /metrics scrape with many running jobs. Real Store (SQLite on a temp dir),
// JobManager, WorkerManager, StorageGateway and Dashboard.
//
// Reference: the page refreshes itself every 5 s and Prometheus' default scrape timeout is
// 10 s; each row says what share of that budget one answer costs.
//
//   build/bin/forge-bench-dashboard --points=100000 --jobs=500 --workers=200 --reps=20
#include <httplib.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "bench/bench_util.h"
#include "coordinator/auth.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/dashboard.h"
#include "coordinator/fake_worker_connection.h"

ABSL_FLAG(int, points, 100000, "metric points (steps reported) of the long job");
ABSL_FLAG(int, jobs, 500, "jobs submitted and placed (running: each has /metrics series)");
ABSL_FLAG(int, workers, 200, "registered workers (8 cpu devices each)");
ABSL_FLAG(int, reps, 20, "answers timed per row");

namespace forge::coordinator {
namespace {

int Run() {
  std::string tmpl = "/tmp/forge-bench-dashboard-XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  StoreOptions so;
  so.path = dir + "/state.db";
  so.synchronous_full = false;
  auto store = *Store::Open(so);
  AuthManager auth(store.get(), RealClock());
  (void)auth.Recover();
  std::string admin;
  {
    absl::Notification done;
    auth.CreateToken(forge::v1::TOKEN_KIND_ADMIN, "", "bench", [&](auto t) {
      admin = t->secret;
      done.Notify();
    });
    done.WaitForNotification();
  }
  StorageGatewayOptions go;
  go.root = dir + "/storage";
  auto storage = *StorageGateway::Open(go, store.get());
  CoordinatorMetrics metrics(RealClock());
  WorkerManager workers(store.get(), RealClock(), WorkerManagerOptions{});
  JobManagerOptions jo;
  jo.send_to_worker = [](const std::string&, const forge::v1::CoordinatorMessage&) { return true; };
  jo.on_transition = [&](const forge::v1::Job& j, forge::v1::JobState f, absl::Duration q) {
    metrics.OnJobTransition(j, f, q);
  };
  JobManager jobs(store.get(), RealClock(), jo);
  (void)jobs.Recover();
  metrics.SetSources(&jobs, &workers);

  for (int w = 0; w < absl::GetFlag(FLAGS_workers); ++w) {
    forge::v1::RegisterWorker r;
    r.set_worker_id(absl::StrCat("w", w));
    r.set_hostname(absl::StrCat("host-", w));
    for (int d = 0; d < 8; ++d) {
      auto* dev = r.add_devices();
      dev->set_id(absl::StrCat("cpu:", d));
      dev->set_kind(forge::v1::DEVICE_KIND_CPU);
    }
    (void)workers.Register(r, std::make_shared<FakeWorkerConnection>());
  }
  Principal tenant;
  tenant.kind = forge::v1::TOKEN_KIND_TENANT;
  tenant.tenant = "acme";
  std::string long_job;
  for (int i = 0; i < absl::GetFlag(FLAGS_jobs); ++i) {
    forge::v1::SubmitJobRequest req;
    req.mutable_spec()->set_name(absl::StrCat("job-", i));
    req.mutable_spec()->mutable_model()->set_preset("tiny");
    for (const char* d : {"general", "tickets"}) {
      auto* m = req.mutable_spec()->mutable_data()->add_mixture();
      m->set_dataset(d);
      m->set_weight(1);
    }
    req.mutable_spec()->mutable_train()->set_steps(absl::GetFlag(FLAGS_points));
    std::promise<std::string> id;
    jobs.Submit(tenant, std::move(req), [&](auto r) { id.set_value(r.ok() ? r->job().id() : ""); });
    const std::string got = id.get_future().get();
    if (long_job.empty()) long_job = got;
  }
  // Every job runs (attempt 1), one rank on its own device, so each has /metrics series; the
  // long one on w0 cpu:0. Its series is written as the trainer reports it: one point per step.
  {
    forge::v1::ListJobsRequest all;
    all.set_limit(10000);
    Principal admin_p;
    admin_p.kind = forge::v1::TOKEN_KIND_ADMIN;
    std::vector<forge::v1::Job> listed = *jobs.List(admin_p, all);
    std::reverse(listed.begin(), listed.end());  // oldest (the long job) first
    for (size_t i = 0; i < listed.size(); ++i) {
      const int w = static_cast<int>(i / 8);
      if (w >= absl::GetFlag(FLAGS_workers)) break;
      if (!jobs.Place(JobPlacement{listed[i].id(),
                                   {{absl::StrCat("w", w), absl::StrCat("cpu:", i % 8)}}})) {
        std::fprintf(stderr, "could not place %s\n", listed[i].id().c_str());
        return 1;
      }
    }
    (void)store->CommitSync({});
  }
  const int points = absl::GetFlag(FLAGS_points);
  for (int start = 1; start <= points; start += 5000) {
    WriteBatch b;
    for (int s = start; s < start + 5000 && s <= points; ++s) {
      MetricRecord r;
      r.job_id = long_job;
      r.point.set_attempt(1);
      r.point.set_step(s);
      r.point.set_loss(2 + 3.0 / s);
      r.point.set_lr(3e-4);
      r.point.set_tokens_per_second(50000);
      (*r.point.mutable_tokens_per_source())["general"] = 1024LL * s;
      (*r.point.mutable_tokens_per_source())["tickets"] = 3072LL * s;
      b.put_metrics.push_back(std::move(r));
    }
    (void)store->CommitSync(std::move(b));
  }

  DashboardSources ds;
  ds.auth = &auth;
  ds.jobs = &jobs;
  ds.workers = &workers;
  ds.storage = storage.get();
  ds.store = store.get();
  ds.render_metrics = [&] { return metrics.Render(); };
  Dashboard dashboard(std::move(ds));

  struct Row {
    std::string what;
    std::string path;
    double budget_s;
  };
  const std::vector<Row> rows = {
      // A fresh dashboard reads the whole series once (the first row's first answer); the live
      // refresh then reads only new points.
      {absl::StrCat("job page, first view, ", points, " points"), "/jobs/" + long_job, 5},
      {absl::StrCat("job page, refresh, ", points, " points"), "/jobs/" + long_job, 5},
      {absl::StrCat("overview, ", absl::GetFlag(FLAGS_jobs), " jobs, ",
                    absl::GetFlag(FLAGS_workers), " workers"),
       "/", 5},
      {absl::StrCat("job list, ", absl::GetFlag(FLAGS_jobs), " jobs"), "/jobs", 5},
      {absl::StrCat("workers, ", absl::GetFlag(FLAGS_workers)), "/workers", 5},
      {absl::StrCat("/metrics, ", absl::GetFlag(FLAGS_jobs), " running jobs"), "/metrics", 10},
  };
  std::printf("forge-bench-dashboard: %s, %u threads\n", bench::CpuModel().c_str(),
              std::thread::hardware_concurrency());
  std::printf("%-44s %10s %10s %10s %14s\n", "answer", "median ms", "p95 ms", "KiB",
              "share of budget");
  for (const Row& row : rows) {
    // The first-view row gets a fresh Dashboard (an empty series cache) for every answer.
    const bool cold = absl::StrContains(row.what, "first view");
    std::vector<double> ms;
    size_t bytes = 0;
    std::string res_body;
    for (int i = 0; i < absl::GetFlag(FLAGS_reps); ++i) {
      httplib::Request req;
      req.method = "GET";
      req.path = row.path;
      req.target = row.path;
      req.headers.emplace("Authorization", "Bearer " + admin);
      httplib::Response res;
      std::unique_ptr<Dashboard> fresh;
      if (cold) {
        DashboardSources fs;
        fs.auth = &auth;
        fs.jobs = &jobs;
        fs.workers = &workers;
        fs.storage = storage.get();
        fs.store = store.get();
        fresh = std::make_unique<Dashboard>(std::move(fs));
      }
      const auto t0 = std::chrono::steady_clock::now();
      (cold ? *fresh : dashboard).Serve(req, res);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      bytes = res.body.size();
      res_body = res.body;
      if (res.status != 200) {
        std::fprintf(stderr, "%s answered %d\n", row.path.c_str(), res.status);
        return 1;
      }
    }
    if (cold) {
      // The curve really was drawn from the whole series (downsampled to its vertex cap).
      const std::string key = "data-series=\"training loss\" data-points=\"";
      const size_t at = res_body.find(key);
      std::printf("  (loss curve: %s vertices drawn from %d points)\n",
                  at == std::string::npos ? "NO" : res_body.substr(at + key.size(), 3).c_str(),
                  points);
    }
    const double median = bench::Percentile(ms, 0.5);
    std::printf("%-44s %10.1f %10.1f %10.0f %13.2f%% (of %.0f s)\n", row.what.c_str(), median,
                bench::Percentile(ms, 0.95), bytes / 1024.0, 100 * median / 1000 / row.budget_s,
                row.budget_s);
  }
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace forge::coordinator

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return forge::coordinator::Run();
}
