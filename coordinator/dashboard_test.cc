// The dashboard's router called directly (no socket), over real managers on a temp store.
#include "coordinator/dashboard.h"

#include <httplib.h>
#include <stdlib.h>

#include <filesystem>
#include <future>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/fake_clock.h"
#include "common/proto_time.h"
#include "coordinator/dashboard_pages.h"
#include "coordinator/fake_worker_connection.h"
#include "coordinator/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("dashboard_test");
    store_ = OpenTestStore(dir_);
    auth_ = std::make_unique<AuthManager>(store_.get(), &clock_);
    ASSERT_TRUE(auth_->Recover().ok());
    StorageGatewayOptions go;
    go.root = dir_ + "/storage";
    storage_ = *StorageGateway::Open(go, store_.get());
    workers_ = std::make_unique<WorkerManager>(store_.get(), &clock_, WorkerManagerOptions{});
    JobManagerOptions jo;
    jo.send_to_worker = [](const std::string&, const forge::v1::CoordinatorMessage&) {
      return true;
    };
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, jo);
    ASSERT_TRUE(jobs_->Recover().ok());
    acme_ = CreateToken(forge::v1::TOKEN_KIND_TENANT, "acme");
    globex_ = CreateToken(forge::v1::TOKEN_KIND_TENANT, "globex");
    admin_ = CreateToken(forge::v1::TOKEN_KIND_ADMIN, "");
    worker_ = CreateToken(forge::v1::TOKEN_KIND_WORKER, "");
    DashboardSources ds;
    ds.auth = auth_.get();
    ds.jobs = jobs_.get();
    ds.workers = workers_.get();
    ds.storage = storage_.get();
    ds.store = store_.get();
    ds.clock = &clock_;
    ds.render_metrics = [] { return std::string("# HELP x y\n# TYPE x gauge\nx 1\n"); };
    ds.count_request = [this](const std::string& route, int code) {
      counted_.push_back(absl::StrCat(route, " ", code));
    };
    dashboard_ = std::make_unique<Dashboard>(std::move(ds));
  }
  void TearDown() override {
    dashboard_.reset();
    jobs_.reset();
    workers_.reset();
    storage_.reset();
    auth_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string CreateToken(forge::v1::TokenKind kind, const std::string& tenant) {
    absl::Notification done;
    std::string secret;
    auto got = [&](absl::StatusOr<CreatedToken> t) {
      EXPECT_TRUE(t.ok()) << t.status();
      if (t.ok()) secret = t->secret;
      done.Notify();
    };
    if (kind == forge::v1::TOKEN_KIND_TENANT) {
      auth_->CreateTenant(tenant, got);
    } else {
      auth_->CreateToken(kind, "", "test", got);
    }
    done.WaitForNotification();
    return secret;
  }

  std::string Submit(const std::string& tenant, const std::string& name) {
    forge::v1::SubmitJobRequest req;
    req.mutable_spec()->set_name(name);
    req.mutable_spec()->mutable_model()->set_preset("tiny");
    auto* m = req.mutable_spec()->mutable_data()->add_mixture();
    m->set_dataset("general");
    m->set_weight(1);
    auto* m2 = req.mutable_spec()->mutable_data()->add_mixture();
    m2->set_dataset("tickets");
    m2->set_weight(3);
    req.mutable_spec()->mutable_train()->set_steps(100);
    auto r = SubmitAndWait(*jobs_, TenantPrincipal(tenant), std::move(req));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job().id() : "";
  }

  httplib::Response Get(const std::string& path, const std::string& cookie = "",
                        const std::string& bearer = "") {
    httplib::Request req;
    req.method = "GET";
    const size_t q = path.find('?');
    req.path = path.substr(0, q);
    req.target = path;
    if (q != std::string::npos) {
      httplib::detail::parse_query_text(path.substr(q + 1), req.params);
    }
    if (!cookie.empty()) req.headers.emplace("Cookie", "forge_session=" + cookie);
    if (!bearer.empty()) req.headers.emplace("Authorization", "Bearer " + bearer);
    httplib::Response res;
    dashboard_->Serve(req, res);
    return res;
  }

  httplib::Response Post(const std::string& path, const httplib::Params& form,
                         const std::string& origin = "", const std::string& cookie = "") {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.target = path;
    req.params = form;
    req.headers.emplace("Host", "127.0.0.1:7780");
    if (!origin.empty()) req.headers.emplace("Origin", origin);
    if (!cookie.empty()) req.headers.emplace("Cookie", "forge_session=" + cookie);
    httplib::Response res;
    dashboard_->Serve(req, res);
    return res;
  }

  // Signs in and returns the session cookie's value.
  std::string SignIn(const std::string& token) {
    httplib::Response res = Post("/login", {{"token", token}, {"next", "/jobs"}});
    EXPECT_EQ(res.status, 303) << res.body;
    EXPECT_EQ(res.get_header_value("Location"), "/jobs");
    std::smatch m;
    const std::string cookie = res.get_header_value("Set-Cookie");
    EXPECT_THAT(cookie, HasSubstr("HttpOnly"));
    EXPECT_THAT(cookie, HasSubstr("SameSite=Lax"));
    if (!std::regex_search(cookie, m, std::regex("forge_session=([A-Za-z0-9_-]+)"))) return "";
    return m[1];
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<AuthManager> auth_;
  std::unique_ptr<StorageGateway> storage_;
  std::unique_ptr<WorkerManager> workers_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<Dashboard> dashboard_;
  std::string acme_, globex_, admin_, worker_;
  std::vector<std::string> counted_;
};

TEST_F(DashboardTest, HealthIsOpenAndEverythingElseNeedsACaller) {
  EXPECT_EQ(Get("/healthz").status, 200);
  httplib::Response page = Get("/jobs?state=running");
  EXPECT_EQ(page.status, 303);
  EXPECT_EQ(page.get_header_value("Location"), "/login?next=%2Fjobs%3Fstate%3Drunning");
  httplib::Response metrics = Get("/metrics");
  EXPECT_EQ(metrics.status, 401);
  EXPECT_THAT(metrics.get_header_value("WWW-Authenticate"), HasSubstr("Bearer"));
  EXPECT_EQ(Get("/", "", "forge_tenant_not-a-real-token").status, 401);
  EXPECT_EQ(Get("/", "made-up-session").status, 303);
  EXPECT_EQ(Get("/static/live.js").status, 401);
  EXPECT_THAT(counted_, ::testing::Contains("healthz 200"));
  EXPECT_THAT(counted_, ::testing::Contains("unauthenticated 401"));
  // Every answer carries the security headers.
  EXPECT_THAT(page.get_header_value("Content-Security-Policy"), HasSubstr("script-src 'self'"));
  EXPECT_EQ(page.get_header_value("X-Frame-Options"), "DENY");
}

TEST_F(DashboardTest, SignInOpensASessionAndSignOutEndsIt) {
  const std::string session = SignIn(admin_);
  ASSERT_FALSE(session.empty());
  httplib::Response home = Get("/", session);
  EXPECT_EQ(home.status, 200);
  EXPECT_THAT(home.body, HasSubstr("<h1>Overview</h1>"));
  EXPECT_THAT(home.body, HasSubstr("admin"));
  EXPECT_EQ(Get("/static/live.js", session).status, 200);

  httplib::Response out = Post("/logout", {}, "", session);
  EXPECT_EQ(out.status, 303);
  EXPECT_THAT(out.get_header_value("Set-Cookie"), HasSubstr("Max-Age=0"));
  EXPECT_EQ(Get("/", session).status, 303);
}

TEST_F(DashboardTest, BadSignInsAreRefusedWithTheReason) {
  httplib::Response wrong = Post("/login", {{"token", "forge_admin_nope"}});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_THAT(wrong.body, HasSubstr("unknown token"));
  EXPECT_THAT(wrong.get_header_value("Set-Cookie"), Not(HasSubstr("forge_session=")));
  httplib::Response worker = Post("/login", {{"token", worker_}});
  EXPECT_EQ(worker.status, 401);
  EXPECT_THAT(worker.body, HasSubstr("worker tokens cannot sign in"));
  httplib::Response empty = Post("/login", {{"token", "  "}});
  EXPECT_EQ(empty.status, 401);
  // A form posted from another site; a redirect target off the site.
  EXPECT_EQ(Post("/login", {{"token", admin_}}, "http://evil.example").status, 403);
  httplib::Response off = Post("/login", {{"token", admin_}, {"next", "//evil.example/x"}});
  EXPECT_EQ(off.status, 303);
  EXPECT_EQ(off.get_header_value("Location"), "/");
  for (const char* bad :
       {"/\t/evil.example", "/\\evil.example", "http://evil.example", "/\x7f/x"}) {
    httplib::Response r = Post("/login", {{"token", admin_}, {"next", bad}});
    EXPECT_EQ(r.get_header_value("Location"), "/") << bad;
  }
  EXPECT_EQ(Post("/login", {{"token", admin_}}, "http://127.0.0.1:7780").status, 303);
  EXPECT_EQ(dashboard_->sessions().size(), 6u);
  // A token in the URL is refused (it would land in logs and history).
  httplib::Request q;
  q.method = "POST";
  q.path = "/login";
  q.target = "/login?token=" + admin_;
  q.params.emplace("token", admin_);
  httplib::Response qr;
  dashboard_->Serve(q, qr);
  EXPECT_EQ(qr.status, 400);
  // Behind a reverse proxy the browser's origin is the forwarded host.
  httplib::Request proxied;
  proxied.method = "POST";
  proxied.path = proxied.target = "/login";
  proxied.params.emplace("token", admin_);
  proxied.headers.emplace("Host", "127.0.0.1:7780");
  proxied.headers.emplace("X-Forwarded-Host", "forge.example.com");
  proxied.headers.emplace("Origin", "https://forge.example.com");
  httplib::Response pr;
  dashboard_->Serve(proxied, pr);
  EXPECT_EQ(pr.status, 303);
  // Sign-out from another site is refused too.
  EXPECT_EQ(Post("/logout", {}, "http://evil.example").status, 403);
}

TEST_F(DashboardTest, OneTokenCannotPushOutOtherSessions) {
  const std::string admin_session = SignIn(admin_);
  for (int i = 0; i < 200; ++i) SignIn(acme_);
  EXPECT_EQ(dashboard_->sessions().size(), 65u);  // 64 for acme's token, the admin's
  EXPECT_EQ(Get("/", admin_session).status, 200);
}

TEST_F(DashboardTest, RevokingTheTokenEndsItsSessions) {
  const std::string session = SignIn(acme_);
  ASSERT_EQ(Get("/", session).status, 200);
  std::string token_id;
  for (const auto& t : auth_->ListTokens()) {
    if (t.tenant == "acme") token_id = t.id;
  }
  absl::Notification done;
  auth_->RevokeToken(token_id, [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(Get("/", session).status, 303);
  EXPECT_EQ(dashboard_->sessions().size(), 0u);
}

TEST_F(DashboardTest, SessionsExpireWhenIdle) {
  const std::string session = SignIn(acme_);
  clock_.Advance(absl::Hours(11));
  EXPECT_EQ(Get("/", session).status, 200);  // sliding: this use extends it
  clock_.Advance(absl::Hours(11));
  EXPECT_EQ(Get("/", session).status, 200);
  clock_.Advance(absl::Hours(13));
  EXPECT_EQ(Get("/", session).status, 303);
}

TEST_F(DashboardTest, ATenantSeesOnlyItsJobsAndNoFleet) {
  const std::string mine = Submit("acme", "support-expert");
  const std::string theirs = Submit("globex", "secret-project");
  const std::string session = SignIn(acme_);
  httplib::Response jobs = Get("/jobs", session);
  ASSERT_EQ(jobs.status, 200);
  EXPECT_THAT(jobs.body, HasSubstr(mine));
  EXPECT_THAT(jobs.body, Not(HasSubstr(theirs)));
  EXPECT_THAT(jobs.body, Not(HasSubstr("secret-project")));
  EXPECT_THAT(jobs.body, Not(HasSubstr("href=\"/workers\"")));
  EXPECT_EQ(Get("/jobs/" + theirs, session).status, 404);
  EXPECT_EQ(Get("/jobs/" + theirs + "/logs", session).status, 404);
  EXPECT_EQ(Get("/jobs/" + mine, session).status, 200);
  EXPECT_EQ(Get("/workers", session).status, 403);
  EXPECT_EQ(Get("/metrics", session).status, 403);
  EXPECT_EQ(Get("/metrics", "", acme_).status, 403);
  // The same through a bearer token, as a script would.
  httplib::Response api = Get("/", "", acme_);
  EXPECT_EQ(api.status, 200);
  EXPECT_THAT(api.body, HasSubstr(mine));
  EXPECT_EQ(Get("/", "", worker_).status, 403);
}

TEST_F(DashboardTest, AnAdminSeesEveryJobTheQueueAndTheMetrics) {
  const std::string a = Submit("acme", "support-expert");
  const std::string g = Submit("globex", "secret-project");
  const std::string session = SignIn(admin_);
  httplib::Response home = Get("/", session);
  ASSERT_EQ(home.status, 200);
  // Both wait in the queue (no workers): listed with tenants.
  EXPECT_THAT(home.body, HasSubstr("Queue (2)"));
  EXPECT_THAT(home.body, HasSubstr(a));
  EXPECT_THAT(home.body, HasSubstr(g));
  EXPECT_THAT(home.body, HasSubstr("globex"));
  httplib::Response metrics = Get("/metrics", "", admin_);
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.get_header_value("Content-Type"), HasSubstr("version=0.0.4"));
  EXPECT_EQ(metrics.body, "# HELP x y\n# TYPE x gauge\nx 1\n");
  httplib::Response filtered = Get("/jobs?state=failed", session);
  EXPECT_THAT(filtered.body, HasSubstr("0 jobs"));
  EXPECT_EQ(Get("/nope", session).status, 404);
}

TEST_F(DashboardTest, ADeadWorkerIsShownDead) {
  auto reg = [](const std::string& id) {
    forge::v1::RegisterWorker r;
    r.set_worker_id(id);
    r.set_hostname("host-" + id);
    auto* d = r.add_devices();
    d->set_id("cpu:0");
    d->set_kind(forge::v1::DEVICE_KIND_CPU);
    return r;
  };
  auto alive = workers_->Register(reg("w-alive"), std::make_shared<FakeWorkerConnection>());
  ASSERT_TRUE(alive.ok());
  ASSERT_TRUE(workers_->Register(reg("w-gone"), std::make_shared<FakeWorkerConnection>()).ok());
  clock_.Advance(absl::Seconds(2));
  workers_->Heartbeat("w-alive", alive->second, forge::v1::Heartbeat());
  clock_.Advance(absl::Seconds(2));
  EXPECT_THAT(workers_->ExpireSilent(), ::testing::ElementsAre("w-gone"));
  const std::string session = SignIn(admin_);
  httplib::Response page = Get("/workers", session);
  ASSERT_EQ(page.status, 200);
  EXPECT_THAT(page.body, HasSubstr("data-worker=\"w-gone\" data-state=\"dead\""));
  EXPECT_THAT(page.body, HasSubstr("data-worker=\"w-alive\" data-state=\"alive\""));
  httplib::Response home = Get("/", session);
  EXPECT_THAT(home.body, HasSubstr("Dead workers"));
  EXPECT_THAT(home.body, HasSubstr("w-gone"));
}

TEST_F(DashboardTest, AJobPageDrawsItsCurvesFromTheMetricSeries) {
  const std::string id = Submit("acme", "support-expert");
  WriteBatch batch;
  for (int step = 1; step <= 30; ++step) {
    MetricRecord r;
    r.job_id = id;
    r.point.set_attempt(1);
    r.point.set_step(step);
    r.point.set_loss(5.0 / step);
    r.point.set_lr(1e-3);
    r.point.set_tokens_per_second(1000 + step);
    (*r.point.mutable_tokens_per_source())["general"] = 256 * step;
    (*r.point.mutable_tokens_per_source())["tickets"] = 768 * step;
    batch.put_metrics.push_back(r);
  }
  ASSERT_TRUE(store_->CommitSync(std::move(batch)).ok());
  ASSERT_TRUE(storage_->AppendLog("acme", id, "a1 r0 | step 1 loss 5.0\na1 r0 | <b>hi</b>\n").ok());
  const std::string session = SignIn(acme_);
  httplib::Response page = Get("/jobs/" + id, session);
  ASSERT_EQ(page.status, 200);
  EXPECT_THAT(page.body, HasSubstr("id=\"chart-loss\""));
  EXPECT_THAT(page.body, HasSubstr("data-series=\"training loss\" data-points=\"30\""));
  EXPECT_THAT(page.body, HasSubstr("id=\"chart-mixture\""));
  EXPECT_THAT(page.body, HasSubstr("tickets (requested)"));
  EXPECT_THAT(page.body, HasSubstr("&lt;b&gt;hi&lt;/b&gt;"));  // log text is escaped
  EXPECT_THAT(page.body, Not(HasSubstr("<b>hi</b>")));
  httplib::Response logs = Get("/jobs/" + id + "/logs", session);
  EXPECT_EQ(logs.status, 200);
  EXPECT_THAT(logs.body, HasSubstr("step 1 loss 5.0"));
  EXPECT_THAT(logs.get_header_value("Content-Type"), HasSubstr("text/plain"));
  EXPECT_EQ(Get("/jobs/" + id + "/logs?offset=999999", session).status, 416);
  EXPECT_EQ(Get("/jobs/" + id + "/logs?offset=x", session).status, 400);
}

TEST(DashboardPagesTest, RequestedWeightsFollowTheSchedule) {
  forge::v1::JobSpec spec;
  auto* a = spec.mutable_data()->add_mixture();
  a->set_dataset("a");
  a->set_weight(1);
  auto* b = spec.mutable_data()->add_mixture();
  b->set_dataset("b");
  b->set_weight(3);
  EXPECT_THAT(RequestedWeights(spec, 0, 100), ::testing::ElementsAre(0.25, 0.75));
  auto* p0 = spec.mutable_data()->add_schedule();
  p0->set_at(0);
  (*p0->mutable_weights())["a"] = 1;
  (*p0->mutable_weights())["b"] = 1;
  auto* p1 = spec.mutable_data()->add_schedule();
  p1->set_at(1);
  (*p1->mutable_weights())["a"] = 1;
  (*p1->mutable_weights())["b"] = 9;
  EXPECT_THAT(RequestedWeights(spec, 0, 100), ::testing::ElementsAre(0.5, 0.5));
  auto mid = RequestedWeights(spec, 50, 100);
  EXPECT_NEAR(mid[0], 0.3, 1e-12);
  EXPECT_NEAR(mid[1], 0.7, 1e-12);
  EXPECT_THAT(RequestedWeights(spec, 100, 100), ::testing::ElementsAre(0.1, 0.9));
}

TEST(DashboardPagesTest, RealisedMixtureIsTheShareOfEachWindow) {
  forge::v1::JobSpec spec;
  spec.mutable_data()->add_mixture()->set_dataset("a");
  spec.mutable_data()->add_mixture()->set_dataset("b");
  std::vector<forge::v1::MetricPoint> pts(5);
  const int64_t a[] = {0, 10, 20, 20, 60};
  const int64_t b[] = {0, 30, 60, 100, 100};
  for (int i = 0; i < 5; ++i) {
    pts[i].set_step(i);
    (*pts[i].mutable_tokens_per_source())["a"] = a[i];
    (*pts[i].mutable_tokens_per_source())["b"] = b[i];
  }
  auto got = RealisedMixture(spec, pts, 10);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].first, 1);
  EXPECT_THAT(got[0].second, ::testing::ElementsAre(0.25, 0.75));
  EXPECT_THAT(got[2].second, ::testing::ElementsAre(0.0, 1.0));
  EXPECT_THAT(got[3].second, ::testing::ElementsAre(1.0, 0.0));
  auto coarse = RealisedMixture(spec, pts, 2);  // windows of two reports
  ASSERT_EQ(coarse.size(), 2u);
  EXPECT_EQ(coarse[0].first, 2);
  EXPECT_THAT(coarse[0].second, ::testing::ElementsAre(0.25, 0.75));
}

