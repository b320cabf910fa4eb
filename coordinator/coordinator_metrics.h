// The coordinator's Prometheus metrics: event counters and histograms fed by the managers'
// hooks, and state (jobs, queue, workers, per-job progress) read from the managers at each
// scrape. Names follow Prometheus conventions (base units in the name, `_total` counters);
// label values are bounded: states, workers, RPC methods and codes, and per-job series only
// for jobs that are not finished.
//
// Thread safety: thread-safe. Every On* method is cheap and never blocks.
#ifndef FORGE_COORDINATOR_COORDINATOR_METRICS_H_
#define FORGE_COORDINATOR_COORDINATOR_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "forge/v1/coordinator.pb.h"
#include "forge/v1/training.pb.h"

namespace forge::coordinator {

class JobManager;
class WorkerManager;

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(Clock* clock);

  // Where state gauges come from; set before the first scrape. Null parts are skipped.
  void SetSources(
      JobManager* jobs, WorkerManager* workers,
      std::function<std::map<std::pair<std::string, std::string>, int64_t>()> alert_outcomes = {},
      std::function<int64_t()> alerts_queued = {});

  // --- Hooks --------------------------------------------------------------------------------
  void OnJobTransition(const forge::v1::Job& job, forge::v1::JobState from,
                       absl::Duration queued_for);
  void OnSchedulingPass(absl::Duration took);
  void OnCheckpoint(const forge::v1::CheckpointInfo& info, absl::Duration upload);
  // `method` as gRPC names it ("/forge.v1.JobService/SubmitJob"); `unary_duration` is
  // observed only for unary calls (streams live for minutes and would swamp the histogram).
  void OnRpc(absl::string_view method, grpc::StatusCode code, bool unary, absl::Duration took);
  void OnHttpRequest(const std::string& route, int code);

  // The gRPC methods the server implements ("/pkg.Service/Method"); calls to any other name
  // are counted as method "other". Call before serving.
  void SetKnownMethods(std::vector<std::string> methods);

  // Counts every RPC by method and code (and unary latency) into these metrics.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> RpcInterceptorFactory();

  // The text exposition of every metric.
  std::string Render() const;
  metrics::Registry& registry() { return registry_; }

 private:
  void Collect(metrics::ExpositionWriter& w) const;
  std::string MethodLabel(absl::string_view method) const;

  Clock* const clock_;
  const absl::Time start_time_;
  metrics::Registry registry_;
  // Constant after construction (owned by registry_).
  metrics::CounterFamily* submitted_;
  metrics::CounterFamily* finished_;
  metrics::CounterFamily* restarts_;
  metrics::HistogramFamily* queue_wait_;
  metrics::HistogramFamily* pass_duration_;
  metrics::CounterFamily* checkpoints_;
  metrics::CounterFamily* checkpoint_bytes_;
  metrics::HistogramFamily* checkpoint_size_;
  metrics::HistogramFamily* checkpoint_upload_;
  metrics::CounterFamily* rpcs_;
  metrics::HistogramFamily* rpc_duration_;
  metrics::CounterFamily* http_;

  // Set once before serving (SetSources).
  JobManager* jobs_ = nullptr;
  WorkerManager* workers_ = nullptr;
  std::function<std::map<std::pair<std::string, std::string>, int64_t>()> alert_outcomes_;
  std::function<int64_t()> alerts_queued_;

  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> known_methods_ ABSL_GUARDED_BY(mu_);
};

// "OK", "NOT_FOUND", ... as gRPC spells its codes.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_COORDINATOR_METRICS_H_
