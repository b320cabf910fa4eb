#include "coordinator/dashboard.h"

#include <httplib.h>

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/dashboard_pages.h"
#include "coordinator/html.h"

namespace forge::coordinator {
namespace {

constexpr char kCookie[] = "forge_session";
constexpr int64_t kLogTailBytes = 48 << 10;
constexpr int64_t kLogPageBytes = 4 << 20;

// Pages carry only our own markup and escaped data; scripts and styles come from us alone.
constexpr char kCsp[] =
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

void Html(httplib::Response& res, int code, const std::string& body) {
  res.status = code;
  res.set_content(body, "text/html; charset=utf-8");
}

void Text(httplib::Response& res, int code, const std::string& body) {
  res.status = code;
  res.set_content(body, "text/plain; charset=utf-8");
}

void Redirect(httplib::Response& res, const std::string& to) {
  res.status = 303;
  res.set_header("Location", to);
}

// Only local paths, so a crafted ?next= cannot send a signed-in person elsewhere.
std::string SafeNext(const std::string& next) {
  // Browsers drop tabs and newlines from URLs and read "\" as "/": "/\t/evil" is "//evil".
  for (char c : next) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '\\') return "/";
  }
  if (next.empty() || next[0] != '/' || (next.size() > 1 && next[1] == '/')) return "/";
  return next;
}

std::string SessionCookie(const httplib::Request& req) {
  const std::string header = req.get_header_value("Cookie");
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, kCookie) && absl::ConsumePrefix(&part, "=")) {
      return std::string(part);
    }
  }
  return "";
}

// A POST from another site is refused: the browser names its origin, which must be ours.
bool SameOrigin(const httplib::Request& req) {
  const std::string origin = req.get_header_value("Origin");
  if (origin.empty()) return true;  // not a browser form post (curl, scripts)
  absl::string_view o = origin;
  if (!absl::ConsumePrefix(&o, "http://") && !absl::ConsumePrefix(&o, "https://")) return false;
  // Behind a reverse proxy the browser's host is the one the proxy forwards.
  const std::string host = req.has_header("X-Forwarded-Host")
                               ? req.get_header_value("X-Forwarded-Host")
                               : req.get_header_value("Host");
  return o == host;
}

html::PageOptions PageFor(const Principal& p, std::string title, std::string active) {
  html::PageOptions o;
  o.title = std::move(title);
  o.active = std::move(active);
  o.who = p.is_admin() ? "admin" : absl::StrCat("tenant ", p.tenant);
  o.show_fleet = p.is_admin();
  return o;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const std::vector<forge::v1::MetricPoint>>> SeriesCache::Get(
    const std::string& job_id, int32_t attempt) {
  absl::MutexLock lock(&mu_);
  Entry& e = entries_[job_id];
  e.used = ++uses_;
  // Incremental only while the newest point is the current attempt's: right after a restart
  // the old attempt's later steps are still the newest, and the new attempt's replayed steps
  // land between them (read whole until the new attempt overtakes them).
  if (e.points == nullptr || e.attempt != attempt || e.points->empty() ||
      e.points->back().attempt() != attempt) {
    ASSIGN_OR_RETURN(std::vector<forge::v1::MetricPoint> all, store_->LoadMetrics(job_id, 0));
    e.points = std::make_shared<std::vector<forge::v1::MetricPoint>>(std::move(all));
    e.attempt = attempt;
  } else {
    ASSIGN_OR_RETURN(std::vector<forge::v1::MetricPoint> more,
                     store_->LoadMetrics(job_id, e.last_step));
    if (!more.empty()) {
      // A page still drawing the old vector keeps it; this one gets a copy.
      if (e.points.use_count() > 1) {
        e.points = std::make_shared<std::vector<forge::v1::MetricPoint>>(*e.points);
      }
      e.points->insert(e.points->end(), std::make_move_iterator(more.begin()),
                       std::make_move_iterator(more.end()));
    }
  }
  e.last_step = e.points->empty() ? 0 : e.points->back().step();
  std::shared_ptr<const std::vector<forge::v1::MetricPoint>> out = e.points;
  while (entries_.size() > max_jobs_) {
    auto oldest = entries_.begin();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.used < oldest->second.used) oldest = it;
    }
    entries_.erase(oldest);
  }
  return out;
}

