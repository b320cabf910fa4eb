#include "coordinator/schedule_manager.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dataset_test_util.h"
#include "common/fake_clock.h"
#include "common/file_util.h"
#include "common/proto_time.h"
#include "coordinator/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using forge::v1::ScheduleRun;
using ::testing::HasSubstr;

constexpr char kTenant[] = "acme";

Principal Tenant(const std::string& name = kTenant) {
  Principal p;
  p.kind = forge::v1::TOKEN_KIND_TENANT;
  p.tenant = name;
  p.token_id = "t-" + name;
  return p;
}

// Every test's schedule: "0 2 * * *" in UTC, created at 2026-01-01 12:00 UTC.
const absl::Time kCreated = absl::FromUnixSeconds(1767268800);  // 2026-01-01T12:00:00Z
const absl::Time kSlot1 = kCreated + absl::Hours(14);           // 2026-01-02T02:00:00Z
const absl::Time kSlot2 = kSlot1 + absl::Hours(24);

class ScheduleManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir("schedule_manager_test");
    clock_.Set(kCreated);
    store_ = OpenTestStore(dir_);
    PutDataset("tickets", "sha-1");
    Restart();
  }
  void TearDown() override { Close(); }

  void Close() {
    schedules_.reset();
    jobs_.reset();
    catalog_.reset();
    storage_.reset();
  }
  // A coordinator restart over the same database (the store stays open: it is the disk).
  void Restart() {
    Close();
    StorageGatewayOptions go;
    go.root = dir_ + "/storage";
    storage_ = *StorageGateway::Open(go, store_.get());
    catalog_ = *ModelCatalog::Open(store_.get(), storage_.get(), &clock_);
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, JobManagerOptions{});
    ASSERT_TRUE(jobs_->Recover().ok());
    schedules_ = NewManager();
  }
  std::unique_ptr<ScheduleManager> NewManager() {
    auto m = std::make_unique<ScheduleManager>(store_.get(), &clock_, jobs_.get(), storage_.get(),
                                               catalog_.get());
    EXPECT_TRUE(m->Recover().ok());
    return m;
  }
  // A registered dataset row (its content is named by `sha`; the gateway reads rows at Open,
  // so a change shows after Restart()). With `texts`, its files too (eval suites are opened).
  void PutDataset(const std::string& name, const std::string& sha,
                  const std::vector<std::string>& texts = {}, double heldout = 0.05) {
    forge::v1::DatasetInfo d;
    d.set_tenant(kTenant);
    d.set_name(name);
    d.set_manifest_sha256(sha);
    WriteBatch b;
    b.put_datasets.push_back(d);
    ASSERT_TRUE(store_->CommitSync(std::move(b)).ok());
    if (texts.empty()) return;
    ASSERT_TRUE(PrepareTexts(name, texts,
                             absl::StrCat(dir_, "/storage/tenants/", kTenant, "/datasets/", name),
                             heldout)
                    .ok());
  }
  static forge::v1::JobSpec Spec() {
    forge::v1::JobSpec spec;
    spec.set_name("nightly");
    spec.mutable_model()->set_preset("tiny");
    auto* m = spec.mutable_data()->add_mixture();
    m->set_dataset("tickets");
    m->set_weight(1);
    spec.mutable_resources()->set_ranks(1);
    return spec;
  }
  absl::StatusOr<forge::v1::Schedule> Create(forge::v1::JobSpec spec = Spec(),
                                             const std::string& cron = "0 2 * * *",
                                             const std::string& tz = "") {
    forge::v1::CreateScheduleRequest req;
    req.set_cron(cron);
    req.set_time_zone(tz);
    *req.mutable_spec() = std::move(spec);
    return schedules_->Create(Tenant(), req);
  }
  std::vector<ScheduleRun> Runs(const std::string& id) {
    absl::StatusOr<std::vector<ScheduleRun>> r = schedules_->Runs(Tenant(), id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<ScheduleRun>{};
  }
  std::vector<forge::v1::Job> Jobs() { return *jobs_->List(Tenant(), {}); }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StorageGateway> storage_;
  std::unique_ptr<ModelCatalog> catalog_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ScheduleManager> schedules_;
};

