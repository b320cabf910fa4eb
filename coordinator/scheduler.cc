#include "coordinator/scheduler.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/spec_names.h"

namespace forge::coordinator {
namespace {

using forge::v1::DeviceKind;

// Kinds are indexed by their enum value; only cpu and cuda carry work.
constexpr int kNumKinds = 3;

bool IsPlaceableKind(int kind) {
  return kind == forge::v1::DEVICE_KIND_CPU || kind == forge::v1::DEVICE_KIND_CUDA;
}

// Free devices of one kind on one worker: KindState::free_slots[next, end), device indices in
// the worker's device order. Devices are taken from the front.
struct FreeList {
  int next = 0;
  int end = 0;
  int count() const { return end - next; }
};

// What is left of one device kind while a call decides placements.
struct KindState {
  int64_t alive_devices = 0;    // free or busy, on alive workers: what an empty fleet would have
  int64_t free_devices = 0;     // still free in this call
  std::string name;             // "cpu"
  std::vector<int> free_slots;  // every worker's free device indices, worker after worker
  std::vector<FreeList> per_worker;  // indexed like ClusterView::workers
  // (free count, worker index) for every worker with at least one free device of this kind:
  // best fit is lower_bound({ranks, -1}); the most free is the last count.
  std::set<std::pair<int, int>> by_free;
  // Set once a blocked job has waited past the starvation limit: later jobs of this kind wait.
  std::string held_reason;
};

std::string Devices(int64_t n, absl::string_view kind_name) {
  return absl::StrCat(n, " ", kind_name, n == 1 ? " device" : " devices");
}

// "45s", "12m", "3h5m": enough for a person deciding whether to worry.
std::string HumanDuration(absl::Duration d) {
  const int64_t seconds = absl::ToInt64Seconds(d);
  if (seconds < 60) return absl::StrCat(std::max<int64_t>(seconds, 0), "s");
  const int64_t minutes = seconds / 60;
  if (minutes < 60) return absl::StrCat(minutes, "m");
  const int64_t hours = minutes / 60;
  if (minutes % 60 == 0) return absl::StrCat(hours, "h");
  return absl::StrCat(hours, "h", minutes % 60, "m");
}

// Takes the first `n` free devices of worker `w` for `job`, appending them as the next ranks,
// and moves the worker to its new place in `kind.by_free`.
void TakeFromWorker(const ClusterView& cluster, int w, int n, KindState& kind, JobPlacement& job) {
  FreeList& free = kind.per_worker[w];
  const int before = free.count();
  kind.by_free.erase({before, w});
  if (before > n) kind.by_free.insert({before - n, w});
  const WorkerView& worker = cluster.workers[w];
  for (int i = 0; i < n; ++i) {
    const DeviceSlot& device = worker.devices[kind.free_slots[free.next++]];
    job.ranks.push_back(RankSlot{worker.id, device.id});
  }
  kind.free_devices -= n;
}

// REQUIRES: 1 <= ranks <= kind.free_devices.
// One worker, best fit, when one holds the whole job. Otherwise the worker with the most free
// devices, repeatedly; the last part goes to the best-fitting worker for what remains, which
// uses no more workers than taking the largest again and keeps larger holes whole.
JobPlacement Place(const ClusterView& cluster, const PendingJob& pending, KindState& kind) {
  JobPlacement job;
  job.job_id = pending.job_id;
  job.ranks.reserve(pending.ranks);
  int remaining = pending.ranks;
  while (remaining > 0) {
    auto fit = kind.by_free.lower_bound({remaining, -1});
    if (fit != kind.by_free.end()) {
      TakeFromWorker(cluster, fit->second, remaining, kind, job);
      break;
    }
    // Lowest worker index among those with the most free devices.
    const int most = kind.by_free.rbegin()->first;
    auto largest = kind.by_free.lower_bound({most, -1});
    const int take = largest->first;
    TakeFromWorker(cluster, largest->second, take, kind, job);
    remaining -= take;
  }
  return job;
}

}  // namespace

ScheduleResult Schedule(const std::vector<PendingJob>& queue, const ClusterView& cluster,
                        const SchedulerOptions& options) {
  const int num_workers = static_cast<int>(cluster.workers.size());
  std::array<KindState, kNumKinds> kinds;
  for (int k = 0; k < kNumKinds; ++k) {
    if (!IsPlaceableKind(k)) continue;
    kinds[k].name = DeviceKindName(static_cast<DeviceKind>(k));
    kinds[k].per_worker.resize(num_workers);
  }
  for (int w = 0; w < num_workers; ++w) {
    const WorkerView& worker = cluster.workers[w];
    if (!worker.alive) continue;
    for (int k = 0; k < kNumKinds; ++k) {
      if (!IsPlaceableKind(k)) continue;
      KindState& kind = kinds[k];
      FreeList& free = kind.per_worker[w];
      free.next = static_cast<int>(kind.free_slots.size());
      for (int d = 0; d < static_cast<int>(worker.devices.size()); ++d) {
        const DeviceSlot& device = worker.devices[d];
        if (device.kind != k) continue;
        ++kind.alive_devices;
        if (!device.busy) kind.free_slots.push_back(d);
      }
      free.end = static_cast<int>(kind.free_slots.size());
      if (free.count() == 0) continue;
      kind.free_devices += free.count();
      kind.by_free.insert({free.count(), w});
    }
  }

  std::vector<int> order(queue.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&queue](int a, int b) {
    if (queue[a].priority != queue[b].priority) return queue[a].priority > queue[b].priority;
    return queue[a].submit_seq < queue[b].submit_seq;
  });

