#include "coordinator/server.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/server_interceptor.h>

#include <atomic>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/alert_events.h"
#include "coordinator/auth.h"
#include "coordinator/checkpoint_service.h"
#include "coordinator/control_loop.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/dashboard.h"
#include "coordinator/data_service.h"
#include "coordinator/job_manager.h"
#include "coordinator/model_catalog.h"
#include "coordinator/model_service.h"
#include "coordinator/rank_tokens.h"
#include "coordinator/rendezvous.h"
#include "coordinator/schedule_manager.h"
#include "coordinator/schedule_service.h"
#include "coordinator/service.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "coordinator/trainer_service.h"
#include "coordinator/worker_manager.h"

namespace forge::coordinator {
namespace {

// Server reflection is generated code we cannot add checks to, so an interceptor guards it:
// a reflection call without a valid token is cancelled before it is served. Our own services
// authenticate in their handlers (with precise status codes); health stays open.
class ReflectionAuthInterceptor final : public grpc::experimental::Interceptor {
 public:
  ReflectionAuthInterceptor(grpc::experimental::ServerRpcInfo* info, const AuthManager* auth)
      : info_(info), auth_(auth) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* md = methods->GetRecvInitialMetadata();
      absl::string_view header;
      if (auto it = md->find("authorization"); it != md->end()) {
        header = absl::string_view(it->second.data(), it->second.size());
      }
      if (!auth_->Authenticate(header).ok()) {
        FORGE_LOG(WARNING) << "event=reflection_refused reason=unauthenticated";
        info_->server_context()->TryCancel();
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  const AuthManager* auth_;
};

class ReflectionAuthFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReflectionAuthFactory(const AuthManager* auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (!absl::StartsWith(info->method(), "/grpc.reflection.")) return nullptr;
    return new ReflectionAuthInterceptor(info, auth_);
  }

