#include "coordinator/scheduler.h"
#include "coordinator/scheduler_check.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::DEVICE_KIND_CPU;
using forge::v1::DEVICE_KIND_CUDA;
using forge::v1::DEVICE_KIND_UNSPECIFIED;
using forge::v1::DeviceKind;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// A worker with `n` devices "<kind>:0".."<kind>:n-1"; the indices in `busy` are held.
WorkerView Worker(std::string id, int n, DeviceKind kind = DEVICE_KIND_CPU, bool alive = true,
                  std::set<int> busy = {}) {
  WorkerView w;
  w.id = std::move(id);
  w.alive = alive;
  const char* prefix = kind == DEVICE_KIND_CUDA ? "cuda:" : "cpu:";
  for (int i = 0; i < n; ++i) {
    w.devices.push_back(DeviceSlot{absl::StrCat(prefix, i), kind, busy.count(i) > 0});
  }
  return w;
}

PendingJob Job(std::string id, int ranks, int64_t seq, DeviceKind kind = DEVICE_KIND_CPU,
               int priority = 0, absl::Duration waited = absl::ZeroDuration()) {
  PendingJob j;
  j.job_id = std::move(id);
  j.ranks = ranks;
  j.submit_seq = seq;
  j.device_kind = kind;
  j.priority = priority;
  j.waited = waited;
  return j;
}

// "w1/cpu:0" for each rank, in rank order.
std::vector<std::string> Slots(const JobPlacement& p) {
  std::vector<std::string> out;
  for (const RankSlot& r : p.ranks) out.push_back(absl::StrCat(r.worker_id, "/", r.device_id));
  return out;
}

std::vector<std::string> PlacedIds(const ScheduleResult& r) {
  std::vector<std::string> out;
  for (const JobPlacement& p : r.placed) out.push_back(p.job_id);
  return out;
}

const WaitingJob* FindWaiting(const ScheduleResult& r, const std::string& id) {
  for (const WaitingJob& w : r.waiting) {
    if (w.job_id == id) return &w;
  }
  return nullptr;
}

TEST(ScheduleTest, SingleWorkerJobGoesToTheBestFit) {
  ClusterView cluster{{Worker("big", 8), Worker("mid", 4), Worker("small", 2)}};
  ScheduleResult r = Schedule({Job("j", 3, 1)}, cluster);
  ASSERT_EQ(r.placed.size(), 1u);
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("mid/cpu:0", "mid/cpu:1", "mid/cpu:2"));
  EXPECT_THAT(r.waiting, IsEmpty());
}

TEST(ScheduleTest, BestFitCountsOnlyFreeDevicesAndTiesGoToTheFirstWorker) {
  // "a" has 4 devices but only 2 free; "b" and "c" have 3 free: the 2-rank job fits "a" best,
  // the 3-rank job ties between "b" and "c" and takes "b".
  ClusterView cluster{
      {Worker("a", 4, DEVICE_KIND_CPU, true, {0, 2}), Worker("b", 3), Worker("c", 3)}};
  ScheduleResult r = Schedule({Job("two", 2, 1), Job("three", 3, 2)}, cluster);
  ASSERT_EQ(r.placed.size(), 2u);
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("a/cpu:1", "a/cpu:3"));
  EXPECT_THAT(Slots(r.placed[1]), ElementsAre("b/cpu:0", "b/cpu:1", "b/cpu:2"));
}

TEST(ScheduleTest, MultiWorkerJobTakesMostFreeFirstInRankOrder) {
  ClusterView cluster{{Worker("w0", 4), Worker("w1", 8), Worker("w2", 6), Worker("w3", 2)}};
  ScheduleResult r = Schedule({Job("j", 14, 1)}, cluster);
  ASSERT_EQ(r.placed.size(), 1u);
  // All of w1 (the most free) first, then the 6 that remain fit w2 exactly.
  EXPECT_THAT(Slots(r.placed[0]),
              ElementsAre("w1/cpu:0", "w1/cpu:1", "w1/cpu:2", "w1/cpu:3", "w1/cpu:4", "w1/cpu:5",
                          "w1/cpu:6", "w1/cpu:7", "w2/cpu:0", "w2/cpu:1", "w2/cpu:2", "w2/cpu:3",
                          "w2/cpu:4", "w2/cpu:5"));
}

