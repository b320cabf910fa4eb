#include "coordinator/store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/proto_time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::Job;
using forge::v1::Worker;
using google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

Job MakeJob(const std::string& id, forge::v1::JobState state = forge::v1::JOB_STATE_QUEUED) {
  Job job;
  job.set_id(id);
  job.set_tenant("acme");
  job.set_state(state);
  return job;
}

WriteBatch JobBatch(const Job& job) {
  WriteBatch b;
  b.put_jobs.push_back(job);
  return b;
}

WriteBatch TenantBatch(const std::string& name) {
  WriteBatch b;
  b.insert_tenants.push_back(TenantRecord{name, absl::FromUnixSeconds(1700000000)});
  return b;
}

std::vector<std::string> JobIds(const std::vector<Job>& jobs) {
  std::vector<std::string> ids;
  for (const Job& j : jobs) ids.push_back(j.id());
  return ids;
}

std::vector<std::string> TenantNames(const std::vector<TenantRecord>& tenants) {
  std::vector<std::string> names;
  for (const TenantRecord& t : tenants) names.push_back(t.name);
  return names;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/store_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << "mkdtemp " << tmpl;
    dir_ = tmpl;
    path_ = dir_ + "/state.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> OpenStore(int max_batches = 4096) {
    StoreOptions options;
    options.path = path_;
    options.max_batches_per_transaction = max_batches;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    if (!store.ok()) {
      ADD_FAILURE() << "Store::Open: " << store.status();
      return nullptr;
    }
    return std::move(store).value();
  }

  // Blocks the writer thread inside a callback until the returned release is notified, so
  // that everything committed meanwhile is queued and folded into the next transaction.
  struct Gate {
    absl::Notification entered;
    absl::Notification release;
  };
  std::unique_ptr<Gate> HoldWriter(Store& store, const std::string& tenant) {
    auto gate = std::make_unique<Gate>();
    Gate* g = gate.get();
    store.Commit(TenantBatch(tenant), [g](absl::Status s) {
      EXPECT_TRUE(s.ok()) << s;
      g->entered.Notify();
      g->release.WaitForNotification();
    });
    gate->entered.WaitForNotification();
    return gate;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(StoreTest, RoundTripsEveryRecordKindThroughReopen) {
  Job job = MakeJob("j-0123456789abcdef", forge::v1::JOB_STATE_RUNNING);
  job.set_message("running on 2 workers");
  job.set_request_id("req-1");
  job.set_attempt(3);
  *job.mutable_create_time() = ToProtoTime(absl::FromUnixNanos(1700000000123456789));
  TenantRecord tenant{"acme", absl::FromUnixNanos(1700000000987654321)};
  TokenRecord token;
  token.id = "t-00ff";
  token.hash = std::string(64, 'a');
  token.kind = forge::v1::TOKEN_KIND_TENANT;
  token.tenant = "acme";
  token.note = "ci bot";
  token.create_time = absl::FromUnixNanos(1700000001000000007);
  token.revoked = true;
  Worker worker;
  worker.set_id("w-1");
  worker.set_hostname("node1");
  worker.set_version("0.1");
  worker.add_devices();

  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    batch.put_jobs.push_back(job);
    batch.insert_tenants.push_back(tenant);
    batch.put_tokens.push_back(token);
    batch.put_workers.push_back(worker);
    ASSERT_TRUE(store->CommitSync(std::move(batch)).ok());
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);

  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], job)) << (*jobs)[0].DebugString();

  absl::StatusOr<std::vector<TenantRecord>> tenants = store->LoadTenants();
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].name, "acme");
  EXPECT_EQ((*tenants)[0].create_time, tenant.create_time);

  absl::StatusOr<std::vector<TokenRecord>> tokens = store->LoadTokens();
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 1u);
  const TokenRecord& t = (*tokens)[0];
  EXPECT_EQ(t.id, token.id);
  EXPECT_EQ(t.hash, token.hash);
  EXPECT_EQ(t.kind, forge::v1::TOKEN_KIND_TENANT);
  EXPECT_EQ(t.tenant, "acme");
  EXPECT_EQ(t.note, "ci bot");
  EXPECT_EQ(t.create_time, token.create_time);
  EXPECT_TRUE(t.revoked);

  absl::StatusOr<std::vector<Worker>> workers = store->LoadWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*workers)[0], worker)) << (*workers)[0].DebugString();
}

