// The coordinator's HTTP surface (--http): the operators' dashboard, Prometheus /metrics and
// /healthz.
//
// Every route but /healthz and the sign-in form needs a caller: a browser session (cookie
// from signing in with a token) or an "Authorization: Bearer <token>" header (scrapers,
// scripts). Tenants see their own jobs; admins see every job and the fleet (workers,
// /metrics). Worker tokens are refused.
//
// Dashboard::Serve is the whole router and is called directly by tests; HttpServer runs it
// behind cpp-httplib on a socket.
//
// Thread safety: thread-safe; the managers it reads are.
#ifndef FORGE_COORDINATOR_DASHBOARD_H_
#define FORGE_COORDINATOR_DASHBOARD_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "coordinator/auth.h"
#include "coordinator/job_manager.h"
#include "coordinator/schedule_manager.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "coordinator/web_sessions.h"
#include "coordinator/worker_manager.h"

namespace httplib {
struct Request;
struct Response;
class Server;
}  // namespace httplib

namespace forge::coordinator {

struct DashboardSources {
  const AuthManager* auth = nullptr;
  JobManager* jobs = nullptr;
  WorkerManager* workers = nullptr;
  StorageGateway* storage = nullptr;
  Store* store = nullptr;                      // job metric series
  const ScheduleManager* schedules = nullptr;  // null: the Schedules page is empty
  Clock* clock = RealClock();
  // The Prometheus exposition for /metrics (admins only); null = 404.
  std::function<std::string()> render_metrics;
  // Counts each answered request by route and status code (for /metrics); may be null.
  std::function<void(const std::string& route, int code)> count_request;
};

// The metric series of recently viewed jobs, kept so that a page refreshing every few
// seconds reads only the points reported since (a long run has one point per step). A series
// is read whole while its newest point is not the current attempt's (a restart replays steps).
//
// Thread safety: thread-safe (mu_; held while the store is read, so two viewers of one job
// never read its series twice).
class SeriesCache {
 public:
  explicit SeriesCache(Store* store, size_t max_jobs = 8) : store_(store), max_jobs_(max_jobs) {}
  // Every point of `job_id`, ordered by (step, attempt). The vector is never changed once
  // returned (a later Get with new points copies it if it is still in use).
  absl::StatusOr<std::shared_ptr<const std::vector<forge::v1::MetricPoint>>> Get(
      const std::string& job_id, int32_t attempt);

 private:
  struct Entry {
    int32_t attempt = 0;
    int64_t last_step = 0;
    std::shared_ptr<std::vector<forge::v1::MetricPoint>> points;
    uint64_t used = 0;
  };
  Store* const store_;
  const size_t max_jobs_;
  absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t uses_ ABSL_GUARDED_BY(mu_) = 0;
};

class Dashboard {
 public:
  explicit Dashboard(DashboardSources sources, WebSessionOptions session_options = {});

  // Answers one request completely (status, headers, body).
  void Serve(const httplib::Request& req, httplib::Response& res);

  WebSessions& sessions() { return sessions_; }

 private:
  // The caller from the Authorization header or the session cookie.
  absl::StatusOr<Principal> Caller(const httplib::Request& req);
  // Returns the route name for counting.
  std::string Route(const httplib::Request& req, httplib::Response& res);

  const DashboardSources src_;
  WebSessions sessions_;
  SeriesCache series_;
};

// Runs a Dashboard on HOST:PORT (port 0 picks a free one) on its own threads.
class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen,
                                                           Dashboard* dashboard);
  // (host, port) of "HOST:PORT" ("[::1]:PORT" for IPv6); INVALID_ARGUMENT naming --http.
  static absl::StatusOr<std::pair<std::string, int>> ParseListen(const std::string& listen);
  ~HttpServer();  // Stop()s
  int port() const { return port_; }
  void Stop();

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<std::thread> thread_;
  int port_ = 0;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_DASHBOARD_H_