TEST(ScheduleTest, MultiWorkerRemainderGoesToTheBestFitWorker) {
  // 10 ranks: all of "a" (first of the 8-free workers), then 2 on "tiny" rather than breaking
  // into "b": two workers either way, and "b" stays whole for the next 8-rank job.
  ClusterView cluster{{Worker("a", 8), Worker("b", 8), Worker("tiny", 2)}};
  ScheduleResult r = Schedule({Job("ten", 10, 1), Job("eight", 8, 2)}, cluster);
  ASSERT_EQ(r.placed.size(), 2u);
  EXPECT_THAT(Slots(r.placed[0]),
              ElementsAre("a/cpu:0", "a/cpu:1", "a/cpu:2", "a/cpu:3", "a/cpu:4", "a/cpu:5",
                          "a/cpu:6", "a/cpu:7", "tiny/cpu:0", "tiny/cpu:1"));
  EXPECT_THAT(Slots(r.placed[1]), ElementsAre("b/cpu:0", "b/cpu:1", "b/cpu:2", "b/cpu:3", "b/cpu:4",
                                              "b/cpu:5", "b/cpu:6", "b/cpu:7"));
}

TEST(ScheduleTest, GangIsAllOrNothing) {
  ClusterView cluster{{Worker("a", 4), Worker("b", 4)}};
  ScheduleResult r = Schedule({Job("six", 6, 1), Job("four", 4, 2)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("six"));
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "four");
  EXPECT_EQ(r.waiting[0].reason, "waiting for 4 free cpu devices; 2 free now");
  EXPECT_FALSE(r.waiting[0].unschedulable);
}

TEST(ScheduleTest, NoDeviceIsGivenTwiceInOneCall) {
  ClusterView cluster{{Worker("a", 4), Worker("b", 4)}};
  std::vector<PendingJob> queue;
  for (int i = 0; i < 9; ++i) queue.push_back(Job(absl::StrCat("j", i), 1, i));
  ScheduleResult r = Schedule(queue, cluster);
  ASSERT_EQ(r.placed.size(), 8u);
  std::set<std::string> used;
  for (const JobPlacement& p : r.placed) {
    for (const std::string& s : Slots(p)) EXPECT_TRUE(used.insert(s).second) << s;
  }
  EXPECT_EQ(used.size(), 8u);
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "j8");
  EXPECT_EQ(r.waiting[0].reason, "waiting for 1 free cpu device; 0 free now");
}

TEST(ScheduleTest, DeadWorkersAndBusyDevicesAreNeverUsed) {
  ClusterView cluster{{Worker("dead", 8, DEVICE_KIND_CPU, /*alive=*/false),
                       Worker("live", 4, DEVICE_KIND_CPU, true, {0, 1})}};
  ScheduleResult r = Schedule({Job("big", 6, 1), Job("fits", 2, 2), Job("more", 1, 3)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("fits"));
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("live/cpu:2", "live/cpu:3"));
  const WaitingJob* big = FindWaiting(r, "big");
  ASSERT_NE(big, nullptr);
  EXPECT_TRUE(big->unschedulable);
  EXPECT_EQ(big->reason, "needs 6 cpu devices; alive workers have 4 in all");
  const WaitingJob* more = FindWaiting(r, "more");
  ASSERT_NE(more, nullptr);
  EXPECT_FALSE(more->unschedulable);
  EXPECT_EQ(more->reason, "waiting for 1 free cpu device; 0 free now");
}

TEST(ScheduleTest, HigherPriorityGoesFirst) {
  ClusterView cluster{{Worker("a", 4)}};
  ScheduleResult r = Schedule(
      {Job("low", 4, 1, DEVICE_KIND_CPU, 0), Job("high", 4, 2, DEVICE_KIND_CPU, 5)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("high"));
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "low");
}

TEST(ScheduleTest, EqualPriorityGoesInSubmitOrderNotQueueOrder) {
  ClusterView cluster{{Worker("a", 3)}};
  ScheduleResult r = Schedule({Job("late", 2, 9), Job("early", 2, 3), Job("one", 1, 10)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("early", "one"));
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "late");
}

TEST(ScheduleTest, SmallJobBackfillsBehindABlockedBigOne) {
  ClusterView cluster{{Worker("a", 8, DEVICE_KIND_CPU, true, {0, 1, 2, 3}), Worker("b", 8)}};
  ScheduleResult r = Schedule(
      {Job("big", 16, 1, DEVICE_KIND_CPU, 0, absl::Minutes(9)), Job("small", 4, 2)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("small"));
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("a/cpu:4", "a/cpu:5", "a/cpu:6", "a/cpu:7"));
  const WaitingJob* big = FindWaiting(r, "big");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->reason, "waiting for 16 free cpu devices; 12 free now");
}

