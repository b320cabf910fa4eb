// A fixed set of threads that runs fork-join loops for the CPU kernels.
//
// Determinism is the caller's side of the contract: ParallelFor hands out task indices in no
// particular order to no particular thread, so a kernel must make what task i computes a
// function of i alone (a fixed partition of the work, each output reduced by one task in a
// fixed order). Every kernel in this folder does, which is why the engine gives the same bits
// at any thread count.
#ifndef FORGE_WORKER_ENGINE_THREAD_POOL_H_
#define FORGE_WORKER_ENGINE_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace forge::engine {

class ThreadPool {
 public:
  // Starts threads - 1 workers; the thread calling ParallelFor is the last one.
  // REQUIRES: threads >= 1.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) once for every i in [0, n) and returns when all have finished. Tasks are
  // claimed in increasing order of i, so put the biggest first. Not reentrant: call it from
  // one thread at a time, and never from inside fn.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn);

 private:
  void WorkerLoop();
  void RunTasks();

  std::vector<std::thread> workers_;  // constant after construction

  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped for each ParallelFor
  int busy_workers_ ABSL_GUARDED_BY(mu_) = 0;     // workers still inside this generation
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The current loop; written under mu_ before generation_ is bumped, read by workers after.
  const absl::FunctionRef<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_THREAD_POOL_H_