  ScheduleResult result;
  result.waiting.reserve(queue.size());
  for (int index : order) {
    const PendingJob& job = queue[index];
    auto wait = [&](std::string reason, bool unschedulable) {
      result.waiting.push_back(WaitingJob{job.job_id, std::move(reason), unschedulable});
    };
    if (job.ranks < 1) {
      wait(absl::StrCat("invalid ranks: ", job.ranks, "; a job needs at least 1 rank"), true);
      continue;
    }
    // The job spec's default device is cpu.
    const int kind_index = job.device_kind == forge::v1::DEVICE_KIND_UNSPECIFIED
                               ? static_cast<int>(forge::v1::DEVICE_KIND_CPU)
                               : static_cast<int>(job.device_kind);
    if (!IsPlaceableKind(kind_index)) {
      wait(absl::StrCat("unknown device kind ", kind_index, "; use cpu or cuda"), true);
      continue;
    }
    KindState& kind = kinds[kind_index];
    const std::string& kind_name = kind.name;
    if (job.ranks > kind.alive_devices) {
      wait(kind.alive_devices == 0
               ? absl::StrCat("needs ", Devices(job.ranks, kind_name), "; no alive worker has ",
                              kind_name, " devices")
               : absl::StrCat("needs ", Devices(job.ranks, kind_name), "; alive workers have ",
                              kind.alive_devices, " in all"),
           true);
      continue;
    }
    if (!kind.held_reason.empty()) {
      wait(kind.held_reason, false);
      continue;
    }
    if (job.ranks > kind.free_devices) {
      std::string reason =
          absl::StrCat("waiting for ", job.ranks, " free ", kind_name,
                       job.ranks == 1 ? " device; " : " devices; ", kind.free_devices, " free now");
      if (job.waited >= options.starvation_limit) {
        kind.held_reason =
            absl::StrCat("held back: job ", job.job_id, " has waited ", HumanDuration(job.waited),
                         " and keeps the ", kind_name, " devices it needs");
        absl::StrAppend(&reason, "; later ", kind_name, " jobs are held back for it");
      }
      wait(std::move(reason), false);
      continue;
    }
    result.placed.push_back(Place(cluster, job, kind));
  }
  return result;
}

}  // namespace forge::coordinator
