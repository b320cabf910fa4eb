#include "worker/engine/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace forge::engine {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (int64_t n : {0, 1, 3, 1000}) {
      for (int round = 0; round < 50; ++round) {
        std::vector<std::atomic<int>> hits(n);
        pool.ParallelFor(n, [&](int64_t i) { hits[i].fetch_add(1); });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << i;
      }
    }
  }
}

TEST(ThreadPool, UsesMoreThanOneThread) {
  ThreadPool pool(2);
  std::atomic<int> inside{0}, max_inside{0};
  pool.ParallelFor(64, [&](int64_t) {
    const int now = inside.fetch_add(1) + 1;
    int seen = max_inside.load();
    while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
    }
    // Hold the task until another thread shows up (bounded, so a lone thread still ends).
    for (int spin = 0; spin < 20000000 && max_inside.load() < 2; ++spin) {
    }
    inside.fetch_sub(1);
  });
  EXPECT_EQ(max_inside.load(), 2);
}

}  // namespace
}  // namespace forge::engine