TEST_F(ScheduleManagerTest, CreateValidatesCronZoneAndSpec) {
  absl::StatusOr<forge::v1::Schedule> bad = Create(Spec(), "61 2 * * *");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--cron: minute"));
  bad = Create(Spec(), "0 2 * * *", "Mars/Olympus");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--time-zone:"));
  forge::v1::JobSpec spec = Spec();
  spec.mutable_data()->mutable_mixture(0)->set_dataset("missing");
  bad = Create(spec);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("data.mixture[0].dataset"));
  spec = Spec();
  spec.mutable_resources()->set_ranks(0);
  spec.mutable_data()->mutable_mixture(0)->set_weight(-1);
  EXPECT_FALSE(Create(spec).ok());
  Principal admin;
  admin.kind = forge::v1::TOKEN_KIND_ADMIN;
  forge::v1::CreateScheduleRequest req;
  req.set_cron("0 2 * * *");
  *req.mutable_spec() = Spec();
  EXPECT_EQ(schedules_->Create(admin, req).status().code(), absl::StatusCode::kPermissionDenied);

  absl::StatusOr<forge::v1::Schedule> ok = Create(Spec(), "0 2 * * *", "Europe/Paris");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->id(), ::testing::StartsWith("s-"));
  EXPECT_EQ(ok->time_zone(), "Europe/Paris");
  EXPECT_EQ(ok->name(), "nightly");
  EXPECT_FALSE(ok->description().empty());
  // 02:00 in Paris (UTC+1 in January) is 01:00 UTC.
  EXPECT_EQ(FromProtoTime(ok->next_run_time()), kSlot1 - absl::Hours(1));
  EXPECT_EQ(Create(Spec()).value().time_zone(), "UTC");
}

TEST_F(ScheduleManagerTest, OneRunPerSlotWhenTickedTwiceAndFromTwoThreads) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  schedules_->Tick();  // the creation time's slot is before the schedule: nothing to do
  EXPECT_TRUE(Runs(s->id()).empty());
  clock_.Set(kSlot1 + absl::Minutes(1));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { schedules_->Tick(); });
  for (auto& t : threads) t.join();
  schedules_->Tick();
  std::vector<ScheduleRun> runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED);
  EXPECT_EQ(FromProtoTime(runs[0].slot_time()), kSlot1);
  EXPECT_EQ(runs[0].dataset_versions().at("tickets"), "sha-1");
  std::vector<forge::v1::Job> jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(runs[0].job_id(), jobs[0].id());
  std::vector<forge::v1::Schedule> listed = schedules_->List(Tenant());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].last_run().job_id(), jobs[0].id());
  EXPECT_EQ(FromProtoTime(listed[0].next_run_time()), kSlot2);
}

TEST_F(ScheduleManagerTest, TwoDecidersOnOneDatabaseRunTheSlotOnce) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  // A second manager over the same database (as a second process would be): neither knows
  // of the other's decision, so only the run row's primary key keeps the slot to one job.
  std::unique_ptr<ScheduleManager> other = NewManager();
  clock_.Set(kSlot1 + absl::Seconds(5));
  std::thread a([&] { schedules_->Tick(); });
  std::thread b([&] { other->Tick(); });
  a.join();
  b.join();
  other->Tick();
  schedules_->Tick();
  EXPECT_EQ(Runs(s->id()).size(), 1u);
  EXPECT_EQ(Jobs().size(), 1u);
  EXPECT_EQ(store_->LoadJobs()->size(), 1u);
  EXPECT_EQ(other->List(Tenant())[0].last_run().job_id(),
            schedules_->List(Tenant())[0].last_run().job_id());
}

TEST_F(ScheduleManagerTest, RestartDoesNotRunTheSlotAgain) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  clock_.Set(kSlot1 + absl::Minutes(3));
  schedules_->Tick();
  ASSERT_EQ(Runs(s->id()).size(), 1u);
  Restart();
  schedules_->Tick();
  EXPECT_EQ(Runs(s->id()).size(), 1u);
  EXPECT_EQ(Jobs().size(), 1u);
  ASSERT_EQ(schedules_->List(Tenant()).size(), 1u);
  EXPECT_EQ(schedules_->List(Tenant())[0].last_run().outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED);
}

TEST_F(ScheduleManagerTest, SkipsASlotWithNoNewDataAndRunsWhenDataChanges) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  clock_.Set(kSlot1);
  schedules_->Tick();
  clock_.Set(kSlot2 + absl::Seconds(1));
  schedules_->Tick();
  std::vector<ScheduleRun> runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA);  // newest first
  EXPECT_THAT(runs[0].message(),
              HasSubstr("no new data since the run of 2026-01-02T02:00:00Z (datasets unchanged: "
                        "tickets@sha-1)"));
  EXPECT_TRUE(runs[0].job_id().empty());
  EXPECT_EQ(Jobs().size(), 1u);

  PutDataset("tickets", "sha-2");
  Restart();
  clock_.Set(kSlot2 + absl::Hours(24));
  schedules_->Tick();
  runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED);
  EXPECT_EQ(runs[0].dataset_versions().at("tickets"), "sha-2");
  EXPECT_EQ(Jobs().size(), 2u);
}

TEST_F(ScheduleManagerTest, OnlyTheLatestMissedSlotRuns) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  clock_.Set(kSlot1 + absl::Hours(24 * 5 + 3));  // five days down
  schedules_->Tick();
  std::vector<ScheduleRun> runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(FromProtoTime(runs[0].slot_time()), kSlot1 + absl::Hours(24 * 5));
}