// The dashboard's store, written the way trainers' reports are.
class SeriesCacheTest : public DashboardTest {
 protected:
  void Report(int attempt, int from, int to) {
    WriteBatch b;
    for (int step = from; step <= to; ++step) {
      MetricRecord r;
      r.job_id = "j-1";
      r.point.set_attempt(attempt);
      r.point.set_step(step);
      r.point.set_loss(attempt * 100 + step);
      b.put_metrics.push_back(r);
    }
    ASSERT_TRUE(store_->CommitSync(std::move(b)).ok());
  }
  // (step, attempt) of each point.
  static std::vector<std::pair<int64_t, int>> Keys(const std::vector<forge::v1::MetricPoint>& v) {
    std::vector<std::pair<int64_t, int>> out;
    for (const auto& p : v) out.emplace_back(p.step(), p.attempt());
    return out;
  }
  std::vector<std::pair<int64_t, int>> Truth() { return Keys(*store_->LoadMetrics("j-1", 0)); }
};

TEST_F(SeriesCacheTest, ReadsOnlyNewPointsAndStaysRightAcrossARestart) {
  SeriesCache cache(store_.get());
  Report(1, 1, 10);
  auto first = *cache.Get("j-1", 1);
  EXPECT_EQ(first->size(), 10u);
  Report(1, 11, 15);
  auto second = *cache.Get("j-1", 1);
  EXPECT_EQ(first->size(), 10u) << "a vector handed out never changes";
  EXPECT_EQ(Keys(*second), Truth());
  // Attempt 2 resumes from step 5 and replays 6..12 while attempt 1's 13..15 are newer.
  Report(2, 6, 12);
  EXPECT_EQ(Keys(**cache.Get("j-1", 2)), Truth());
  Report(2, 13, 14);
  EXPECT_EQ(Keys(**cache.Get("j-1", 2)), Truth());
  Report(2, 15, 20);
  EXPECT_EQ(Keys(**cache.Get("j-1", 2)), Truth());
  Report(2, 21, 25);  // now incremental again
  auto last = *cache.Get("j-1", 2);
  EXPECT_EQ(Keys(*last), Truth());
  EXPECT_EQ(last->back().step(), 25);
}

TEST_F(SeriesCacheTest, KeepsAFewJobs) {
  SeriesCache cache(store_.get(), /*max_jobs=*/2);
  Report(1, 1, 3);
  for (const char* job : {"j-1", "j-2", "j-3", "j-1"}) EXPECT_TRUE(cache.Get(job, 1).ok());
  EXPECT_EQ((*cache.Get("j-1", 1))->size(), 3u);
  EXPECT_EQ((*cache.Get("j-9", 1))->size(), 0u);
}

}  // namespace
}  // namespace forge::coordinator
