// WorkerAgent against a fake WorkerService on 127.0.0.1 (real gRPC, no coordinator logic).
#include "worker/agent.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "forge/v1/coordinator.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::worker {
namespace {

using forge::v1::CoordinatorMessage;
using forge::v1::WorkerMessage;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);  // generous: waiting for events only

// Records what a worker sends; answers RegisterWorker with Registered and every heartbeat
// with a HeartbeatAck (unless told not to). Thread-safe: all state under mu_, including
// writes to the live stream.
class FakeCoordinator final : public forge::v1::WorkerService::Service {
 public:
  struct Options {
    int64_t heartbeat_interval_ms = 50;
    int64_t grace_ms = 5000;
    bool ack_heartbeats = true;
    grpc::Status refuse = grpc::Status::OK;  // not OK: every Connect ends with it at once
  };
  struct Heartbeat {
    int stream;  // 1 for the first registration, 2 for the second...
    forge::v1::Heartbeat beat;
  };

  explicit FakeCoordinator(Options options) : options_(options) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<CoordinatorMessage, WorkerMessage>* stream) override {
    {
      absl::MutexLock lock(&mu_);
      ++connects_;
      auto auth = context->client_metadata().find("authorization");
      authorization_.push_back(auth == context->client_metadata().end()
                                   ? ""
                                   : std::string(auth->second.data(), auth->second.size()));
    }
    if (!options_.refuse.ok()) return options_.refuse;
    WorkerMessage first;
    if (!stream->Read(&first) || !first.has_register_()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "register first");
    }
    int id;
    {
      absl::MutexLock lock(&mu_);
      registers_.push_back(first.register_());
      id = static_cast<int>(registers_.size());
      stream_ = stream;
      context_ = context;
      CoordinatorMessage reply;
      reply.mutable_registered()->set_worker_id(first.register_().worker_id());
      reply.mutable_registered()->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
      reply.mutable_registered()->set_grace_ms(options_.grace_ms);
      stream->Write(reply);
    }
    WorkerMessage message;
    while (stream->Read(&message)) {
      absl::MutexLock lock(&mu_);
      if (message.has_heartbeat()) {
        heartbeats_.push_back({id, message.heartbeat()});
        if (options_.ack_heartbeats) {
          CoordinatorMessage ack;
          ack.mutable_heartbeat_ack()->set_seq(message.heartbeat().seq());
          stream->Write(ack);
        }
      } else if (message.has_ack()) {
        acks_.push_back(message.ack());
        heartbeats_at_ack_.push_back(heartbeats_.size());
      }
    }
    absl::MutexLock lock(&mu_);
    if (stream_ == stream) {
      stream_ = nullptr;
      context_ = nullptr;
    }
    return grpc::Status::OK;
  }

  // Sends `message` on the live stream; false if there is none.
  bool Send(const CoordinatorMessage& message) {
    absl::MutexLock lock(&mu_);
    return stream_ != nullptr && stream_->Write(message);
  }

  // Ends the live stream from the coordinator's side.
  void EndStream() {
    absl::MutexLock lock(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }

  // Waits up to kWait for `done` (called under mu_) to hold.
  template <typename F>
  bool WaitFor(F done) {
    absl::MutexLock lock(&mu_);
    auto cond = [&] { return done(*this); };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), kWait);
  }

  // Read under mu_ (inside WaitFor) or after WaitFor.
  int connects_ = 0;
  std::vector<std::string> authorization_;
  std::vector<forge::v1::RegisterWorker> registers_;
  std::vector<Heartbeat> heartbeats_;
  std::vector<forge::v1::AssignmentAck> acks_;
  std::vector<size_t> heartbeats_at_ack_;  // heartbeats_.size() when each ack arrived
  absl::Mutex mu_;

 private:
  const Options options_;
  grpc::ServerReaderWriter<CoordinatorMessage, WorkerMessage>* stream_ = nullptr;
  grpc::ServerContext* context_ = nullptr;
};

// A FakeCoordinator served on 127.0.0.1 (port 0 = any free port).
struct FakeServer {
  FakeServer(FakeCoordinator::Options options, int want_port) : service(options) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", want_port),
                             grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() { Stop(); }
  void Stop() {
    if (server == nullptr) return;
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    server->Wait();
    server.reset();
  }