Dashboard::Dashboard(DashboardSources sources, WebSessionOptions session_options)
    : src_(std::move(sources)),
      sessions_(src_.auth, src_.clock, session_options),
      series_(src_.store) {}

absl::StatusOr<Principal> Dashboard::Caller(const httplib::Request& req) {
  if (req.has_header("Authorization")) {
    absl::StatusOr<Principal> p = src_.auth->Authenticate(req.get_header_value("Authorization"));
    if (p.ok() && p->is_worker()) {
      return absl::PermissionDeniedError("worker tokens cannot read the dashboard or metrics");
    }
    return p;
  }
  const std::string session = SessionCookie(req);
  if (session.empty()) return absl::UnauthenticatedError("not signed in");
  return sessions_.Lookup(session);
}

void Dashboard::Serve(const httplib::Request& req, httplib::Response& res) {
  const std::string route = Route(req, res);
  res.set_header("Content-Security-Policy", kCsp);
  res.set_header("X-Content-Type-Options", "nosniff");
  // same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on our own
  // form posts, and SameOrigin() could not tell them from a foreign site's.
  res.set_header("Referrer-Policy", "same-origin");
  res.set_header("X-Frame-Options", "DENY");
  if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-store");
  if (src_.count_request) src_.count_request(route, res.status);
}