TEST_F(StoreTest, DatabaseUsesWalJournal) {
  ASSERT_NE(OpenStore(), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(StoreTest, UpsertReplacesRows) {
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    WriteBatch first;
    first.put_jobs.push_back(MakeJob("j-1"));
    TokenRecord token{"t-1", "hash1", forge::v1::TOKEN_KIND_ADMIN, "", "admin",
                      absl::FromUnixSeconds(5), false};
    first.put_tokens.push_back(token);
    Worker worker;
    worker.set_id("w-1");
    worker.set_hostname("old");
    first.put_workers.push_back(worker);
    ASSERT_TRUE(store->CommitSync(std::move(first)).ok());

    WriteBatch second;
    Job job = MakeJob("j-1", forge::v1::JOB_STATE_FAILED);
    job.set_message("rank 0 exited with code 1");
    second.put_jobs.push_back(job);
    token.revoked = true;
    second.put_tokens.push_back(token);
    worker.set_hostname("new");
    second.put_workers.push_back(worker);
    ASSERT_TRUE(store->CommitSync(std::move(second)).ok());

    absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    ASSERT_EQ(jobs->size(), 1u);
    EXPECT_EQ((*jobs)[0].state(), forge::v1::JOB_STATE_FAILED);
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].state(), forge::v1::JOB_STATE_FAILED);
  EXPECT_EQ((*jobs)[0].message(), "rank 0 exited with code 1");
  absl::StatusOr<std::vector<TokenRecord>> tokens = store->LoadTokens();
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 1u);
  EXPECT_TRUE((*tokens)[0].revoked);
  absl::StatusOr<std::vector<Worker>> workers = store->LoadWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].hostname(), "new");
}

TEST_F(StoreTest, LoadJobsKeepsFirstInsertOrderAcrossUpdates) {
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    for (const char* id : {"j-c", "j-a", "j-b"}) {
      ASSERT_TRUE(store->CommitSync(JobBatch(MakeJob(id))).ok());
    }
    ASSERT_TRUE(store->CommitSync(JobBatch(MakeJob("j-c", forge::v1::JOB_STATE_RUNNING))).ok());
    WriteBatch batch;
    batch.put_jobs.push_back(MakeJob("j-e"));
    batch.put_jobs.push_back(MakeJob("j-a", forge::v1::JOB_STATE_RUNNING));
    batch.put_jobs.push_back(MakeJob("j-d"));
    ASSERT_TRUE(store->CommitSync(std::move(batch)).ok());
    absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    EXPECT_THAT(JobIds(*jobs), ElementsAre("j-c", "j-a", "j-b", "j-e", "j-d"));
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(JobIds(*jobs), ElementsAre("j-c", "j-a", "j-b", "j-e", "j-d"));
  EXPECT_EQ((*jobs)[0].state(), forge::v1::JOB_STATE_RUNNING);
  EXPECT_EQ((*jobs)[1].state(), forge::v1::JOB_STATE_RUNNING);
}

TEST_F(StoreTest, DuplicateTenantFailsOnlyItsOwnBatchInAGroup) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CommitSync(TenantBatch("acme")).ok());

  std::unique_ptr<Gate> gate = HoldWriter(*store, "gate");
  // Queued behind the gate, so all three share the next transaction.
  WriteBatch dup = TenantBatch("acme");
  dup.put_jobs.push_back(MakeJob("j-dup"));  // applied before the tenant, then rolled back
  WriteBatch beta = TenantBatch("beta");
  beta.put_jobs.push_back(MakeJob("j-ok"));
  std::vector<absl::Status> results(3, absl::UnknownError("callback did not run"));
  std::vector<int> calls(3, 0);
  std::vector<WriteBatch> batches = {std::move(beta), std::move(dup), TenantBatch("gamma")};
  absl::Notification last_done;
  for (int i = 0; i < 3; ++i) {
    store->Commit(std::move(batches[i]), [&results, &calls, &last_done, i](absl::Status s) {
      results[i] = std::move(s);
      ++calls[i];
      if (i == 2) last_done.Notify();
    });
  }
  gate->release.Notify();
  last_done.WaitForNotification();
  // acme, the gate, then the three queued batches in one transaction.
  EXPECT_EQ(store->stats().batches, 5u);
  EXPECT_EQ(store->stats().transactions, 3u);
  store.reset();

  EXPECT_THAT(calls, ElementsAre(1, 1, 1));
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_EQ(results[1].code(), absl::StatusCode::kAlreadyExists) << results[1];
  EXPECT_EQ(results[1].message(), "tenant acme already exists");
  EXPECT_TRUE(results[2].ok()) << results[2];

  store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<TenantRecord>> tenants = store->LoadTenants();
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_THAT(TenantNames(*tenants), ElementsAre("acme", "beta", "gamma", "gate"));
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(JobIds(*jobs), ElementsAre("j-ok"));
}