 private:
  const AuthManager* auth_;
};

}  // namespace

class Coordinator::Impl {
 public:
  absl::Status Init(const CoordinatorOptions& o) {
    dashboard_url_ = o.dashboard_url;
    while (!dashboard_url_.empty() && dashboard_url_.back() == '/') dashboard_url_.pop_back();
    // Options that can be wrong are checked before anything is created on disk.
    if (!o.http_listen.empty()) RETURN_IF_ERROR(HttpServer::ParseListen(o.http_listen).status());
    if (!o.alerts.webhook_urls.empty()) {
      AlertOptions ao = o.alerts;
      if (ao.source.empty()) ao.source = absl::StrCat("forge-coordinator ", o.listen);
      // Delivered (or given up on) everywhere: its outbox row goes.
      ao.on_settled = [this](const std::string& id) {
        WriteBatch b;
        b.delete_alerts.push_back(id);
        store_->Commit(std::move(b), [id](absl::Status s) {
          if (!s.ok()) {
            FORGE_LOG(WARNING) << "event=alert_outbox_delete_failed id=" << id << " error=" << s;
          }
        });
      };
      ASSIGN_OR_RETURN(alerts_, AlertDispatcher::Create(std::move(ao)));
    }
    RETURN_IF_ERROR(MakeDirs(o.state_dir, 0700));
    RETURN_IF_ERROR(MakeDirs(o.storage_root, 0755));
    StoreOptions so;
    so.path = o.state_dir + "/forge.db";
    so.synchronous_full = o.synchronous_full;
    ASSIGN_OR_RETURN(store_, Store::Open(so));
    clock_ = o.clock;
    RETURN_IF_ERROR(ResendOutbox());
    metrics_ = std::make_unique<CoordinatorMetrics>(o.clock);

    auth_ = std::make_unique<AuthManager>(store_.get(), o.clock);
    RETURN_IF_ERROR(auth_->Recover());
    RETURN_IF_ERROR(auth_->EnsureAdminTokenFile(o.state_dir + "/admin.token"));

    ASSIGN_OR_RETURN(rank_tokens_, RankTokens::Open(o.state_dir + "/rank-token.key"));
    StorageGatewayOptions go;
    go.root = o.storage_root;
    ASSIGN_OR_RETURN(storage_, StorageGateway::Open(go, store_.get()));
    ASSIGN_OR_RETURN(catalog_, ModelCatalog::Open(store_.get(), storage_.get(), o.clock));

    WorkerManagerOptions wo;
    wo.heartbeat_interval = o.heartbeat_interval;
    wo.grace = o.heartbeat_grace;
    wo.reconnect_grace = o.reconnect_grace;
    wo.on_lost = [this](const forge::v1::Worker& w, absl::Duration silent, WriteBatch* batch) {
      return StageAlert(WithLink(WorkerLostAlert(w, silent), "/workers"), batch);
    };
    workers_ = std::make_unique<WorkerManager>(store_.get(), o.clock, std::move(wo));
    RETURN_IF_ERROR(workers_->Recover());

    JobManagerOptions jo;
    jo.send_to_worker = [this](const std::string& w, const forge::v1::CoordinatorMessage& m) {
      return workers_->Send(w, m);
    };
    jo.wake_scheduler = [this] {
      if (loop_) loop_->Wake();
    };
    jo.ack_timeout = o.ack_timeout;
    jo.step_timeout = o.step_timeout;
    jo.restart_delay = o.heartbeat_grace;
    jo.collective_timeout = o.collective_timeout;
    jo.catalog = catalog_.get();
    jo.on_transition = [this](const forge::v1::Job& job, forge::v1::JobState from,
                              absl::Duration queued_for) {
      metrics_->OnJobTransition(job, from, queued_for);
    };
    // A job's alert is committed with its state change: a crash cannot keep one without the
    // other.
    jo.transition_rows = [this](const forge::v1::Job& job, forge::v1::JobState from,
                                WriteBatch* batch) -> std::function<void(absl::Status)> {
      std::optional<AlertEvent> a = AlertForTransition(job, from);
      if (!a) return nullptr;
      return StageAlert(WithLink(*std::move(a), absl::StrCat("/jobs/", job.id())), batch);
    };
    jo.rank_token = [this](const std::string& job, int attempt, int rank) {
      return rank_tokens_->TokenFor(job, attempt, rank);
    };
    jo.latest_checkpoint = [this](const std::string& job) -> std::pair<std::string, int64_t> {
      absl::StatusOr<forge::v1::CheckpointInfo> c = storage_->LatestCheckpoint(job);
      if (!c.ok()) return {"", 0};
      return {c->id(), c->step()};
    };
    jobs_ = std::make_unique<JobManager>(store_.get(), o.clock, jo);
    RETURN_IF_ERROR(jobs_->Recover());

    schedules_ = std::make_unique<ScheduleManager>(
        store_.get(), o.clock, jobs_.get(), storage_.get(), catalog_.get(),
        ScheduleManagerOptions{o.schedule_tick_interval, [this](const forge::v1::Schedule& sch,
                                                                const forge::v1::ScheduleRun& run,
                                                                WriteBatch* batch) {
                                 return StageAlert(
                                     WithLink(ScheduleSkippedAlert(sch, run), "/schedules"), batch);
                               }});
    RETURN_IF_ERROR(schedules_->Recover());

    ControlLoopOptions lo;
    lo.on_pass = [this](absl::Duration took) { metrics_->OnSchedulingPass(took); };
    loop_ = std::make_unique<ControlLoop>(jobs_.get(), workers_.get(), std::move(lo));
    metrics_->SetSources(
        jobs_.get(), workers_.get(),
        alerts_ ? std::function<std::map<std::pair<std::string, std::string>, int64_t>()>(
                      [this] { return alerts_->OutcomeCounts(); })
                : nullptr,
        alerts_ ? std::function<int64_t()>([this] { return alerts_->stats().queued; }) : nullptr);

    job_service_ = std::make_unique<JobServiceImpl>(auth_.get(), jobs_.get(), storage_.get(),
                                                    store_.get(), catalog_.get());
    worker_service_ = std::make_unique<WorkerServiceImpl>(
        auth_.get(), workers_.get(), jobs_.get(), storage_.get(), [this] { loop_->Wake(); });
    trainer_service_ = std::make_unique<TrainerServiceImpl>(
        rank_tokens_.get(), jobs_.get(), storage_.get(), &rendezvous_,
        [this](const std::string& id) { return catalog_->Referenced(id); },
        [this](const forge::v1::CheckpointInfo& info, absl::Duration upload) {
          metrics_->OnCheckpoint(info, upload);
        });
    data_service_ = NewDataService(auth_.get(), storage_.get());
    checkpoint_service_ = NewCheckpointService(auth_.get(), storage_.get());
    model_service_ = NewModelService(auth_.get(), catalog_.get());
    admin_service_ = std::make_unique<AdminServiceImpl>(auth_.get());
    schedule_service_ = NewScheduleService(auth_.get(), schedules_.get());

    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(o.listen, grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(o.max_message_bytes);
    builder.RegisterService(job_service_.get());
    builder.RegisterService(worker_service_.get());
    builder.RegisterService(admin_service_.get());
    builder.RegisterService(trainer_service_.get());
    builder.RegisterService(data_service_.get());
    builder.RegisterService(checkpoint_service_.get());
    builder.RegisterService(model_service_.get());
    builder.RegisterService(schedule_service_.get());
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ics;
    std::vector<std::string> methods = {"grpc.health.v1.Health/Check",
                                        "grpc.health.v1.Health/Watch",
                                        "grpc.reflection.v1alpha.ServerReflection/"
                                        "ServerReflectionInfo"};
    for (const char* name :
         {"forge.v1.JobService", "forge.v1.WorkerService", "forge.v1.AdminService",
          "forge.v1.TrainerService", "forge.v1.DataService", "forge.v1.CheckpointService",
          "forge.v1.ModelService", "forge.v1.ScheduleService"}) {
      const google::protobuf::ServiceDescriptor* d =
          google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
      for (int i = 0; d != nullptr && i < d->method_count(); ++i) {
        methods.push_back(absl::StrCat(name, "/", d->method(i)->name()));
      }
    }
    metrics_->SetKnownMethods(std::move(methods));
    ics.push_back(metrics_->RpcInterceptorFactory());
    ics.push_back(std::make_unique<ReflectionAuthFactory>(auth_.get()));
    builder.experimental().SetInterceptorCreators(std::move(ics));
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen,
                                                 ": the address is in use or invalid; pick another "
                                                 "--listen (port 0 picks a free port)"));
    }
    port_ = port;
    workers_->StartReconnectWindow();  // workers can reach us from now on
    if (!o.http_listen.empty()) {
      DashboardSources ds;
      ds.auth = auth_.get();
      ds.jobs = jobs_.get();
      ds.workers = workers_.get();
      ds.storage = storage_.get();
      ds.store = store_.get();
      ds.schedules = schedules_.get();
      ds.clock = o.clock;
      ds.render_metrics = [this] { return metrics_->Render(); };
      ds.count_request = [this](const std::string& route, int code) {
        metrics_->OnHttpRequest(route, code);
      };
      dashboard_ = std::make_unique<Dashboard>(std::move(ds));
      ASSIGN_OR_RETURN(http_, HttpServer::Start(o.http_listen, dashboard_.get()));
      http_port_ = http_->port();
      if (o.dashboard_url.empty()) {
        ASSIGN_OR_RETURN(auto host_port, HttpServer::ParseListen(o.http_listen));
        const std::string& host = host_port.first;
        dashboard_url_ =
            absl::StrCat("http://",
                         host.empty() || host == "0.0.0.0" || host == "::" ? "127.0.0.1"
                         : host.find(':') != std::string::npos ? absl::StrCat("[", host, "]")
                                                               : host,
                         ":", http_port_);
      }
      FORGE_LOG(INFO) << "event=http_started listen=" << o.http_listen << " port=" << http_port_;
    }
    loop_->Start();
    schedules_->Start();
    FORGE_LOG(INFO) << "event=coordinator_started listen=" << o.listen << " port=" << port_
                    << " state_dir=" << o.state_dir;
    return absl::OkStatus();
  }

  void Shutdown() {
    if (shutdown_.exchange(true)) return;
    FORGE_LOG(INFO) << "event=coordinator_stopping";
    if (http_) http_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (loop_) loop_->Stop();
    if (schedules_) schedules_->Stop();  // joins the ticker
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  void Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&stopped_));
  }

  ~Impl() {
    Shutdown();
    if (server_) server_->Wait();
    loop_.reset();
    // Services, managers, then the store (which drains its queue).
    job_service_.reset();
    worker_service_.reset();
    admin_service_.reset();
    trainer_service_.reset();
    data_service_.reset();
    checkpoint_service_.reset();
    schedule_service_.reset();
    server_.reset();
    schedules_.reset();
    http_.reset();
    dashboard_.reset();
    jobs_.reset();
    storage_.reset();
    workers_.reset();
    auth_.reset();
    // Alerts still queued get a short grace; what is left stays in the outbox for the next
    // start. Before the store goes: settling an alert deletes its row.
    if (alerts_) alerts_->Shutdown(absl::Seconds(2));
    store_.reset();  // hooks run while it drains find the dispatcher shut: rows stay
    alerts_.reset();
  }

  int port_ = 0;
  int http_port_ = 0;

 private:
  // Adds the event to `batch`, the batch that records what it reports (a job's state change,
  // a worker declared dead, a schedule run), as a row of the store's alert outbox, so a crash
  // keeps both or neither. Returns what hands it to the dispatcher once that batch is
  // committed; nullptr when no webhook wants it. The dispatcher deletes the row when every
  // webhook has it (or gave up); a restart sends what is left. Called from manager hooks,
  // under their locks: never blocks.
  std::function<void(absl::Status)> StageAlert(AlertEvent e, WriteBatch* batch) {
    if (!alerts_ || !alerts_->Wants(e.type)) return nullptr;
    absl::StatusOr<std::string> raw = SecureRandomBytes(12);
    e.id = absl::StrCat("al-",
                        raw.ok() ? HexEncode(*raw) : absl::StrCat(absl::ToUnixNanos(absl::Now())));
    e.time = clock_->Now();
    batch->put_alerts.push_back(ToRecord(e));
    return [this, e = std::move(e)](absl::Status s) mutable {
      // Not committed: neither is the event it reports (or another coordinator recorded it,
      // and alerts it), so nothing is sent.
      if (!s.ok()) {
        FORGE_LOG(ERROR) << "event=alert_not_sent id=" << e.id << " type=" << e.type
                         << " reason=\"its event was not committed: " << s << "\"";
        return;
      }
      alerts_->Emit(std::move(e));
    };
  }

  // Sends again what the last run did not settle (oldest first). Rows of event types no
  // webhook takes any more are dropped; without webhooks the rows wait.
  absl::Status ResendOutbox() {
    if (!alerts_) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<AlertRecord> rows, store_->LoadAlerts());
    WriteBatch drop;
    int resent = 0;
    for (const AlertRecord& r : rows) {
      absl::StatusOr<AlertEvent> e = FromRecord(r);
      if (!e.ok() || !alerts_->Wants(e->type)) {
        if (!e.ok()) FORGE_LOG(WARNING) << "event=alert_outbox_bad_row error=" << e.status();
        drop.delete_alerts.push_back(r.id);
        continue;
      }
      alerts_->Emit(*std::move(e));
      ++resent;
    }
    if (!rows.empty()) {
      FORGE_LOG(INFO) << "event=alert_outbox_resent count=" << resent
                      << " dropped=" << drop.delete_alerts.size();
    }
    if (!drop.delete_alerts.empty()) RETURN_IF_ERROR(store_->CommitSync(std::move(drop)));
    return absl::OkStatus();
  }

  // The event with a link to the dashboard page about it, when there is a dashboard.
  AlertEvent WithLink(AlertEvent e, const std::string& page) const {
    if (!dashboard_url_.empty()) e.details["url"] = dashboard_url_ + page;
    return e;
  }
  std::string dashboard_url_;  // constant once serving
  Clock* clock_ = nullptr;

  std::unique_ptr<Store> store_;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<AlertDispatcher> alerts_;
  std::unique_ptr<Dashboard> dashboard_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<AuthManager> auth_;
  std::unique_ptr<WorkerManager> workers_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ControlLoop> loop_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<RankTokens> rank_tokens_;
  std::unique_ptr<StorageGateway> storage_;
  std::unique_ptr<ModelCatalog> catalog_;
  RendezvousStore rendezvous_;
  std::unique_ptr<TrainerServiceImpl> trainer_service_;
  std::unique_ptr<grpc::Service> data_service_;
  std::unique_ptr<grpc::Service> checkpoint_service_;
  std::unique_ptr<grpc::Service> model_service_;
  std::unique_ptr<ScheduleManager> schedules_;
  std::unique_ptr<grpc::Service> schedule_service_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> shutdown_{false};
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorOptions& options) {
  if (options.state_dir.empty()) {
    return absl::InvalidArgumentError("--state-dir is required: a directory for the database");
  }
  if (options.storage_root.empty()) {
    return absl::InvalidArgumentError(
        "--storage-root is required: the shared directory for checkpoints and datasets");
  }
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Init(options));
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;
int Coordinator::port() const { return impl_->port_; }
int Coordinator::http_port() const { return impl_->http_port_; }
void Coordinator::Shutdown() { impl_->Shutdown(); }
void Coordinator::Wait() { impl_->Wait(); }

}  // namespace forge::coordinator
