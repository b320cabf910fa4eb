#include "common/work_queue.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

TEST(WorkQueueTest, OneThreadRunsTasksInPostingOrder) {
  std::vector<int> order;
  {
    WorkQueue q({.threads = 1, .max_pending = 100});
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(q.Post([&order, i] { order.push_back(i); }));
  }  // the destructor runs what was posted
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
}

TEST(WorkQueueTest, TasksRunOffTheCallersThreadAndConcurrently) {
  WorkQueue q({.threads = 2, .max_pending = 8});
  absl::Notification first_started, release;
  std::atomic<bool> second_ran{false};
  ASSERT_TRUE(q.Post([&] {
    first_started.Notify();
    release.WaitForNotification();
  }));
  ASSERT_TRUE(first_started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The first task is blocked; the second thread still runs the next one.
  absl::Notification second_done;
  ASSERT_TRUE(q.Post([&] {
    second_ran = true;
    second_done.Notify();
  }));
  EXPECT_TRUE(second_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(second_ran);
  release.Notify();
}

TEST(WorkQueueTest, RefusesPastTheBoundAndAfterShutdown) {
  WorkQueue q({.threads = 1, .max_pending = 2});
  absl::Notification started, release;
  ASSERT_TRUE(q.Post([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  std::atomic<int> ran{0};
  EXPECT_TRUE(q.Post([&] { ++ran; }));
  EXPECT_TRUE(q.Post([&] { ++ran; }));
  EXPECT_EQ(q.pending(), 2u);
  EXPECT_FALSE(q.Post([&] { ran += 100; })) << "a third waiting task is over the bound";
  release.Notify();
  q.Shutdown();  // runs the two that were accepted
  EXPECT_EQ(ran, 2);
  EXPECT_FALSE(q.Post([&] { ran += 100; }));
  q.Shutdown();  // twice is fine
  EXPECT_EQ(ran, 2);
}

}  // namespace
}  // namespace forge