TEST_F(StoreTest, MaxBatchesPerTransactionSplitsGroups) {
  std::unique_ptr<Store> store = OpenStore(/*max_batches=*/4);
  ASSERT_NE(store, nullptr);
  std::unique_ptr<Gate> gate = HoldWriter(*store, "gate");
  for (int i = 0; i < 10; ++i) store->Commit(JobBatch(MakeJob(absl::StrCat("j-", i))), nullptr);
  absl::Notification last_done;
  store->Commit(WriteBatch(), [&last_done](absl::Status) { last_done.Notify(); });
  gate->release.Notify();
  last_done.WaitForNotification();
  // The gate's transaction, then the 11 queued batches in transactions of 4 + 4 + 3.
  EXPECT_EQ(store->stats().batches, 12u);
  EXPECT_EQ(store->stats().transactions, 4u);

  store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), 10u);
}

TEST_F(StoreTest, ManyConcurrentCommitsAllSurviveAndGroup) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  constexpr int kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kTotal);
  absl::Mutex mu;
  int done = 0;
  int failed = 0;
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const int n = t * kPerThread + i;
          store->Commit(JobBatch(MakeJob(absl::StrCat("j-", n))), [&, n](absl::Status s) {
            calls[n].fetch_add(1);
            absl::MutexLock lock(&mu);
            ++done;
            if (!s.ok()) ++failed;
          });
        }
      });
    }
    for (std::thread& t : threads) t.join();
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* d) { return *d == kTotal; }, &done));
      EXPECT_EQ(failed, 0);
    }
    const StoreStats stats = store->stats();
    EXPECT_EQ(stats.batches, static_cast<uint64_t>(kTotal));
    EXPECT_GE(stats.transactions, 1u);
    EXPECT_LT(stats.transactions, stats.batches);
    std::cout << "group commit: " << stats.batches << " batches in " << stats.transactions
              << " transactions\n";
  }
  for (int n = 0; n < kTotal; ++n) ASSERT_EQ(calls[n].load(), 1) << "batch " << n;

  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  std::vector<std::string> want;
  for (int n = 0; n < kTotal; ++n) want.push_back(absl::StrCat("j-", n));
  EXPECT_THAT(JobIds(*jobs), UnorderedElementsAreArray(want));
}

TEST_F(StoreTest, ConcurrentCommitSyncAllSucceed) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (!store->CommitSync(JobBatch(MakeJob(absl::StrCat("j-", t, "-", i)))).ok()) {
          failed.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), 200u);
}

TEST_F(StoreTest, BatchWithDuplicateTenantInsideChangesNothing) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  WriteBatch batch = TenantBatch("x");
  batch.insert_tenants.push_back(TenantRecord{"x", absl::FromUnixSeconds(1)});
  batch.put_jobs.push_back(MakeJob("j-1"));
  absl::Status s = store->CommitSync(std::move(batch));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(s.message(), "tenant x already exists");
  absl::StatusOr<std::vector<TenantRecord>> tenants = store->LoadTenants();
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_TRUE(tenants->empty());
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty());
}

