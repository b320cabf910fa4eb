#include "coordinator/worker_manager.h"

#include <stdlib.h>

#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Records what the manager does to a stream.
class RecordingConnection final : public WorkerConnection {
 public:
  bool Send(const forge::v1::CoordinatorMessage& msg) override {
    sent.push_back(msg);
    return !closed;
  }
  void Close(absl::string_view why) override {
    closed = true;
    close_reason = std::string(why);
  }
  std::vector<forge::v1::CoordinatorMessage> sent;
  bool closed = false;
  std::string close_reason;
};

forge::v1::RegisterWorker Reg(const std::string& id, int cpus) {
  forge::v1::RegisterWorker r;
  r.set_worker_id(id);
  r.set_hostname("host-" + id);
  for (int i = 0; i < cpus; ++i) {
    auto* d = r.add_devices();
    d->set_id("cpu:" + std::to_string(i));
    d->set_kind(forge::v1::DEVICE_KIND_CPU);
  }
  return r;
}

class WorkerManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/wm-XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    Open();
  }
  void Open() {
    workers_.reset();
    store_.reset();
    StoreOptions so;
    so.path = dir_ + "/forge.db";
    store_ = *Store::Open(so);
    workers_ = std::make_unique<WorkerManager>(
        store_.get(), &clock_, WorkerManagerOptions{absl::Seconds(1), absl::Seconds(3), nullptr});
    ASSERT_TRUE(workers_->Recover().ok());
  }
  forge::v1::WorkerState State(const std::string& id) {
    for (const auto& w : workers_->List()) {
      if (w.id() == id) return w.state();
    }
    return forge::v1::WORKER_STATE_UNSPECIFIED;
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<WorkerManager> workers_;
};

TEST_F(WorkerManagerTest, SilentPastTheGraceIsDeadAndReconnectingRevives) {
  auto conn = std::make_shared<RecordingConnection>();
  auto reg = workers_->Register(Reg("wa", 2), conn);
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(reg->first.heartbeat_interval_ms(), 1000);
  EXPECT_EQ(reg->first.grace_ms(), 3000);
  clock_.Advance(absl::Seconds(2));
  workers_->Heartbeat("wa", reg->second, {});
  clock_.Advance(absl::Seconds(3));  // exactly the grace since the last heartbeat: alive
  EXPECT_TRUE(workers_->ExpireSilent().empty());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(workers_->ExpireSilent(), ElementsAre("wa"));
  EXPECT_EQ(State("wa"), forge::v1::WORKER_STATE_DEAD);
  EXPECT_TRUE(conn->closed);
  EXPECT_TRUE(workers_->ExpireSilent().empty());  // reported once
  ClusterView view = workers_->View();
  ASSERT_EQ(view.workers.size(), 1u);
  EXPECT_FALSE(view.workers[0].alive);

  auto again = workers_->Register(Reg("wa", 2), std::make_shared<RecordingConnection>());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(State("wa"), forge::v1::WORKER_STATE_ALIVE);
  EXPECT_TRUE(workers_->View().workers[0].alive);
}

TEST_F(WorkerManagerTest, NewerStreamReplacesOlderAndStaleHeartbeatsAreIgnored) {
  auto first = std::make_shared<RecordingConnection>();
  auto second = std::make_shared<RecordingConnection>();
  auto g1 = workers_->Register(Reg("wa", 1), first)->second;
  auto g2 = workers_->Register(Reg("wa", 1), second)->second;
  EXPECT_NE(g1, g2);
  EXPECT_TRUE(first->closed);
  EXPECT_THAT(first->close_reason, HasSubstr("newer stream"));
  EXPECT_FALSE(second->closed);
  forge::v1::CoordinatorMessage m;
  m.mutable_stop()->set_job_id("j");
  EXPECT_TRUE(workers_->Send("wa", m));
  EXPECT_EQ(second->sent.size(), 1u);
  EXPECT_TRUE(first->sent.empty());
  // The old stream ending does not detach the new one.
  workers_->Disconnected("wa", g1);
  EXPECT_TRUE(workers_->Send("wa", m));
  // A heartbeat arriving late on the old stream does not keep the worker alive.
  clock_.Advance(absl::Seconds(3));
  workers_->Heartbeat("wa", g1, {});
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(workers_->ExpireSilent(), ElementsAre("wa"));
  EXPECT_TRUE(second->closed);  // a dead worker's stream is ended
  EXPECT_FALSE(workers_->Send("wa", m));
}

TEST_F(WorkerManagerTest, BadRegistrationsAreRefusedByField) {
  auto conn = std::make_shared<RecordingConnection>();
  auto empty = Reg("wa", 0);
  EXPECT_THAT(workers_->Register(empty, conn).status().message(), HasSubstr("register.devices"));
  auto dup = Reg("wa", 1);
  *dup.add_devices() = dup.devices(0);
  EXPECT_THAT(workers_->Register(dup, conn).status().message(), HasSubstr("listed twice"));
  EXPECT_THAT(workers_->Register(Reg("bad id!", 1), conn).status().message(),
              HasSubstr("register.worker_id"));
  EXPECT_TRUE(workers_->List().empty());
}

