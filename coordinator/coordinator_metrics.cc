#include "coordinator/coordinator_metrics.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/proto_time.h"
#include "common/spec_names.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_state.h"
#include "coordinator/worker_manager.h"

namespace forge::coordinator {
namespace {

using metrics::Labels;

constexpr forge::v1::JobState kStates[] = {
    forge::v1::JOB_STATE_QUEUED,    forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_RESTARTING,
    forge::v1::JOB_STATE_SUCCEEDED, forge::v1::JOB_STATE_FAILED,  forge::v1::JOB_STATE_CANCELLED};

std::string StateLabel(forge::v1::JobState s) { return absl::AsciiStrToLower(JobStateName(s)); }

class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(CoordinatorMetrics* metrics, std::string method, bool unary)
      : metrics_(metrics), method_(std::move(method)), unary_(unary), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->OnRpc(method_, methods->GetSendStatus().error_code(), unary_, absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  CoordinatorMetrics* const metrics_;
  const std::string method_;
  const bool unary_;
  const absl::Time start_;
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(CoordinatorMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(metrics_, info->method(),
                              info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY);
  }

 private:
  CoordinatorMetrics* const metrics_;
};

}  // namespace

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

CoordinatorMetrics::CoordinatorMetrics(Clock* clock) : clock_(clock), start_time_(clock->Now()) {
  auto& r = registry_;
  submitted_ = r.AddCounter("forge_jobs_submitted_total", "Jobs accepted (committed).", {});
  finished_ =
      r.AddCounter("forge_jobs_finished_total", "Jobs that reached a final state.", {"state"});
  restarts_ = r.AddCounter(
      "forge_job_restarts_total",
      "Failed job attempts that were given another attempt (from the last checkpoint, or from "
      "the start when there is none).",
      {});
  queue_wait_ = r.AddHistogram(
      "forge_queue_wait_seconds",
      "Time from a job becoming pending to its placement. reason=submitted: a new job's wait "
      "for devices; reason=restart: a failed attempt's wait, the restart delay included.",
      {"reason"}, metrics::ExponentialBuckets(0.01, 4, 12));
  pass_duration_ = r.AddHistogram("forge_scheduler_pass_duration_seconds",
                                  "Duration of one scheduling pass over a non-empty queue.", {},
                                  metrics::ExponentialBuckets(1e-5, 4, 12));
  checkpoints_ = r.AddCounter("forge_checkpoints_committed_total",
                              "Checkpoints uploaded and committed to the catalog.", {});
  checkpoint_bytes_ = r.AddCounter("forge_checkpoint_bytes_total",
                                   "Bytes of committed checkpoints (all files).", {});
  checkpoint_size_ = r.AddHistogram("forge_checkpoint_size_bytes", "Size of each checkpoint.", {},
                                    metrics::ByteBuckets());
  checkpoint_upload_ = r.AddHistogram(
      "forge_checkpoint_upload_duration_seconds",
      "From a checkpoint upload's first message to its commit.", {},
      metrics::ExponentialBuckets(0.01, 3, 12));  // 10 ms .. ~30 min (multi-GB checkpoints)
  rpcs_ = r.AddCounter("forge_rpc_requests_total", "gRPC calls answered, by method and code.",
                       {"method", "code"});
  rpc_duration_ =
      r.AddHistogram("forge_rpc_duration_seconds", "Latency of unary gRPC calls, by method.",
                     {"method"}, metrics::LatencyBuckets());
  http_ = r.AddCounter("forge_http_requests_total",
                       "Dashboard and /metrics requests answered, by route and status code.",
                       {"handler", "code"});
  // Counters start at 0 for every label value known up front, so rate() works from the start.
  submitted_->With({});
  restarts_->With({});
  queue_wait_->With({"submitted"});
  queue_wait_->With({"restart"});
  checkpoints_->With({});
  checkpoint_bytes_->With({});
  for (const char* s : {"succeeded", "failed", "cancelled"}) finished_->With({s});
  r.AddCollector([this](metrics::ExpositionWriter& w) { Collect(w); });
}

void CoordinatorMetrics::SetSources(
    JobManager* jobs, WorkerManager* workers,
    std::function<std::map<std::pair<std::string, std::string>, int64_t>()> alert_outcomes,
    std::function<int64_t()> alerts_queued) {
  jobs_ = jobs;
  workers_ = workers;
  alert_outcomes_ = std::move(alert_outcomes);
  alerts_queued_ = std::move(alerts_queued);
}

void CoordinatorMetrics::OnJobTransition(const forge::v1::Job& job, forge::v1::JobState from,
                                         absl::Duration queued_for) {
  if (from == forge::v1::JOB_STATE_UNSPECIFIED) submitted_->With({})->Inc();
  if (IsTerminal(job.state()) && !IsTerminal(from)) {
    finished_->With({StateLabel(job.state())})->Inc();
  }
  // Every RESTARTING notice is one more restart (JobManagerOptions::on_transition).
  if (job.state() == forge::v1::JOB_STATE_RESTARTING) restarts_->With({})->Inc();
  if (job.state() == forge::v1::JOB_STATE_RUNNING &&
      (from == forge::v1::JOB_STATE_QUEUED || from == forge::v1::JOB_STATE_RESTARTING)) {
    queue_wait_->With({from == forge::v1::JOB_STATE_QUEUED ? "submitted" : "restart"})
        ->Observe(absl::ToDoubleSeconds(queued_for));
  }
}

void CoordinatorMetrics::OnSchedulingPass(absl::Duration took) {
  pass_duration_->With({})->Observe(absl::ToDoubleSeconds(took));
}

void CoordinatorMetrics::OnCheckpoint(const forge::v1::CheckpointInfo& info,
                                      absl::Duration upload) {
  checkpoints_->With({})->Inc();
  checkpoint_bytes_->With({})->Inc(static_cast<double>(info.bytes()));
  checkpoint_size_->With({})->Observe(static_cast<double>(info.bytes()));
  checkpoint_upload_->With({})->Observe(absl::ToDoubleSeconds(upload));
}

void CoordinatorMetrics::SetKnownMethods(std::vector<std::string> methods) {
  absl::flat_hash_set<std::string> known;
  for (std::string& m : methods) {
    absl::string_view v = m;
    absl::ConsumePrefix(&v, "/");
    known.insert(std::string(v));
  }
  absl::MutexLock lock(&mu_);
  known_methods_ = std::move(known);
}

std::string CoordinatorMetrics::MethodLabel(absl::string_view method) const {
  absl::ConsumePrefix(&method, "/");
  absl::MutexLock lock(&mu_);
  // Interceptors run for methods nobody implements too: only the server's own become label
  // values, so a caller cannot grow the label set by inventing names.
  return known_methods_.contains(method) ? std::string(method) : "other";
}

void CoordinatorMetrics::OnRpc(absl::string_view method, grpc::StatusCode code, bool unary,
                               absl::Duration took) {
  const std::string m = MethodLabel(method);
  rpcs_->With({m, GrpcCodeName(code)})->Inc();
  if (unary) rpc_duration_->With({m})->Observe(absl::ToDoubleSeconds(took));
}

void CoordinatorMetrics::OnHttpRequest(const std::string& route, int code) {
  http_->With({route, absl::StrCat(code)})->Inc();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
CoordinatorMetrics::RpcInterceptorFactory() {
  return std::make_unique<forge::coordinator::RpcInterceptorFactory>(this);
}

std::string CoordinatorMetrics::Render() const { return registry_.Render(); }

void CoordinatorMetrics::Collect(metrics::ExpositionWriter& w) const {
  const absl::Time now = clock_->Now();
  w.Gauge("forge_coordinator_start_time_seconds",
          "When this coordinator process started (Unix seconds).",
          {{Labels{}, absl::ToDoubleSeconds(start_time_ - absl::UnixEpoch())}});
  w.Gauge("forge_build_info", "Always 1; the coordinator's version in a label.",
          {{Labels{{"version", FORGE_VERSION_STRING}}, 1.0}});
  if (jobs_ != nullptr) {
    const JobManager::StateSnapshot snap = jobs_->Snapshot();
    std::vector<std::pair<Labels, double>> by_state;
    for (forge::v1::JobState s : kStates) {
      auto it = snap.by_state.find(s);
      by_state.push_back({Labels{{"state", StateLabel(s)}},
                          it == snap.by_state.end() ? 0.0 : static_cast<double>(it->second)});
    }
    w.Gauge("forge_jobs", "Jobs known to the coordinator, by state.", std::move(by_state));
    const std::vector<PendingJob> queue = jobs_->PendingQueue();
    absl::Duration oldest = absl::ZeroDuration();
    for (const PendingJob& p : queue) oldest = std::max(oldest, p.waited);
    w.Gauge("forge_queue_length", "Jobs waiting for devices (queued, or restarting).",
            {{Labels{}, static_cast<double>(queue.size())}});
    w.Gauge("forge_queue_oldest_wait_seconds",
            "How long the longest-waiting job has waited for devices (0 when none waits).",
            {{Labels{}, absl::ToDoubleSeconds(oldest)}});

    std::vector<std::pair<Labels, double>> info, step, total, loss, lr, tps, eta, attempt,
        source_tokens, mfu;
    // Per-job series for jobs that have started (running or restarting): a queue of thousands
    // of waiting jobs must not become thousands of series; forge_jobs counts them.
    for (const forge::v1::Job& j : snap.started) {
      const Labels jl{{"job_id", j.id()}, {"tenant", j.tenant()}};
      info.push_back({Labels{{"job_id", j.id()},
                             {"name", j.spec().name()},
                             {"state", StateLabel(j.state())},
                             {"tenant", j.tenant()}},
                      1.0});
      step.push_back({jl, static_cast<double>(j.progress().step())});
      total.push_back({jl, static_cast<double>(j.spec().train().steps())});
      attempt.push_back({jl, static_cast<double>(j.attempt())});
      if (j.progress().step() > 0) {
        loss.push_back({jl, j.progress().loss()});
        lr.push_back({jl, j.progress().lr()});
        tps.push_back({jl, j.progress().tokens_per_second()});
        if (j.progress().mfu() > 0) mfu.push_back({jl, j.progress().mfu()});
        eta.push_back({jl, static_cast<double>(j.progress().eta_seconds())});
      }
      for (const auto& [source, tokens] : j.progress().tokens_per_source()) {
        source_tokens.push_back(
            {Labels{{"job_id", j.id()}, {"source", source}, {"tenant", j.tenant()}},
             static_cast<double>(tokens)});
      }
    }
    w.Gauge("forge_job_info", "1 for each started, unfinished job (running or restarting); name and state in labels.",
            std::move(info));
    w.Gauge("forge_job_step", "Optimizer steps taken by a started, unfinished job (rank 0's report).",
            std::move(step));
    w.Gauge("forge_job_total_steps", "Steps a started, unfinished job is to train.", std::move(total));
    w.Gauge("forge_job_attempt", "Current attempt number of a started, unfinished job.",
            std::move(attempt));
    w.Gauge("forge_job_loss", "Latest training loss of a running job (nats per token).",
            std::move(loss));
    w.Gauge("forge_job_learning_rate", "Learning rate of a running job's latest step.",
            std::move(lr));
    w.Gauge("forge_job_tokens_per_second", "Training throughput of a running job, all ranks.",
            std::move(tps));
    w.Gauge("forge_job_eta_seconds", "Estimated time to a running job's last step.",
            std::move(eta));
    w.Gauge("forge_job_mfu",
            "Model FLOPs utilisation of a running GPU job's devices (0..1; absent where the "
            "device's peak is unknown, cpu included).",
            std::move(mfu));
    w.Gauge("forge_job_source_tokens",
            "Tokens a started, unfinished job has trained on from each data source (resets to the "
            "checkpoint's count on a restart).",
            std::move(source_tokens));
  }
  if (workers_ != nullptr) {
    int alive = 0, dead = 0;
    std::vector<std::pair<Labels, double>> age, devices, ranks;
    for (const forge::v1::Worker& wk : workers_->List()) {
      const bool is_dead = wk.state() == forge::v1::WORKER_STATE_DEAD;
      (is_dead ? dead : alive)++;
      const Labels wl{{"worker", wk.id()}};
      const absl::Time hb = FromProtoTime(wk.last_heartbeat());
      age.push_back({wl, std::max(0.0, absl::ToDoubleSeconds(now - hb))});
      ranks.push_back({wl, static_cast<double>(wk.ranks_size())});
      std::map<std::string, int> kinds;
      for (const auto& d : wk.devices()) ++kinds[DeviceKindName(d.kind())];
      for (const auto& [kind, n] : kinds) {
        devices.push_back({Labels{{"kind", kind}, {"worker", wk.id()}}, static_cast<double>(n)});
      }
    }
    w.Gauge("forge_workers", "Registered workers, by state.",
            {{Labels{{"state", "alive"}}, static_cast<double>(alive)},
             {Labels{{"state", "dead"}}, static_cast<double>(dead)}});
    w.Gauge("forge_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat.",
            std::move(age));
    w.Gauge("forge_worker_devices", "Devices each worker offers, by kind.", std::move(devices));
    w.Gauge("forge_worker_ranks", "Trainer ranks placed on each worker now.", std::move(ranks));
  }
  if (alert_outcomes_) {
    std::vector<std::pair<Labels, double>> samples;
    for (const auto& [key, n] : alert_outcomes_()) {
      samples.push_back(
          {Labels{{"event", key.first}, {"outcome", key.second}}, static_cast<double>(n)});
    }
    w.CounterValue("forge_alerts_total",
                   "Webhook alert deliveries by event type and outcome (delivered, failed, "
                   "dropped).",
                   std::move(samples));
  }
  if (alerts_queued_) {
    w.Gauge("forge_alerts_queued", "Webhook alerts waiting to be delivered.",
            {{Labels{}, static_cast<double>(alerts_queued_())}});
  }
}

}  // namespace forge::coordinator