TEST_F(StoreTest, ScheduleRunIsInsertedOncePerSlotWithItsBatch) {
  std::unique_ptr<Store> store = OpenStore();
  forge::v1::Schedule sc;
  sc.set_id("s-1");
  sc.set_tenant("acme");
  sc.set_cron("0 2 * * *");
  WriteBatch put;
  put.put_schedules.push_back(sc);
  ASSERT_TRUE(store->CommitSync(std::move(put)).ok());
  forge::v1::ScheduleRun run;
  run.set_schedule_id("s-1");
  run.mutable_slot_time()->set_seconds(1767319200);
  run.set_outcome(forge::v1::SCHEDULE_RUN_SUBMITTED);
  WriteBatch first;
  first.put_jobs.push_back(MakeJob("j-first"));
  first.insert_schedule_runs.push_back(run);
  ASSERT_TRUE(store->CommitSync(std::move(first)).ok());
  // A second row for the slot fails its whole batch: the job in it is not stored either.
  WriteBatch second;
  second.put_jobs.push_back(MakeJob("j-second"));
  second.insert_schedule_runs.push_back(run);
  EXPECT_EQ(store->CommitSync(std::move(second)).code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id(), "j-first");
  run.mutable_slot_time()->set_seconds(1767319200 + 86400);
  run.set_outcome(forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);
  WriteBatch next;
  next.insert_schedule_runs.push_back(run);
  ASSERT_TRUE(store->CommitSync(std::move(next)).ok());

  store.reset();
  store = OpenStore();
  absl::StatusOr<std::vector<forge::v1::Schedule>> schedules = store->LoadSchedules();
  ASSERT_TRUE(schedules.ok());
  ASSERT_EQ(schedules->size(), 1u);
  EXPECT_EQ((*schedules)[0].cron(), "0 2 * * *");
  absl::StatusOr<std::vector<forge::v1::ScheduleRun>> runs = store->LoadScheduleRuns("s-1");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);  // oldest slot first
  EXPECT_EQ((*runs)[0].outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED);
  EXPECT_EQ((*runs)[1].outcome(), forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);
  runs = store->LoadScheduleRuns("s-1", 1);  // the newest only
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].outcome(), forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);
  EXPECT_EQ(store->LoadScheduleRuns("s-1", 5)->size(), 2u);

  WriteBatch del;
  del.delete_schedules.push_back("s-1");
  ASSERT_TRUE(store->CommitSync(std::move(del)).ok());
  EXPECT_TRUE(store->LoadSchedules()->empty());
  EXPECT_TRUE(store->LoadScheduleRuns("s-1")->empty());
}

TEST_F(StoreTest, RefusesNewerSchemaVersion) {
  ASSERT_NE(OpenStore(), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 99 WHERE key = 'schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  EXPECT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);

  StoreOptions options;
  options.path = path_;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(path_));
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 99"));
  EXPECT_THAT(store.status().message(), HasSubstr("supports (5)"));
}

TEST_F(StoreTest, OpenInMissingDirectoryNamesThePath) {
  StoreOptions options;
  options.path = dir_ + "/missing/state.db";
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(options.path));
}

TEST_F(StoreTest, RejectsInvalidOptions) {
  StoreOptions options;
  options.path = path_;
  options.max_batches_per_transaction = 0;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr("max_batches_per_transaction"));
}

TEST_F(StoreTest, DestructorCommitsPendingBatches) {
  constexpr int kBatches = 100;
  std::vector<int> calls(kBatches, 0);
  std::vector<absl::Status> results(kBatches, absl::UnknownError("callback did not run"));
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    std::unique_ptr<Gate> gate = HoldWriter(*store, "gate");
    for (int i = 0; i < kBatches; ++i) {
      store->Commit(JobBatch(MakeJob(absl::StrCat("j-", i))), [&, i](absl::Status s) {
        ++calls[i];
        results[i] = std::move(s);
      });
    }
    // Let the writer go shortly after the destructor has started; the batches are queued
    // either way, and the destructor must wait for them.
    std::thread releaser([&gate] {
      absl::SleepFor(absl::Milliseconds(50));
      gate->release.Notify();
    });
    store.reset();
    releaser.join();
  }
  for (int i = 0; i < kBatches; ++i) {
    EXPECT_EQ(calls[i], 1) << "batch " << i;
    EXPECT_TRUE(results[i].ok()) << "batch " << i << ": " << results[i];
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<Job>> jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), static_cast<size_t>(kBatches));
}


// --- Storage catalog and metrics (schema v2) ---------------------------------------------------

forge::v1::CheckpointInfo MakeCheckpoint(const std::string& id, const std::string& job,
                                         int64_t step) {
  forge::v1::CheckpointInfo c;
  c.set_id(id);
  c.set_job_id(job);
  c.set_tenant("acme");
  c.set_step(step);
  c.set_path(absl::StrCat("tenants/acme/checkpoints/", job, "/step-", step));
  auto* f = c.add_files();
  f->set_name("MANIFEST.json");
  f->set_size(10);
  return c;
}