TEST_F(ScheduleManagerTest, ARefusedSubmissionIsAFailedRun) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  // The stored spec names a dataset that is not registered (any refusal at the slot).
  forge::v1::Schedule stored = schedules_->List(Tenant())[0];
  stored.mutable_spec()->mutable_data()->mutable_mixture(0)->set_dataset("gone");
  stored.clear_next_run_time();
  WriteBatch put;
  put.put_schedules.push_back(stored);
  ASSERT_TRUE(store_->CommitSync(std::move(put)).ok());
  Restart();
  clock_.Set(kSlot1);
  schedules_->Tick();
  schedules_->Tick();
  std::vector<ScheduleRun> runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_FAILED);
  EXPECT_THAT(runs[0].message(), HasSubstr("gone"));
  EXPECT_TRUE(Jobs().empty());
}

TEST_F(ScheduleManagerTest, WarmStartsFromTheChannelsPromotedCheckpoint) {
  PutDataset("tickets", "sha-t", {"alpha one", "beta two", "gamma three", "delta four"}, 0.0);
  PutDataset("suite", "sha-s", {"held out one", "held out two"}, 0.999999);
  forge::v1::CheckpointInfo c;
  c.set_id("c-00000000000000aa");
  c.set_job_id("j-old");
  c.set_tenant(kTenant);
  c.set_step(100);
  c.set_stage(forge::v1::STAGE_POST_TRAINING);
  c.mutable_shape()->set_layers(4);
  c.mutable_shape()->set_heads(4);
  c.mutable_shape()->set_width(256);
  c.mutable_shape()->set_context(128);
  c.mutable_shape()->set_vocab(256);
  ChannelRecord ch;
  ch.tenant = kTenant;
  ch.entry.set_channel("acme-prod");
  ch.entry.set_checkpoint(c.id());
  ch.entry.set_job_id("j-old");
  WriteBatch b;
  b.put_checkpoints.push_back(c);
  b.put_channels.push_back(ch);
  ASSERT_TRUE(store_->CommitSync(std::move(b)).ok());
  Restart();

  forge::v1::JobSpec spec = Spec();
  spec.mutable_eval()->add_suites("suite");
  spec.mutable_guard()->set_suite("suite");
  spec.mutable_promote()->set_channel("acme-prod");
  absl::StatusOr<forge::v1::Schedule> s = Create(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  clock_.Set(kSlot1);
  schedules_->Tick();
  std::vector<ScheduleRun> runs = Runs(s->id());
  ASSERT_EQ(runs.size(), 1u);
  ASSERT_EQ(runs[0].outcome(), forge::v1::SCHEDULE_RUN_SUBMITTED) << runs[0].message();
  EXPECT_EQ(runs[0].base_checkpoint(), c.id());
  std::vector<forge::v1::Job> jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].base_checkpoint(), c.id());
  EXPECT_EQ(jobs[0].spec().base().checkpoint(), c.id());
  EXPECT_FALSE(jobs[0].spec().has_model());
  EXPECT_EQ(jobs[0].spec().stage(), forge::v1::STAGE_POST_TRAINING);
}

TEST_F(ScheduleManagerTest, DeleteAndTenantIsolation) {
  absl::StatusOr<forge::v1::Schedule> s = Create();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(schedules_->List(Tenant("beta")).empty());
  EXPECT_EQ(schedules_->Delete(Tenant("beta"), s->id()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(schedules_->Runs(Tenant("beta"), s->id()).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(schedules_->Delete(Tenant(), s->id()).ok());
  EXPECT_TRUE(schedules_->List(Tenant()).empty());
  Restart();
  EXPECT_TRUE(schedules_->List(Tenant()).empty());
  clock_.Set(kSlot1);
  schedules_->Tick();
  EXPECT_TRUE(Jobs().empty());
}

TEST_F(ScheduleManagerTest, TickerThreadRunsAndStops) {
  ScheduleManager m(store_.get(), &clock_, jobs_.get(), storage_.get(), catalog_.get(),
                    ScheduleManagerOptions{absl::Milliseconds(5), nullptr});
  ASSERT_TRUE(m.Recover().ok());
  forge::v1::CreateScheduleRequest req;
  req.set_cron("0 2 * * *");
  *req.mutable_spec() = Spec();
  absl::StatusOr<forge::v1::Schedule> s = m.Create(Tenant(), req);
  ASSERT_TRUE(s.ok());
  clock_.Set(kSlot1);
  m.Start();
  for (int i = 0; i < 2000 && Jobs().empty(); ++i) absl::SleepFor(absl::Milliseconds(5));
  m.Stop();
  EXPECT_EQ(Jobs().size(), 1u);
}

}  // namespace
}  // namespace forge::coordinator
