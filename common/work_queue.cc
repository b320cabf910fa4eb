#include "common/work_queue.h"

#include <algorithm>
#include <utility>

namespace forge {

WorkQueue::WorkQueue(WorkQueueOptions options) : options_(std::move(options)) {
  const int n = std::max(1, options_.threads);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkQueue::~WorkQueue() { Shutdown(); }

bool WorkQueue::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || tasks_.size() >= options_.max_pending) return false;
  tasks_.push_back(std::move(task));
  return true;
}

size_t WorkQueue::pending() const {
  absl::MutexLock lock(&mu_);
  return tasks_.size();
}

void WorkQueue::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  absl::MutexLock join(&join_mu_);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void WorkQueue::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkQueue* q)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) { return q->stopping_ || !q->tasks_.empty(); },
          this));
      if (tasks_.empty()) return;  // stopping, and nothing left to run
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace forge