TEST(ScheduleTest, StarvingJobStopsBackfillOfItsKindOnly) {
  ClusterView cluster{{Worker("a", 8, DEVICE_KIND_CPU, true, {0, 1, 2, 3}), Worker("b", 8),
                       Worker("g", 2, DEVICE_KIND_CUDA)}};
  ScheduleResult r = Schedule({Job("j-abc", 16, 1, DEVICE_KIND_CPU, 0, absl::Minutes(12)),
                               Job("small", 4, 2), Job("gpu", 2, 3, DEVICE_KIND_CUDA)},
                              cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("gpu"));
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("g/cuda:0", "g/cuda:1"));
  const WaitingJob* big = FindWaiting(r, "j-abc");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->reason,
            "waiting for 16 free cpu devices; 12 free now; later cpu jobs are held back for it");
  const WaitingJob* small = FindWaiting(r, "small");
  ASSERT_NE(small, nullptr);
  EXPECT_FALSE(small->unschedulable);
  EXPECT_EQ(small->reason,
            "held back: job j-abc has waited 12m and keeps the cpu devices it needs");
}

TEST(ScheduleTest, StarvationLimitIsInclusiveAndConfigurable) {
  ClusterView cluster{{Worker("a", 4)}};
  SchedulerOptions options;
  options.starvation_limit = absl::Seconds(30);
  ScheduleResult r =
      Schedule({Job("big", 4, 1, DEVICE_KIND_CPU, 0, absl::Seconds(30)), Job("small", 1, 2)},
               ClusterView{{Worker("a", 4, DEVICE_KIND_CPU, true, {0})}}, options);
  EXPECT_THAT(r.placed, IsEmpty());
  const WaitingJob* small = FindWaiting(r, "small");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->reason, "held back: job big has waited 30s and keeps the cpu devices it needs");
  // A higher-priority job ahead of the starving one is still placed.
  r = Schedule({Job("big", 4, 1, DEVICE_KIND_CPU, 0, absl::Hours(2)),
                Job("urgent", 1, 2, DEVICE_KIND_CPU, 9)},
               cluster, options);
  EXPECT_THAT(PlacedIds(r), ElementsAre("urgent"));
}

TEST(ScheduleTest, UnschedulableJobDoesNotHoldDevicesBack) {
  ClusterView cluster{{Worker("a", 4)}};
  ScheduleResult r = Schedule(
      {Job("huge", 64, 1, DEVICE_KIND_CPU, 0, absl::Hours(5)), Job("small", 2, 2)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("small"));
  const WaitingJob* huge = FindWaiting(r, "huge");
  ASSERT_NE(huge, nullptr);
  EXPECT_TRUE(huge->unschedulable);
  EXPECT_EQ(huge->reason, "needs 64 cpu devices; alive workers have 4 in all");
}

TEST(ScheduleTest, UnschedulableWhenNoAliveWorkerHasTheKind) {
  ClusterView cluster{{Worker("a", 4), Worker("g", 8, DEVICE_KIND_CUDA, /*alive=*/false)}};
  ScheduleResult r = Schedule({Job("gpu", 2, 1, DEVICE_KIND_CUDA)}, cluster);
  EXPECT_THAT(r.placed, IsEmpty());
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_TRUE(r.waiting[0].unschedulable);
  EXPECT_EQ(r.waiting[0].reason, "needs 2 cuda devices; no alive worker has cuda devices");
}

TEST(ScheduleTest, CpuAndCudaDevicesAreNeverMixed) {
  WorkerView mixed = Worker("m", 4);
  for (int i = 0; i < 2; ++i) {
    mixed.devices.push_back(DeviceSlot{absl::StrCat("cuda:", i), DEVICE_KIND_CUDA, false});
  }
  ClusterView cluster{{mixed}};
  ScheduleResult r =
      Schedule({Job("gpu3", 3, 1, DEVICE_KIND_CUDA), Job("gpu2", 2, 2, DEVICE_KIND_CUDA),
                Job("cpu4", 4, 3), Job("cpu1", 1, 4)},
               cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("gpu2", "cpu4"));
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("m/cuda:0", "m/cuda:1"));
  EXPECT_THAT(Slots(r.placed[1]), ElementsAre("m/cpu:0", "m/cpu:1", "m/cpu:2", "m/cpu:3"));
  const WaitingJob* gpu3 = FindWaiting(r, "gpu3");
  ASSERT_NE(gpu3, nullptr);
  EXPECT_TRUE(gpu3->unschedulable);
  EXPECT_EQ(gpu3->reason, "needs 3 cuda devices; alive workers have 2 in all");
  const WaitingJob* cpu1 = FindWaiting(r, "cpu1");
  ASSERT_NE(cpu1, nullptr);
  EXPECT_EQ(cpu1->reason, "waiting for 1 free cpu device; 0 free now");
}