  FakeCoordinator service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

forge::v1::Device Cpu(int i) {
  forge::v1::Device d;
  d.set_id(absl::StrCat("cpu:", i));
  d.set_kind(forge::v1::DEVICE_KIND_CPU);
  d.set_name("Test CPU");
  return d;
}

CoordinatorMessage Assign(const std::string& job, int attempt, int rank,
                          const std::string& device) {
  CoordinatorMessage m;
  forge::v1::Assignment* a = m.mutable_assign();
  a->set_job_id(job);
  a->set_attempt(attempt);
  a->set_rank(rank);
  a->set_world_size(2);
  a->set_device(device);
  a->mutable_spec()->mutable_resources()->set_device(forge::v1::DEVICE_KIND_CPU);
  return m;
}

CoordinatorMessage Stop(const std::string& job, int attempt) {
  CoordinatorMessage m;
  m.mutable_stop()->set_job_id(job);
  m.mutable_stop()->set_attempt(attempt);
  m.mutable_stop()->set_reason("test");
  return m;
}

bool Holds(const google::protobuf::RepeatedPtrField<forge::v1::RankInfo>& ranks,
           const std::string& job, int attempt, int rank, const std::string& device) {
  for (const forge::v1::RankInfo& r : ranks) {
    if (r.job_id() == job && r.attempt() == attempt && r.rank() == rank && r.device() == device &&
        r.phase() == "assigned") {
      return true;
    }
  }
  return false;
}

class WorkerAgentTest : public ::testing::Test {
 protected:
  WorkerAgentOptions Options(int port) {
    WorkerAgentOptions o;
    o.coordinator = absl::StrCat("127.0.0.1:", port);
    o.token_source = [] { return absl::StatusOr<std::string>("secret-token"); };
    o.worker_id = "w1";
    o.hostname = "host1";
    o.devices = {Cpu(0), Cpu(1)};
    o.version = "test-version";
    o.initial_backoff = absl::Milliseconds(20);
    o.max_backoff = absl::Milliseconds(200);
    o.seed = 1;
    return o;
  }

  void StartAgent(WorkerAgentOptions options) {
    agent_ = std::make_unique<WorkerAgent>(std::move(options));
    thread_ = std::thread([this] {
      run_status_ = agent_->Run();
      run_done_.Notify();
    });
  }

  // Shuts the agent down; true if Run() returned within `limit`.
  bool StopAgent(absl::Duration limit = kWait) {
    if (agent_ == nullptr) return true;
    agent_->Shutdown();
    const bool in_time = run_done_.WaitForNotificationWithTimeout(limit);
    thread_.join();
    agent_.reset();
    return in_time;
  }

  void TearDown() override { StopAgent(); }

  std::unique_ptr<WorkerAgent> agent_;
  std::thread thread_;
  absl::Notification run_done_;
  absl::Status run_status_;
};

TEST_F(WorkerAgentTest, RegistersWithDevicesAndToken) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  absl::MutexLock lock(&server.service.mu_);
  EXPECT_EQ(server.service.authorization_[0], "Bearer secret-token");
  const forge::v1::RegisterWorker& reg = server.service.registers_[0];
  EXPECT_EQ(reg.worker_id(), "w1");
  EXPECT_EQ(reg.hostname(), "host1");
  EXPECT_EQ(reg.version(), "test-version");
  ASSERT_EQ(reg.devices_size(), 2);
  EXPECT_EQ(reg.devices(0).id(), "cpu:0");
  EXPECT_EQ(reg.devices(1).id(), "cpu:1");
  EXPECT_EQ(reg.devices(1).kind(), forge::v1::DEVICE_KIND_CPU);
  EXPECT_EQ(reg.ranks_size(), 0);
}

TEST_F(WorkerAgentTest, HeartbeatsCarryIncreasingSeq) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.heartbeats_.size() >= 3; }));
  absl::MutexLock lock(&server.service.mu_);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(server.service.heartbeats_[i].beat.seq(), i + 1);
    EXPECT_EQ(server.service.heartbeats_[i].beat.ranks_size(), 0);
  }
}

TEST_F(WorkerAgentTest, AssignmentIsAckedAndShownInTheNextHeartbeat) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  ASSERT_TRUE(server.service.Send(Assign("job-a", 1, 0, "cpu:1")));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.acks_.size() >= 1; }));
  // Heartbeats are written after the ack on the same stream, so the next one shows the rank.
  ASSERT_TRUE(server.service.WaitFor(
      [](auto& f) { return f.heartbeats_.size() > f.heartbeats_at_ack_[0]; }));
  absl::MutexLock lock(&server.service.mu_);
  const forge::v1::AssignmentAck& ack = server.service.acks_[0];
  EXPECT_EQ(ack.job_id(), "job-a");
  EXPECT_EQ(ack.attempt(), 1);
  EXPECT_EQ(ack.rank(), 0);
  EXPECT_TRUE(ack.accepted()) << ack.message();
  const forge::v1::Heartbeat& next =
      server.service.heartbeats_[server.service.heartbeats_at_ack_[0]].beat;
  EXPECT_EQ(next.ranks_size(), 1);
  EXPECT_TRUE(Holds(next.ranks(), "job-a", 1, 0, "cpu:1"));
}