std::string Dashboard::Route(const httplib::Request& req, httplib::Response& res) {
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  if (!get && !post) {
    res.set_header("Allow", "GET, HEAD, POST");
    Text(res, 405, "method not allowed: the dashboard answers GET (and POST /login, /logout)\n");
    return "other";
  }
  if (path == "/healthz") {
    Text(res, 200, "ok\n");
    return "healthz";
  }
  if (path == "/login") {
    if (get) {
      Html(res, 200, RenderLogin("", SafeNext(req.get_param_value("next"))));
      return "login";
    }
    if (!SameOrigin(req)) {
      Text(res, 403, "sign-in refused: the form was posted from another site\n");
      return "login";
    }
    if (req.target.find('?') != std::string::npos &&
        absl::StrContains(req.target.substr(req.target.find('?')), "token=")) {
      // A token in the URL ends up in logs and history: only the form body is read.
      Text(res, 400, "sign-in refused: send the token in the form body, never in the URL\n");
      return "login";
    }
    const std::string next = SafeNext(req.get_param_value("next"));
    absl::StatusOr<std::string> session = sessions_.Open(req.get_param_value("token"));
    if (!session.ok()) {
      FORGE_LOG(INFO) << "event=dashboard_signin_refused reason=\"" << session.status().message()
                      << "\"";
      Html(res, 401, RenderLogin(std::string(session.status().message()), next));
      return "login";
    }
    res.set_header("Set-Cookie",
                   absl::StrCat(kCookie, "=", *session, "; Path=/; HttpOnly; SameSite=Lax"));
    Redirect(res, next);
    return "login";
  }
  if (path == "/logout") {
    if (!post) {
      Text(res, 405, "sign out with POST /logout (the button in the page header)\n");
      return "logout";
    }
    if (!SameOrigin(req)) {
      Text(res, 403, "sign-out refused: the form was posted from another site\n");
      return "logout";
    }
    if (const std::string s = SessionCookie(req); !s.empty()) sessions_.Close(s);
    res.set_header("Set-Cookie",
                   absl::StrCat(kCookie, "=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"));
    Redirect(res, "/login");
    return "logout";
  }

  absl::StatusOr<Principal> who = Caller(req);
  if (!who.ok()) {
    const bool api =
        req.has_header("Authorization") || path == "/metrics" || absl::StartsWith(path, "/static/");
    if (who.status().code() == absl::StatusCode::kPermissionDenied) {
      Text(res, 403, absl::StrCat(who.status().message(), "\n"));
    } else if (api) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"forge\"");
      Text(res, 401,
           absl::StrCat(who.status().message(), ": send \"Authorization: Bearer <token>\"\n"));
    } else {
      Redirect(res, absl::StrCat("/login?next=", html::UrlEncode(req.target)));
    }
    return "unauthenticated";
  }
  const Principal& p = *who;
  if (!get) {
    Text(res, 405, "method not allowed\n");
    return "other";
  }
  const absl::Time now = src_.clock->Now();

  if (path == "/metrics") {
    if (!p.is_admin()) {
      Text(res, 403, "/metrics is the fleet's: it needs an admin token\n");
    } else if (!src_.render_metrics) {
      Text(res, 404, "metrics are not enabled\n");
    } else {
      res.status = 200;
      res.set_content(src_.render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
    }
    return "metrics";
  }
  if (path == "/static/live.js") {
    res.status = 200;
    res.set_header("Cache-Control", "private, max-age=3600");
    res.set_content(std::string(html::LiveScript()), "text/javascript; charset=utf-8");
    return "static";
  }
  auto list = [&](std::initializer_list<forge::v1::JobState> states, int limit) {
    forge::v1::ListJobsRequest req;
    for (forge::v1::JobState st : states) req.add_states(st);
    req.set_limit(limit);
    absl::StatusOr<std::vector<forge::v1::Job>> jobs = src_.jobs->List(p, req);
    return jobs.ok() ? *std::move(jobs) : std::vector<forge::v1::Job>{};
  };
  if (path == "/") {
    OverviewData d;
    d.now = now;
    d.fleet = p.is_admin();
    d.counts = src_.jobs->CountByState(p);
    d.pending = list({forge::v1::JOB_STATE_QUEUED, forge::v1::JOB_STATE_RESTARTING}, 10000);
    d.running = list({forge::v1::JOB_STATE_RUNNING}, 10000);
    d.finished = list({forge::v1::JOB_STATE_SUCCEEDED, forge::v1::JOB_STATE_FAILED,
                       forge::v1::JOB_STATE_CANCELLED},
                      200);
    if (p.is_admin()) d.workers = src_.workers->List();
    Html(res, 200, RenderOverview(PageFor(p, "Overview", "overview"), d));
    return "overview";
  }
  if (path == "/jobs") {
    static const std::map<std::string, forge::v1::JobState> kFilters = {
        {"queued", forge::v1::JOB_STATE_QUEUED},
        {"running", forge::v1::JOB_STATE_RUNNING},
        {"restarting", forge::v1::JOB_STATE_RESTARTING},
        {"succeeded", forge::v1::JOB_STATE_SUCCEEDED},
        {"failed", forge::v1::JOB_STATE_FAILED},
        {"cancelled", forge::v1::JOB_STATE_CANCELLED}};
    std::string filter = req.get_param_value("state");
    auto f = kFilters.find(filter);
    if (f == kFilters.end()) filter.clear();
    // The newest 1,000 (of the state asked for); the CLI lists up to 10,000.
    std::vector<forge::v1::Job> jobs =
        f == kFilters.end() ? list({}, 1000) : list({f->second}, 1000);
    Html(res, 200, RenderJobList(PageFor(p, "Jobs", "jobs"), jobs, filter, p.is_admin(), now));
    return "jobs";
  }
  if (path == "/schedules") {
    std::vector<ScheduleView> views;
    if (src_.schedules != nullptr) {
      for (forge::v1::Schedule& sch : src_.schedules->List(p)) {
        ScheduleView v;
        // The ten newest: the page stays small however long a schedule has run.
        if (auto runs = src_.schedules->Runs(p, sch.id(), 10); runs.ok()) v.runs = *std::move(runs);
        v.schedule = std::move(sch);
        views.push_back(std::move(v));
      }
    }
    Html(res, 200, RenderSchedules(PageFor(p, "Schedules", "schedules"), views, p.is_admin(), now));
    return "schedules";
  }
  if (path == "/workers") {
    if (!p.is_admin()) {
      Html(res, 403,
           RenderError(PageFor(p, "Forbidden", ""), 403,
                       "The fleet is visible to admins only; sign in with an admin "
                       "token to see workers."));
    } else {
      Html(res, 200, RenderWorkers(PageFor(p, "Workers", "workers"), src_.workers->List(), now));
    }
    return "workers";
  }
  absl::string_view rest = path;
  if (absl::ConsumePrefix(&rest, "/jobs/")) {
    const bool logs = absl::ConsumeSuffix(&rest, "/logs");
    const std::string id(rest);
    absl::StatusOr<forge::v1::Job> job = src_.jobs->Get(p, id);
    if (!job.ok()) {
      Html(res, 404,
           RenderError(PageFor(p, "Not found", "jobs"), 404,
                       absl::StrCat("No job ", id, " that you can see.")));
      return logs ? "job_logs" : "job";
    }
    if (logs) {
      if (!req.has_param("offset")) {  // the last 4 MiB: what a person opening it wants
        bool truncated = false;
        absl::StatusOr<std::string> tail =
            src_.storage->ReadLogTail(job->tenant(), job->id(), kLogPageBytes, &truncated);
        if (!tail.ok()) {
          Text(res, 500, absl::StrCat(tail.status().message(), "\n"));
          return "job_logs";
        }
        Text(res, 200,
             truncated ? absl::StrCat("(older lines: ?offset=0 reads from the start)\n", *tail)
                       : *tail);
        return "job_logs";
      }
      int64_t offset = 0;
      if (!absl::SimpleAtoi(req.get_param_value("offset"), &offset)) {
        Text(res, 400, "offset must be a byte offset (an integer >= 0)\n");
        return "job_logs";
      }
      int64_t next = 0;
      absl::StatusOr<std::string> data =
          src_.storage->ReadLog(job->tenant(), job->id(), offset, kLogPageBytes, &next);
      if (!data.ok()) {
        Text(res, data.status().code() == absl::StatusCode::kOutOfRange ? 416 : 500,
             absl::StrCat(data.status().message(), "\n"));
        return "job_logs";
      }
      res.set_header("X-Forge-Next-Offset", absl::StrCat(next));
      Text(res, 200, *data);
      return "job_logs";
    }
    JobPageData d;
    d.now = now;
    d.job = *std::move(job);
    absl::StatusOr<std::shared_ptr<const std::vector<forge::v1::MetricPoint>>> series =
        series_.Get(d.job.id(), d.job.attempt());
    d.metrics = series.ok() ? *std::move(series)
                            : std::make_shared<const std::vector<forge::v1::MetricPoint>>();
    d.checkpoints = src_.storage->ListCheckpoints(d.job.tenant(), d.job.id());
    if (auto tail =
            src_.storage->ReadLogTail(d.job.tenant(), d.job.id(), kLogTailBytes, &d.log_truncated);
        tail.ok()) {
      d.log_tail = *std::move(tail);
    }
    Html(res, 200, RenderJobPage(PageFor(p, d.job.spec().name(), "jobs"), d));
    return "job";
  }
  Html(res, 404,
       RenderError(PageFor(p, "Not found", ""), 404,
                   absl::StrCat("There is no page at ", path, ".")));
  return "not_found";
}