// Recovered workers get the reconnect grace (8 s by default), not the heartbeat grace (3 s
// here): their reconnect backoff has grown while the coordinator was down. Once a worker has
// reconnected, the heartbeat grace applies to it again.
TEST_F(WorkerManagerTest, RecoveredWorkersGetTheReconnectGrace) {
  ASSERT_TRUE(workers_->Register(Reg("wa", 2), std::make_shared<RecordingConnection>()).ok());
  ASSERT_TRUE(workers_->Register(Reg("wb", 2), std::make_shared<RecordingConnection>()).ok());
  ASSERT_TRUE(store_->CommitSync({}).ok());  // the registry writes are asynchronous
  clock_.Advance(absl::Minutes(10));         // the coordinator was down a long time
  Open();
  EXPECT_EQ(State("wa"), forge::v1::WORKER_STATE_ALIVE);
  EXPECT_EQ(workers_->View().workers[0].devices.size(), 2u);
  // Recovering the rest of the state took 5 s; the grace starts once the server listens.
  clock_.Advance(absl::Seconds(5));
  workers_->StartReconnectWindow();
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(workers_->Register(Reg("wa", 2), std::make_shared<RecordingConnection>()).ok());
  clock_.Advance(absl::Seconds(2));
  EXPECT_THAT(workers_->ExpireSilent(), IsEmpty());  // 4 s: past the heartbeat grace
  clock_.Advance(absl::Seconds(2));
  EXPECT_THAT(workers_->ExpireSilent(), ElementsAre("wa"));  // 4 s since it reconnected
  EXPECT_EQ(State("wb"), forge::v1::WORKER_STATE_ALIVE);
  clock_.Advance(absl::Milliseconds(2001));
  EXPECT_THAT(workers_->ExpireSilent(), ElementsAre("wb"));  // 8 s without reconnecting
}

TEST(WorkerManagerLostTest, AWorkerDeadBeforeARestartIsNotReportedLostAgain) {
  std::string tmpl = ::testing::TempDir() + "/wm-lost-XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  StoreOptions so;
  so.path = dir + "/forge.db";
  FakeClock clock;
  std::vector<std::string> lost, committed;
  // What the hook adds goes in the batch that records the worker dead (an alert's outbox row
  // in the coordinator), and what it returns runs once that batch is committed.
  WorkerManagerOptions o{
      absl::Seconds(1), absl::Seconds(3),
      [&](const forge::v1::Worker& w, absl::Duration,
          WriteBatch* batch) -> std::function<void(absl::Status)> {
        lost.push_back(w.id());
        EXPECT_EQ(w.state(), forge::v1::WORKER_STATE_ALIVE) << "the worker as last seen";
        EXPECT_EQ(batch->put_workers.size(), 1u);
        if (!batch->put_workers.empty()) {
          EXPECT_EQ(batch->put_workers[0].state(), forge::v1::WORKER_STATE_DEAD);
        }
        batch->put_alerts.push_back({.id = "al-" + w.id(), .body = "{}"});
        return [&committed, id = w.id()](absl::Status s) {
          if (s.ok()) committed.push_back(id);
        };
      }};
  {
    auto store = *Store::Open(so);
    WorkerManager m(store.get(), &clock, o);
    ASSERT_TRUE(m.Recover().ok());
    ASSERT_TRUE(m.Register(Reg("wa", 1), std::make_shared<RecordingConnection>()).ok());
    ASSERT_TRUE(m.Register(Reg("wb", 1), std::make_shared<RecordingConnection>()).ok());
    clock.Advance(absl::Seconds(2));
    m.Heartbeat("wb", 2, forge::v1::Heartbeat());
    clock.Advance(absl::Seconds(2));
    EXPECT_THAT(m.ExpireSilent(), ElementsAre("wa"));
    EXPECT_THAT(lost, ElementsAre("wa"));
    ASSERT_TRUE(store->CommitSync({}).ok());
    EXPECT_THAT(committed, ElementsAre("wa"));
    absl::StatusOr<std::vector<AlertRecord>> alerts = store->LoadAlerts();
    ASSERT_TRUE(alerts.ok()) << alerts.status();
    ASSERT_EQ(alerts->size(), 1u);
    EXPECT_EQ((*alerts)[0].id, "al-wa");
  }
  // A restart: wb (alive at the stop) gets the reconnect grace (8 s) to reconnect; wa stays
  // dead.
  auto store = *Store::Open(so);
  WorkerManager m(store.get(), &clock, o);
  ASSERT_TRUE(m.Recover().ok());
  lost.clear();
  for (const auto& w : m.List()) {
    EXPECT_EQ(w.state(), w.id() == "wa" ? forge::v1::WORKER_STATE_DEAD
                                        : forge::v1::WORKER_STATE_ALIVE)
        << w.id();
  }
  clock.Advance(absl::Seconds(9));
  EXPECT_THAT(m.ExpireSilent(), ElementsAre("wb"));
  EXPECT_THAT(lost, ElementsAre("wb")) << "wa was dead before the restart: told once";
  // Reconnecting revives a worker that was dead at the restart.
  ASSERT_TRUE(m.Register(Reg("wa", 1), std::make_shared<RecordingConnection>()).ok());
  EXPECT_EQ(m.counts().alive, 1);
}

}  // namespace
}  // namespace forge::coordinator