TEST(ScheduleTest, UnspecifiedKindMeansCpu) {
  ClusterView cluster{{Worker("g", 2, DEVICE_KIND_CUDA), Worker("c", 2)}};
  ScheduleResult r = Schedule({Job("j", 2, 1, DEVICE_KIND_UNSPECIFIED)}, cluster);
  ASSERT_EQ(r.placed.size(), 1u);
  EXPECT_THAT(Slots(r.placed[0]), ElementsAre("c/cpu:0", "c/cpu:1"));
}

TEST(ScheduleTest, InvalidRanksWait) {
  ClusterView cluster{{Worker("a", 4)}};
  ScheduleResult r = Schedule({Job("zero", 0, 1), Job("neg", -3, 2), Job("ok", 4, 3)}, cluster);
  EXPECT_THAT(PlacedIds(r), ElementsAre("ok"));
  ASSERT_EQ(r.waiting.size(), 2u);
  for (const WaitingJob& w : r.waiting) {
    EXPECT_THAT(w.reason, StartsWith("invalid ranks")) << w.job_id;
  }
}

TEST(ScheduleTest, EmptyQueueAndEmptyFleet) {
  EXPECT_THAT(Schedule({}, ClusterView{{Worker("a", 4)}}).placed, IsEmpty());
  ScheduleResult r = Schedule({Job("j", 1, 1)}, ClusterView{});
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_TRUE(r.waiting[0].unschedulable);
}

DeviceKind RandomKind(std::mt19937& rng) {
  const int r = std::uniform_int_distribution<int>(0, 9)(rng);
  if (r == 0) return DEVICE_KIND_UNSPECIFIED;
  return r < 6 ? DEVICE_KIND_CPU : DEVICE_KIND_CUDA;
}

TEST(ScheduleTest, RandomFleetsAndQueuesKeepTheContract) {
  int placed_total = 0, waiting_total = 0, held_total = 0;
  for (uint32_t seed = 1; seed <= 400; ++seed) {
    std::mt19937 rng(seed);
    auto uniform = [&rng](int lo, int hi) {
      return std::uniform_int_distribution<int>(lo, hi)(rng);
    };
    ClusterView cluster;
    const int workers = uniform(0, 16);
    for (int w = 0; w < workers; ++w) {
      WorkerView view;
      view.id = absl::StrCat("w", w);
      view.alive = uniform(0, 9) < 8;
      const int n = uniform(1, 8);
      for (int d = 0; d < n; ++d) {
        // Mostly one kind per worker, sometimes mixed hosts.
        const DeviceKind kind =
            (w % 3 == 0 || uniform(0, 9) == 0) ? DEVICE_KIND_CUDA : DEVICE_KIND_CPU;
        view.devices.push_back(DeviceSlot{absl::StrCat("d", d), kind, uniform(0, 9) < 3});
      }
      cluster.workers.push_back(std::move(view));
    }
    std::vector<PendingJob> queue;
    const int jobs = uniform(0, 40);
    std::vector<int64_t> seqs(jobs);
    for (int i = 0; i < jobs; ++i) seqs[i] = i * 7 + 3;
    std::shuffle(seqs.begin(), seqs.end(), rng);
    for (int i = 0; i < jobs; ++i) {
      // Powers of two and their neighbours, rarely an invalid count.
      const int ranks =
          uniform(0, 30) == 0 ? uniform(-1, 0) : std::max(1, (1 << uniform(0, 5)) + uniform(-1, 1));
      queue.push_back(Job(absl::StrCat("j", i), ranks, seqs[i], RandomKind(rng), uniform(0, 2),
                          absl::Seconds(uniform(0, 1200))));
    }
    SchedulerOptions options;
    options.starvation_limit = absl::Seconds(uniform(60, 1200));
    ScheduleResult result = Schedule(queue, cluster, options);
    std::vector<std::string> bad = ScheduleViolations(queue, cluster, options, result);
    EXPECT_THAT(bad, IsEmpty()) << "seed " << seed << ":\n" << absl::StrJoin(bad, "\n");
    placed_total += result.placed.size();
    waiting_total += result.waiting.size();
    for (const WaitingJob& w : result.waiting) held_total += w.reason.rfind("held back", 0) == 0;
  }
  // The generator must exercise every path, or the property says little.
  EXPECT_GT(placed_total, 500);
  EXPECT_GT(waiting_total, 500);
  EXPECT_GT(held_total, 20);
}

}  // namespace
}  // namespace forge::coordinator
