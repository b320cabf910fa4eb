#include "coordinator/scheduler_check.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace forge::coordinator {

using forge::v1::DEVICE_KIND_CPU;
using forge::v1::DEVICE_KIND_UNSPECIFIED;

std::vector<std::string> ScheduleViolations(const std::vector<PendingJob>& queue,
                                    const ClusterView& cluster, const SchedulerOptions& options,
                                    const ScheduleResult& result) {
  std::vector<std::string> bad;
  absl::flat_hash_map<std::string, const PendingJob*> jobs;
  for (const PendingJob& j : queue) jobs[j.job_id] = &j;
  absl::flat_hash_map<std::pair<std::string, std::string>, const DeviceSlot*> devices;
  absl::flat_hash_map<std::string, bool> alive;
  std::map<int, int64_t> alive_devices, free_left;
  for (const WorkerView& w : cluster.workers) {
    alive[w.id] = w.alive;
    for (const DeviceSlot& d : w.devices) {
      devices[{w.id, d.id}] = &d;
      if (!w.alive) continue;
      ++alive_devices[d.kind];
      if (!d.busy) ++free_left[d.kind];
    }
  }
  auto kind_of = [](const PendingJob& j) {
    return j.device_kind == DEVICE_KIND_UNSPECIFIED ? DEVICE_KIND_CPU : j.device_kind;
  };
  absl::flat_hash_map<std::string, int> seen;
  absl::flat_hash_set<std::pair<std::string, std::string>> used;
  for (const JobPlacement& p : result.placed) {
    ++seen[p.job_id];
    auto job = jobs.find(p.job_id);
    if (job == jobs.end()) {
      bad.push_back(absl::StrCat(p.job_id, ": placed but not queued"));
      continue;
    }
    if (static_cast<int>(p.ranks.size()) != job->second->ranks) {
      bad.push_back(
          absl::StrCat(p.job_id, ": partial gang ", p.ranks.size(), " of ", job->second->ranks));
    }
    std::vector<std::string> worker_order;
    for (const RankSlot& s : p.ranks) {
      auto d = devices.find({s.worker_id, s.device_id});
      if (d == devices.end()) {
        bad.push_back(absl::StrCat(p.job_id, ": unknown device ", s.worker_id, "/", s.device_id));
        continue;
      }
      if (!alive[s.worker_id]) bad.push_back(absl::StrCat(p.job_id, ": dead ", s.worker_id));
      if (d->second->busy) bad.push_back(absl::StrCat(p.job_id, ": busy ", s.device_id));
      if (d->second->kind != kind_of(*job->second)) {
        bad.push_back(absl::StrCat(p.job_id, ": wrong kind on ", s.device_id));
      }
      if (!used.insert({s.worker_id, s.device_id}).second) {
        bad.push_back(absl::StrCat(p.job_id, ": device given twice ", s.device_id));
      }
      --free_left[d->second->kind];
      if (worker_order.empty() || worker_order.back() != s.worker_id) {
        if (std::find(worker_order.begin(), worker_order.end(), s.worker_id) !=
            worker_order.end()) {
          bad.push_back(absl::StrCat(p.job_id, ": ranks of ", s.worker_id, " not contiguous"));
        }
        worker_order.push_back(s.worker_id);
      }
    }
  }
  for (const WaitingJob& w : result.waiting) {
    ++seen[w.job_id];
    auto job = jobs.find(w.job_id);
    if (job == jobs.end()) {
      bad.push_back(absl::StrCat(w.job_id, ": waiting but not queued"));
      continue;
    }
    if (w.reason.empty()) bad.push_back(absl::StrCat(w.job_id, ": no reason"));
    const PendingJob& j = *job->second;
    if (j.ranks >= 1 && w.unschedulable != (j.ranks > alive_devices[kind_of(j)])) {
      bad.push_back(absl::StrCat(w.job_id, ": unschedulable=", w.unschedulable, " wrongly"));
    }
    // Free devices only shrink during a call: a job that fits what is left at the end fitted
    // at its turn, so only a starvation hold may have kept it out.
    if (j.ranks >= 1 && !w.unschedulable && j.ranks <= free_left[kind_of(j)] &&
        w.reason.rfind("held back", 0) != 0) {
      bad.push_back(absl::StrCat(w.job_id, ": fits but waits: ", w.reason));
    }
  }
  for (const PendingJob& j : queue) {
    if (seen[j.job_id] != 1) {
      bad.push_back(absl::StrCat(j.job_id, ": reported ", seen[j.job_id], " times"));
    }
  }
  // No job of a kind is placed after a starving blocked job of that kind in queue order.
  absl::flat_hash_set<std::string> placed;
  for (const JobPlacement& p : result.placed) placed.insert(p.job_id);
  std::vector<const PendingJob*> order;
  for (const PendingJob& j : queue) order.push_back(&j);
  std::stable_sort(order.begin(), order.end(), [](const PendingJob* a, const PendingJob* b) {
    if (a->priority != b->priority) return a->priority > b->priority;
    return a->submit_seq < b->submit_seq;
  });
  std::set<int> held;
  for (const PendingJob* j : order) {
    const int kind = kind_of(*j);
    const bool is_placed = placed.count(j->job_id) > 0;
    if (is_placed && held.count(kind)) {
      bad.push_back(absl::StrCat(j->job_id, ": backfilled past a starving job"));
    }
    if (!is_placed && j->ranks >= 1 && j->ranks <= alive_devices[kind] &&
        j->waited >= options.starvation_limit) {
      held.insert(kind);
    }
  }
  return bad;
}

}  // namespace forge::coordinator
