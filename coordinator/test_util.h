// Helpers of the coordinator's unit tests: a fresh directory under the test temp dir, a store
// in it that does not wait for fsync (synchronous=NORMAL; opened again over the same file for
// a "restart"), JobManager::Submit waited for, and a rank's progress report.
#ifndef FORGE_COORDINATOR_TEST_UTIL_H_
#define FORGE_COORDINATOR_TEST_UTIL_H_

#include <stdlib.h>

#include <future>
#include <memory>
#include <string>

#include "coordinator/job_manager.h"
#include "coordinator/store.h"
#include "gtest/gtest.h"

namespace forge::coordinator {

inline std::string NewTestDir(const std::string& tag) {
  std::string tmpl = ::testing::TempDir() + "/" + tag + "-XXXXXX";
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr) << tmpl;
  return tmpl;
}

inline std::unique_ptr<Store> OpenTestStore(const std::string& dir) {
  StoreOptions so;
  so.path = dir + "/state.db";
  so.synchronous_full = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(so);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

// JobManager::Submit, returning once the submission is answered (committed or refused).
inline absl::StatusOr<forge::v1::SubmitJobResponse> SubmitAndWait(JobManager& jobs,
                                                                  const Principal& caller,
                                                                  forge::v1::SubmitJobRequest req) {
  std::promise<absl::StatusOr<forge::v1::SubmitJobResponse>> done;
  jobs.Submit(caller, std::move(req), [&](auto r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

// A rank's progress report for `job`'s current attempt at `step`: loss 2.5, 1000 tokens/s,
// 512 tokens per step from dataset "d", 100 steps in all.
inline forge::v1::ProgressReport ProgressReportFor(const forge::v1::Job& job, int rank,
                                                   int64_t step, int world_size = 2) {
  forge::v1::ProgressReport r;
  r.mutable_rank()->set_job_id(job.id());
  r.mutable_rank()->set_attempt(job.attempt());
  r.mutable_rank()->set_rank(rank);
  r.set_step(step);
  r.set_total_steps(100);
  r.set_loss(2.5);
  r.set_phase("training");
  r.set_tokens_per_second(1000);
  r.set_world_size(world_size);
  (*r.mutable_tokens_per_source())["d"] = step * 512;
  return r;
}

inline Principal TenantPrincipal(const std::string& tenant) {
  Principal p;
  p.kind = forge::v1::TOKEN_KIND_TENANT;
  p.tenant = tenant;
  return p;
}

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_TEST_UTIL_H_
