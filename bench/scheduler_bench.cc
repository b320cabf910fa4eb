// Scheduler throughput on a simulated fleet.
//
// Builds a fleet (default 1,000 workers x 8 devices, a quarter of them cuda, 1% dead) and a
// queue (default 5,000 jobs, ranks 1..64 skewed toward small powers of two), then replays a
// cluster: Schedule() on the queue, mark the placed devices busy, run each placed job for a
// simulated duration, advance simulated time to the next completion, free its devices, repeat
// until every job has been placed. Only the Schedule() calls are timed. Every result is
// checked (over-allocation, partial gang, wrong kind, dead worker, busy device) and the
// violations are counted.
//
//   build/bin/forge-bench-scheduler --workers=1000 --devices_per_worker=8 --jobs=5000 --seed=1
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "coordinator/scheduler.h"
#include "coordinator/scheduler_check.h"

ABSL_FLAG(int, workers, 1000, "simulated workers");
ABSL_FLAG(int, devices_per_worker, 8, "devices on each worker");
ABSL_FLAG(int, jobs, 5000, "jobs queued at the start");
ABSL_FLAG(uint32_t, seed, 1, "random seed for the fleet, the queue and the durations");
ABSL_FLAG(double, cuda_share, 0.25, "fraction of workers (and of jobs) that are cuda");
ABSL_FLAG(double, dead_share, 0.01, "fraction of workers that are dead");

namespace forge::coordinator {
namespace {

using forge::v1::DEVICE_KIND_CPU;
using forge::v1::DEVICE_KIND_CUDA;
using forge::v1::DeviceKind;

struct SimJob {
  PendingJob pending;
  absl::Duration runtime;
};

struct Running {
  absl::Duration ends;
  std::vector<std::pair<int, int>> devices;  // (worker, device) indices
  bool operator>(const Running& o) const { return ends > o.ends; }
};

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

int Run() {
  const int num_workers = absl::GetFlag(FLAGS_workers);
  const int per_worker = absl::GetFlag(FLAGS_devices_per_worker);
  const int num_jobs = absl::GetFlag(FLAGS_jobs);
  const double cuda_share = absl::GetFlag(FLAGS_cuda_share);
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::uniform_real_distribution<double> unit(0.0, 1.0);

  ClusterView cluster;
  absl::flat_hash_map<std::string, int> worker_index;
  for (int w = 0; w < num_workers; ++w) {
    WorkerView view;
    view.id = absl::StrCat("worker-", w);
    view.alive = unit(rng) >= absl::GetFlag(FLAGS_dead_share);
    const DeviceKind kind = unit(rng) < cuda_share ? DEVICE_KIND_CUDA : DEVICE_KIND_CPU;
    for (int d = 0; d < per_worker; ++d) {
      view.devices.push_back(
          DeviceSlot{absl::StrCat(kind == DEVICE_KIND_CUDA ? "cuda:" : "cpu:", d), kind, false});
    }
    worker_index[view.id] = w;
    cluster.workers.push_back(std::move(view));
  }

  // Ranks 1..64, mostly small: 1 (40%), 2, 4, 8, 16, 32, 64 (3%).
  std::discrete_distribution<int> log_ranks({40, 20, 15, 10, 7, 5, 3});
  std::vector<SimJob> pending;
  for (int i = 0; i < num_jobs; ++i) {
    SimJob job;
    job.pending.job_id = absl::StrCat("job-", i);
    job.pending.submit_seq = i;
    job.pending.priority = unit(rng) < 0.1 ? 1 : 0;
    job.pending.ranks = 1 << log_ranks(rng);
    job.pending.device_kind = unit(rng) < cuda_share ? DEVICE_KIND_CUDA : DEVICE_KIND_CPU;
    job.runtime = absl::Seconds(std::uniform_int_distribution<int>(60, 3600)(rng));
    pending.push_back(std::move(job));
  }

  std::priority_queue<Running, std::vector<Running>, std::greater<Running>> running;
  std::vector<double> call_us;
  absl::Duration now = absl::ZeroDuration();
  absl::Duration in_schedule = absl::ZeroDuration();
  int64_t placements = 0, violations = 0, unschedulable = 0;
  std::vector<PendingJob> queue;
  while (!pending.empty()) {
    queue.clear();
    for (const SimJob& j : pending) {
      queue.push_back(j.pending);
      queue.back().waited = now;  // every job was submitted at time 0
    }
    const auto start = std::chrono::steady_clock::now();
    ScheduleResult result = Schedule(queue, cluster);
    const auto took = std::chrono::steady_clock::now() - start;
    in_schedule += absl::FromChrono(took);
    call_us.push_back(std::chrono::duration<double, std::micro>(took).count());
    for (const std::string& v : ScheduleViolations(queue, cluster, {}, result)) {
      if (++violations <= 5) std::fprintf(stderr, "violation: %s\n", v.c_str());
    }

    absl::flat_hash_map<std::string, absl::Duration> runtime;
    for (const SimJob& j : pending) runtime[j.pending.job_id] = j.runtime;
    absl::flat_hash_set<std::string> done;
    for (const JobPlacement& p : result.placed) {
      Running r;
      r.ends = now + runtime[p.job_id];
      for (const RankSlot& slot : p.ranks) {
        const int w = worker_index.at(slot.worker_id);
        WorkerView& worker = cluster.workers[w];
        for (int d = 0; d < static_cast<int>(worker.devices.size()); ++d) {
          if (worker.devices[d].id != slot.device_id) continue;
          worker.devices[d].busy = true;
          r.devices.push_back({w, d});
        }
      }
      running.push(std::move(r));
      done.insert(p.job_id);
      ++placements;
    }
    for (const WaitingJob& w : result.waiting) {
      if (!w.unschedulable) continue;  // never fits this fleet: drop it, or the replay never ends
      done.insert(w.job_id);
      ++unschedulable;
    }
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [&](const SimJob& j) { return done.contains(j.pending.job_id); }),
                  pending.end());
    if (pending.empty()) break;
    if (running.empty()) {
      std::fprintf(stderr, "stuck: %zu jobs wait and nothing runs\n", pending.size());
      ++violations;
      break;
    }
    now = running.top().ends;
    while (!running.empty() && running.top().ends == now) {
      for (auto [w, d] : running.top().devices) cluster.workers[w].devices[d].busy = false;
      running.pop();
    }
  }