MetricRecord MakeMetric(const std::string& job, int32_t attempt, int64_t step, double loss) {
  MetricRecord m;
  m.job_id = job;
  m.point.set_attempt(attempt);
  m.point.set_step(step);
  m.point.set_loss(loss);
  (*m.point.mutable_tokens_per_source())["books"] = step * 100;
  return m;
}

std::vector<std::string> CheckpointIds(const std::vector<forge::v1::CheckpointInfo>& cs) {
  std::vector<std::string> ids;
  for (const auto& c : cs) ids.push_back(c.id());
  return ids;
}

TEST_F(StoreTest, DatasetsAndCheckpointsRoundTripAndDelete) {
  forge::v1::DatasetInfo d1;
  d1.set_tenant("acme");
  d1.set_name("books");
  d1.set_documents(7);
  d1.set_manifest_sha256(std::string(64, 'f'));
  forge::v1::DatasetInfo d2 = d1;
  d2.set_tenant("beta");
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    WriteBatch b;
    b.put_datasets = {d2, d1};
    b.put_checkpoints = {MakeCheckpoint("c-2", "j-1", 200), MakeCheckpoint("c-1", "j-1", 100),
                         MakeCheckpoint("c-3", "j-0", 300)};
    ASSERT_TRUE(store->CommitSync(std::move(b)).ok());
    WriteBatch del;
    del.delete_checkpoints = {"c-1", "c-unknown"};  // an unknown id is not an error
    ASSERT_TRUE(store->CommitSync(std::move(del)).ok());
    // Upsert by (tenant, name).
    d1.set_documents(8);
    WriteBatch up;
    up.put_datasets = {d1};
    ASSERT_TRUE(store->CommitSync(std::move(up)).ok());
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<forge::v1::DatasetInfo>> datasets = store->LoadDatasets();
  ASSERT_TRUE(datasets.ok()) << datasets.status();
  ASSERT_EQ(datasets->size(), 2u);
  EXPECT_TRUE(MessageDifferencer::Equals((*datasets)[0], d1));
  EXPECT_TRUE(MessageDifferencer::Equals((*datasets)[1], d2));
  absl::StatusOr<std::vector<forge::v1::CheckpointInfo>> checkpoints = store->LoadCheckpoints();
  ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
  EXPECT_THAT(CheckpointIds(*checkpoints), ElementsAre("c-3", "c-2"));  // by (job, step)
  EXPECT_TRUE(MessageDifferencer::Equals((*checkpoints)[1], MakeCheckpoint("c-2", "j-1", 200)));
}

TEST_F(StoreTest, MetricsLoadAfterStepInStepOrder) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  WriteBatch b;
  for (int64_t step : {3, 1, 2, 4}) b.put_metrics.push_back(MakeMetric("j-1", 1, step, step));
  b.put_metrics.push_back(MakeMetric("j-2", 1, 5, 0.5));
  // A resumed attempt repeats step 4: both points are kept, attempt order within the step.
  b.put_metrics.push_back(MakeMetric("j-1", 2, 4, 40));
  ASSERT_TRUE(store->CommitSync(std::move(b)).ok());
  WriteBatch again;  // upsert by (job, attempt, step)
  again.put_metrics.push_back(MakeMetric("j-1", 1, 3, 33));
  ASSERT_TRUE(store->CommitSync(std::move(again)).ok());

  absl::StatusOr<std::vector<forge::v1::MetricPoint>> all = store->LoadMetrics("j-1", -1);
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::pair<int64_t, double>> got;
  for (const auto& p : *all) got.emplace_back(p.step(), p.loss());
  EXPECT_THAT(got, ElementsAre(std::make_pair(1, 1.0), std::make_pair(2, 2.0),
                               std::make_pair(3, 33.0), std::make_pair(4, 4.0),
                               std::make_pair(4, 40.0)));
  EXPECT_EQ(all->front().tokens_per_source().at("books"), 100);

  absl::StatusOr<std::vector<forge::v1::MetricPoint>> after = store->LoadMetrics("j-1", 2);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 3u);
  EXPECT_EQ((*after)[0].step(), 3);
  absl::StatusOr<std::vector<forge::v1::MetricPoint>> none = store->LoadMetrics("j-9", -1);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(StoreTest, LoadMetricsDoesNotWaitForTheWriter) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  WriteBatch b;
  b.put_metrics.push_back(MakeMetric("j-1", 1, 1, 1.0));
  ASSERT_TRUE(store->CommitSync(std::move(b)).ok());
  // Keep the writer thread busy inside a callback, with more batches queued behind it.
  std::unique_ptr<Gate> gate = HoldWriter(*store, "held");
  WriteBatch queued;
  queued.put_metrics.push_back(MakeMetric("j-1", 1, 2, 2.0));
  store->Commit(std::move(queued), nullptr);
  absl::StatusOr<std::vector<forge::v1::MetricPoint>> points = store->LoadMetrics("j-1", 0);
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ(points->size(), 1u);  // the committed point; the queued one is not durable yet
  gate->release.Notify();
}

