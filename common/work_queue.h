// WorkQueue: a fixed set of threads running posted tasks in order of posting, with a bound on
// the tasks waiting, for work that must not run on a gRPC callback thread (a job submission's
// contamination check reads every training token).
//
//   WorkQueue q({.threads = 2, .max_pending = 64});
//   if (!q.Post([=] { ... reactor->Finish(...); })) reactor->Finish(busy);
//
// Shutdown (or the destructor) refuses new tasks, lets the threads finish every task already
// posted, and joins them; so a task may count on the objects that outlive the queue.
//
// Thread safety: thread-safe.
#ifndef FORGE_COMMON_WORK_QUEUE_H_
#define FORGE_COMMON_WORK_QUEUE_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace forge {

struct WorkQueueOptions {
  int threads = 1;          // >= 1
  size_t max_pending = 64;  // tasks posted but not started; Post refuses beyond it
};

class WorkQueue {
 public:
  explicit WorkQueue(WorkQueueOptions options);
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // False (and the task is dropped, not run) when max_pending tasks are waiting or the queue
  // is shut down.
  bool Post(std::function<void()> task);
  // Tasks posted but not started.
  size_t pending() const;
  void Shutdown();

 private:
  void Loop();

  const WorkQueueOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  absl::Mutex join_mu_;  // one Shutdown joins
};

}  // namespace forge

#endif  // FORGE_COMMON_WORK_QUEUE_H_