  std::sort(call_us.begin(), call_us.end());
  auto percentile = [&call_us](double p) {
    if (call_us.empty()) return 0.0;
    return call_us[std::min(call_us.size() - 1, static_cast<size_t>(p * call_us.size()))];
  };
  const double seconds = absl::ToDoubleSeconds(in_schedule);
  std::printf("forge scheduler benchmark (seed %u, cuda share %.2f, dead share %.2f)\n",
              absl::GetFlag(FLAGS_seed), cuda_share, absl::GetFlag(FLAGS_dead_share));
  std::printf("%-28s %14d\n", "workers", num_workers);
  std::printf("%-28s %14lld\n", "devices",
              static_cast<long long>(num_workers) * static_cast<long long>(per_worker));
  std::printf("%-28s %14d\n", "jobs", num_jobs);
  std::printf("%-28s %14zu\n", "scheduling passes", call_us.size());
  std::printf("%-28s %14lld\n", "total placements", static_cast<long long>(placements));
  std::printf("%-28s %14lld\n", "unschedulable (dropped)", static_cast<long long>(unschedulable));
  std::printf("%-28s %14.3f\n", "total time in Schedule (s)", seconds);
  std::printf("%-28s %14.0f\n", "placements/s", seconds > 0 ? placements / seconds : 0.0);
  std::printf("%-28s %14.1f\n", "p50 Schedule() call (us)", percentile(0.50));
  std::printf("%-28s %14.1f\n", "p99 Schedule() call (us)", percentile(0.99));
  std::printf("%-28s %14.1f\n", "simulated makespan (h)", absl::ToDoubleHours(now));
  std::printf("%-28s %14lld\n", "violations", static_cast<long long>(violations));
  std::printf(
      "reference: kube-scheduler target 100 pods/s; Nomad ~1,500 placements/s (published "
      "benchmarks); goal >= 2,000 placements/s\n");
  std::printf("machine: %u cores (nproc), %s\n", std::thread::hardware_concurrency(),
              CpuModel().c_str());
  return violations == 0 ? 0 : 1;
}

}  // namespace
}  // namespace forge::coordinator

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return forge::coordinator::Run();
}