TEST_F(StoreTest, MigratesVersion1DatabaseByAddingCatalogTables) {
  // A database exactly as schema version 1 left it, with one job in it.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const char* v1 = R"sql(
      CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
      INSERT INTO meta VALUES('schema_version', 1);
      CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL UNIQUE,
        tenant TEXT NOT NULL, state INTEGER NOT NULL, request_id TEXT NOT NULL, job BLOB NOT NULL);
      CREATE INDEX jobs_by_tenant ON jobs(tenant);
      CREATE TABLE tenants (name TEXT PRIMARY KEY NOT NULL, create_time_ns INTEGER NOT NULL);
      CREATE TABLE tokens (id TEXT PRIMARY KEY NOT NULL, hash TEXT NOT NULL UNIQUE,
        kind INTEGER NOT NULL, tenant TEXT NOT NULL, note TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL, revoked INTEGER NOT NULL);
      CREATE TABLE workers (id TEXT PRIMARY KEY NOT NULL, worker BLOB NOT NULL);
      INSERT INTO tenants VALUES('acme', 1);
    )sql";
    ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    absl::StatusOr<std::vector<TenantRecord>> tenants = store->LoadTenants();
    ASSERT_TRUE(tenants.ok()) << tenants.status();
    EXPECT_THAT(TenantNames(*tenants), ElementsAre("acme"));
    WriteBatch b;
    b.put_checkpoints.push_back(MakeCheckpoint("c-1", "j-1", 100));
    b.put_metrics.push_back(MakeMetric("j-1", 1, 1, 1.0));
    ASSERT_TRUE(store->CommitSync(std::move(b)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1,
                               &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(stmt, 0), 5);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<forge::v1::CheckpointInfo>> checkpoints = store->LoadCheckpoints();
  ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
  EXPECT_THAT(CheckpointIds(*checkpoints), ElementsAre("c-1"));
}


TEST(StoreAlertsTest, OutboxRowsSurviveAReopenUntilDeleted) {
  std::string tmpl = ::testing::TempDir() + "/store_alerts_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  StoreOptions so;
  so.path = tmpl + "/forge.db";
  {
    auto store = *Store::Open(so);
    WriteBatch b;
    b.put_alerts = {{"a-1", "{\"event\":\"job_failed\"}"}, {"a-2", "{\"event\":\"worker_lost\"}"}};
    ASSERT_TRUE(store->CommitSync(std::move(b)).ok());
    WriteBatch again;  // the same id again is left as it is
    again.put_alerts = {{"a-1", "changed"}};
    ASSERT_TRUE(store->CommitSync(std::move(again)).ok());
  }
  auto store = *Store::Open(so);
  auto alerts = store->LoadAlerts();
  ASSERT_TRUE(alerts.ok()) << alerts.status();
  ASSERT_EQ(alerts->size(), 2u);
  EXPECT_EQ((*alerts)[0].id, "a-1");
  EXPECT_EQ((*alerts)[0].body, "{\"event\":\"job_failed\"}");
  EXPECT_EQ((*alerts)[1].id, "a-2");
  WriteBatch del;
  del.delete_alerts = {"a-1", "unknown"};
  ASSERT_TRUE(store->CommitSync(std::move(del)).ok());
  alerts = store->LoadAlerts();
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0].id, "a-2");
}

}  // namespace
}  // namespace forge::coordinator