TEST_F(WorkerAgentTest, AssignmentToAMissingDeviceIsRefused) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  ASSERT_TRUE(server.service.Send(Assign("job-a", 1, 0, "cuda:3")));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.acks_.size() >= 1; }));
  ASSERT_TRUE(server.service.WaitFor(
      [](auto& f) { return f.heartbeats_.size() > f.heartbeats_at_ack_[0]; }));
  absl::MutexLock lock(&server.service.mu_);
  const forge::v1::AssignmentAck& ack = server.service.acks_[0];
  EXPECT_FALSE(ack.accepted());
  EXPECT_THAT(ack.message(), HasSubstr("device 'cuda:3' is not on this worker"));
  EXPECT_EQ(server.service.heartbeats_.back().beat.ranks_size(), 0);
}

TEST_F(WorkerAgentTest, StopRanksDropsTheRank) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  ASSERT_TRUE(server.service.Send(Assign("job-a", 1, 0, "cpu:0")));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.acks_.size() >= 1; }));
  ASSERT_TRUE(server.service.Send(Stop("job-a", 1)));
  size_t at_stop;
  {
    absl::MutexLock lock(&server.service.mu_);
    at_stop = server.service.heartbeats_.size();
  }
  // A heartbeat already in flight may still show the rank; a later one must not.
  ASSERT_TRUE(server.service.WaitFor([at_stop](auto& f) {
    return f.heartbeats_.size() > at_stop && f.heartbeats_.back().beat.ranks_size() == 0;
  }));
  EXPECT_TRUE(agent_->HeldRanks().empty());
}

TEST_F(WorkerAgentTest, ReRegistersWithHeldRanksAfterCoordinatorRestart) {
  auto server = std::make_unique<FakeServer>(FakeCoordinator::Options{}, 0);
  const int port = server->port;
  StartAgent(Options(port));
  ASSERT_TRUE(server->service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  ASSERT_TRUE(server->service.Send(Assign("job-a", 2, 1, "cpu:1")));
  ASSERT_TRUE(server->service.WaitFor([](auto& f) { return f.acks_.size() >= 1; }));
  server.reset();  // the coordinator goes away

  FakeServer restarted({}, port);
  ASSERT_EQ(restarted.port, port);
  ASSERT_TRUE(restarted.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  absl::MutexLock lock(&restarted.service.mu_);
  EXPECT_EQ(restarted.service.authorization_.back(), "Bearer secret-token");
  const forge::v1::RegisterWorker& reg = restarted.service.registers_[0];
  EXPECT_EQ(reg.worker_id(), "w1");
  EXPECT_EQ(reg.ranks_size(), 1);
  EXPECT_TRUE(Holds(reg.ranks(), "job-a", 2, 1, "cpu:1"));
}

TEST_F(WorkerAgentTest, ReRegistersWhenTheCoordinatorEndsTheStream) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 1; }));
  server.service.EndStream();
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 2; }));
}

TEST_F(WorkerAgentTest, LeavesASilentCoordinatorAfterTheGrace) {
  FakeCoordinator::Options silent;
  silent.ack_heartbeats = false;
  silent.grace_ms = 300;
  FakeServer server(silent, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.registers_.size() >= 2; }));
}

TEST_F(WorkerAgentTest, RefusedTokenIsRetried) {
  FakeCoordinator::Options refuse;
  refuse.refuse = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  FakeServer server(refuse, 0);
  StartAgent(Options(server.port));  // max_backoff 200 ms
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.connects_ >= 3; }));
  EXPECT_TRUE(StopAgent());
  EXPECT_TRUE(run_status_.ok()) << run_status_;
}

TEST_F(WorkerAgentTest, ShutdownEndsRunWithinASecond) {
  FakeServer server({}, 0);
  StartAgent(Options(server.port));
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.heartbeats_.size() >= 1; }));
  EXPECT_TRUE(StopAgent(absl::Seconds(1)));
  EXPECT_TRUE(run_status_.ok()) << run_status_;
}

TEST_F(WorkerAgentTest, ShutdownInterruptsALongBackoff) {
  FakeCoordinator::Options refuse;
  refuse.refuse = grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not a worker token");
  FakeServer server(refuse, 0);
  WorkerAgentOptions options = Options(server.port);
  options.initial_backoff = absl::Seconds(60);
  options.max_backoff = absl::Seconds(60);
  StartAgent(options);
  ASSERT_TRUE(server.service.WaitFor([](auto& f) { return f.connects_ >= 1; }));
  EXPECT_TRUE(StopAgent(absl::Seconds(1)));
  EXPECT_TRUE(run_status_.ok()) << run_status_;
}

TEST_F(WorkerAgentTest, RunRejectsOptionsWithoutDevices) {
  WorkerAgentOptions options = Options(1);
  options.devices.clear();
  WorkerAgent agent(options);
  EXPECT_EQ(agent.Run().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace forge::worker