absl::StatusOr<std::pair<std::string, int>> HttpServer::ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http: expected HOST:PORT, e.g. 127.0.0.1:7780 (port 0 picks a free one); got \"", listen,
        "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              Dashboard* dashboard) {
  ASSIGN_OR_RETURN(auto host_port, ParseListen(listen));
  const auto& [host, port] = host_port;
  auto s = std::unique_ptr<HttpServer>(new HttpServer());
  s->server_ = std::make_unique<httplib::Server>();
  // Slow or idle clients must not hold the worker threads: short timeouts, more threads.
  s->server_->new_task_queue = [] { return new httplib::ThreadPool(16); };
  s->server_->set_read_timeout(5, 0);
  s->server_->set_write_timeout(10, 0);
  s->server_->set_keep_alive_timeout(5);
  s->server_->set_keep_alive_max_count(100);
  s->server_->set_payload_max_length(64 << 10);  // a sign-in form, never more
  auto handler = [dashboard](const httplib::Request& req, httplib::Response& res) {
    dashboard->Serve(req, res);
  };
  // One catch-all route: Dashboard::Serve routes (tests call it without a socket).
  s->server_->Get(".*", handler);
  s->server_->Post(".*", handler);
  s->server_->Put(".*", handler);
  s->server_->Delete(".*", handler);
  s->server_->Patch(".*", handler);
  s->server_->Options(".*", handler);
  const int bound = port == 0 ? s->server_->bind_to_any_port(host)
                              : (s->server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("--http: cannot listen on ", listen,
                                               ": the address is in use or invalid; pick another "
                                               "(port 0 picks a free port)"));
  }
  s->port_ = bound;
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::make_unique<std::thread>([raw] { raw->listen_after_bind(); });
  // stop() is ignored until the accept loop runs: wait for it, so Stop() always works.
  for (int i = 0; i < 5000 && !raw->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return s;
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_ && thread_->joinable()) thread_->join();
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace forge::coordinator
