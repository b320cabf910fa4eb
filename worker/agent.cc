#include "worker/agent.h"

#include <algorithm>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace forge::worker {
namespace {

using forge::v1::CoordinatorMessage;
using forge::v1::WorkerMessage;

constexpr absl::Duration kDefaultHeartbeatInterval = absl::Seconds(1);

uint64_t SeedFrom(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

bool IsAuthError(const absl::Status& s) {
  return absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s);
}

std::string Ms(absl::Duration d) { return absl::StrCat(absl::ToInt64Milliseconds(d), "ms"); }

}  // namespace

// One Connect stream. `stream` is read only by the Run() thread; writes go through
// write_mu. The remaining fields are guarded by the agent's mu_.
struct WorkerAgent::Session {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<WorkerMessage, CoordinatorMessage>> stream;
  absl::Mutex write_mu;

  absl::Time started;
  bool ended = false;
  bool registered = false;
  absl::Duration heartbeat_interval = kDefaultHeartbeatInterval;
  absl::Duration grace = 3 * kDefaultHeartbeatInterval;
  absl::Time last_received;
  absl::Status end_reason;  // set when the agent itself ends the stream
};

WorkerAgent::WorkerAgent(WorkerAgentOptions options)
    : options_(std::move(options)),
      ranks_(options_.devices),
      backoff_(BackoffOptions{options_.initial_backoff, options_.max_backoff},
               SeedFrom(options_.seed)) {
  if (!options_.trainer_binary.empty()) {
    SupervisorOptions so;
    so.trainer_binary = options_.trainer_binary;
    so.coordinator = options_.coordinator;
    so.work_dir = options_.work_dir;
    so.peer_address = options_.peer_address;
    so.on_output = [this](const forge::v1::RankLogs& logs) {
      WorkerMessage m;
      *m.mutable_logs() = logs;
      Enqueue(std::move(m));
    };
    so.on_exit = [this](const forge::v1::RankExited& e) { OnTrainerExit(e); };
    supervisor_ = std::make_unique<TrainerSupervisor>(std::move(so));
  }
}

WorkerAgent::~WorkerAgent() { supervisor_.reset(); }

void WorkerAgent::Enqueue(WorkerMessage message) {
  absl::MutexLock lock(&mu_);
  if (message.has_logs()) {
    outbox_log_bytes_ += message.logs().data().size();
    while (outbox_log_bytes_ > options_.max_buffered_log_bytes) {
      auto it = std::find_if(outbox_.begin(), outbox_.end(),
                             [](const WorkerMessage& m) { return m.has_logs(); });
      if (it == outbox_.end()) break;
      outbox_log_bytes_ -= it->logs().data().size();
      outbox_.erase(it);
    }
  }
  outbox_.push_back(std::move(message));
}

void WorkerAgent::OnTrainerExit(const forge::v1::RankExited& e) {
  ranks_.SetPhase(e.job_id(), e.attempt(), e.rank(), kPhaseExited, e.exit_code(), e.reason());
  WorkerMessage m;
  *m.mutable_exited() = e;
  Enqueue(std::move(m));
}

void WorkerAgent::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return;
  shutdown_ = true;
  if (session_ != nullptr) session_->context.TryCancel();
}

absl::Status WorkerAgent::Run() {
  if (options_.coordinator.empty() || options_.worker_id.empty() || options_.devices.empty() ||
      !options_.token_source) {
    return absl::InvalidArgumentError(
        "worker agent needs a coordinator address, a worker id, a token source and at least "
        "one device");
  }
  const std::string who =
      absl::StrCat("worker=", options_.worker_id, " coordinator=", options_.coordinator);
  while (true) {
    bool registered = false;
    const absl::Status ended = RunSession(&registered);
    absl::MutexLock lock(&mu_);
    if (shutdown_) break;
    if (registered) backoff_.Reset();
    absl::Duration delay;
    if (IsAuthError(ended)) {
      delay = options_.max_backoff;
      FORGE_LOG(ERROR) << who << " the coordinator refused this worker's token ("
                       << ended.ToString() << "); give the worker a valid worker token "
                       << "(forge admin token create --worker), re-read before every attempt; "
                       << "retrying in " << Ms(delay);
    } else if (absl::IsFailedPrecondition(ended)) {  // e.g. the token source failed
      delay = options_.max_backoff;
      FORGE_LOG(ERROR) << who << " cannot connect (" << ended.ToString()
                       << "); fix that first; retrying in " << Ms(delay);
    } else {
      delay = backoff_.Next();
      FORGE_LOG(WARNING) << who << " stream ended (" << ended.ToString() << "); reconnecting in "
                         << Ms(delay);
    }
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), delay);
    if (shutdown_) break;
  }
  FORGE_LOG(INFO) << who << " agent stopped; held ranks=" << ranks_.Snapshot().size();
  return absl::OkStatus();
}

absl::Status WorkerAgent::RunSession(bool* registered) {
  absl::StatusOr<std::string> token = options_.token_source();
  if (!token.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no worker token: ", token.status().message()));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials();
  // A fresh channel per session: gRPC's own reconnect backoff (up to minutes) must not delay
  // ours, and a restarted coordinator gets a new connection at once.
  std::unique_ptr<forge::v1::WorkerService::Stub> stub =
      forge::v1::WorkerService::NewStub(grpc::CreateChannel(options_.coordinator, credentials));

  Session session;
  session.context.AddMetadata("authorization", absl::StrCat("Bearer ", *token));
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::CancelledError("shutting down");
    session.started = absl::Now();
    session_ = &session;  // from here on Shutdown() can cancel the call
  }
  session.stream = stub->Connect(&session.context);

  WorkerMessage hello;
  forge::v1::RegisterWorker* reg = hello.mutable_register_();
  reg->set_worker_id(options_.worker_id);
  reg->set_hostname(options_.hostname);
  for (const forge::v1::Device& d : options_.devices) *reg->add_devices() = d;
  reg->set_version(options_.version);
  for (forge::v1::RankInfo& r : ranks_.Snapshot()) *reg->add_ranks() = std::move(r);
  FORGE_LOG(DEBUG) << "worker=" << options_.worker_id << " registering with "
                   << options_.coordinator << " ranks=" << reg->ranks_size();
  Write(&session, hello);  // a failure shows up as the end of the read loop below

  std::thread heartbeat([this, &session] { HeartbeatLoop(&session); });
  CoordinatorMessage message;
  while (session.stream->Read(&message)) Handle(&session, message);
  {
    absl::MutexLock lock(&mu_);
    session.ended = true;
    *registered = session.registered;
  }
  heartbeat.join();
  const grpc::Status status = session.stream->Finish();
  absl::MutexLock lock(&mu_);
  session_ = nullptr;
  if (!session.end_reason.ok()) return session.end_reason;
  if (status.ok()) return absl::UnavailableError("the coordinator ended the stream");
  return FromGrpcStatus(status);
}

void WorkerAgent::HeartbeatLoop(Session* s) {
  absl::Time next_heartbeat = absl::InfinitePast();
  uint64_t seq = 0;
  absl::MutexLock lock(&mu_);
  auto done = [this, s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_ || s->ended; };
  auto wake = [this, s, &done]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done() || s->registered; };
  auto work = [this, s, &done]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done() || !outbox_.empty();
  };
  while (!done()) {
    const absl::Time now = absl::Now();
    if (!s->registered) {
      const absl::Time deadline = s->started + options_.register_timeout;
      if (now >= deadline) {
        s->end_reason = absl::DeadlineExceededError(absl::StrCat(
            "no Registered within ", Ms(options_.register_timeout), " of RegisterWorker"));
        s->context.TryCancel();
        return;
      }
      mu_.AwaitWithDeadline(absl::Condition(&wake), deadline);
      continue;
    }
    // The first heartbeat goes one interval after Registered.
    if (next_heartbeat == absl::InfinitePast()) next_heartbeat = now + s->heartbeat_interval;
    const absl::Time silent_deadline = s->last_received + s->grace;
    if (now >= silent_deadline) {
      s->end_reason = absl::UnavailableError(absl::StrCat("no message from the coordinator for ",
                                                          Ms(now - s->last_received), " (grace ",
                                                          Ms(s->grace), ")"));
      s->context.TryCancel();
      return;
    }
    // Heartbeats first: a flood of trainer output must not make this worker look dead.
    if (now >= next_heartbeat) {
      next_heartbeat = now + s->heartbeat_interval;
      mu_.Unlock();
      bool ok;
      {
        // Snapshot under write_mu: a heartbeat written after an AssignmentAck shows that rank.
        absl::MutexLock write_lock(&s->write_mu);
        WorkerMessage beat;
        beat.mutable_heartbeat()->set_seq(++seq);
        for (forge::v1::RankInfo& r : ranks_.Snapshot()) {
          *beat.mutable_heartbeat()->add_ranks() = std::move(r);
        }
        ok = s->stream->Write(beat);
      }
      mu_.Lock();
      if (!ok) return;  // the Run() thread sees the stream end
      continue;
    }
    if (!outbox_.empty()) {
      std::deque<WorkerMessage> batch;
      batch.swap(outbox_);
      outbox_log_bytes_ = 0;
      mu_.Unlock();
      size_t sent = 0;
      for (; sent < batch.size(); ++sent) {
        if (!Write(s, batch[sent])) break;
      }
      mu_.Lock();
      if (sent < batch.size()) {  // the stream broke: keep the rest for the next session
        for (size_t i = batch.size(); i-- > sent;) {
          if (batch[i].has_logs()) outbox_log_bytes_ += batch[i].logs().data().size();
          outbox_.push_front(std::move(batch[i]));
        }
        return;
      }
      continue;
    }
    mu_.AwaitWithDeadline(absl::Condition(&work), std::min(next_heartbeat, silent_deadline));
  }
}

void WorkerAgent::Handle(Session* s, const CoordinatorMessage& message) {
  {
    absl::MutexLock lock(&mu_);
    s->last_received = absl::Now();
    if (!s->registered && message.msg_case() != CoordinatorMessage::kRegistered) {
      s->end_reason = absl::InternalError(
          absl::StrCat("protocol error: the coordinator sent message case ",
                       static_cast<int>(message.msg_case()), " before Registered"));
      s->context.TryCancel();
      return;
    }
  }
  switch (message.msg_case()) {
    case CoordinatorMessage::kRegistered: {
      const forge::v1::Registered& r = message.registered();
      absl::MutexLock lock(&mu_);
      if (s->registered) {
        FORGE_LOG(WARNING) << "worker=" << options_.worker_id
                           << " ignoring a second Registered on one stream";
        return;
      }
      s->registered = true;
      if (r.heartbeat_interval_ms() > 0) {
        s->heartbeat_interval = absl::Milliseconds(r.heartbeat_interval_ms());
      }
      s->grace = r.grace_ms() > 0 ? absl::Milliseconds(r.grace_ms()) : 3 * s->heartbeat_interval;
      // Never give up on a coordinator before two heartbeats could have been answered.
      s->grace = std::max(s->grace, 2 * s->heartbeat_interval);
      FORGE_LOG(INFO) << "worker=" << options_.worker_id << " registered with "
                      << options_.coordinator << " heartbeat_interval=" << Ms(s->heartbeat_interval)
                      << " grace=" << Ms(s->grace) << " held_ranks=" << ranks_.Snapshot().size();
      return;
    }
    case CoordinatorMessage::kAssign:
      HandleAssignment(s, message.assign());
      return;
    case CoordinatorMessage::kStop:
      HandleStop(message.stop());
      return;
    case CoordinatorMessage::kHeartbeatAck:
      return;  // its arrival (last_received) is what counts
    default:
      FORGE_LOG(WARNING) << "worker=" << options_.worker_id
                         << " ignoring an unknown coordinator message (case "
                         << static_cast<int>(message.msg_case()) << "); is the coordinator newer?";
      return;
  }
}

void WorkerAgent::HandleAssignment(Session* s, const forge::v1::Assignment& a) {
  std::vector<forge::v1::RankInfo> superseded;
  const absl::Status accepted = ranks_.Accept(a, &superseded);
  const std::string fields =
      absl::StrCat("worker=", options_.worker_id, " job=", a.job_id(), " attempt=", a.attempt(),
                   " rank=", a.rank(), " world_size=", a.world_size(), " device=", a.device());
  for (const forge::v1::RankInfo& old : superseded) {
    FORGE_LOG(INFO) << "worker=" << options_.worker_id << " job=" << old.job_id()
                    << " attempt=" << old.attempt() << " rank=" << old.rank()
                    << " device=" << old.device() << " rank dropped: superseded by attempt "
                    << a.attempt();
  }
  if (supervisor_ != nullptr) {
    for (const forge::v1::RankInfo& old : superseded) supervisor_->Stop(old.job_id(), old.attempt());
  }
  if (accepted.ok()) {
    FORGE_LOG(INFO) << fields << " rank accepted";
  } else {
    FORGE_LOG(WARNING) << fields << " assignment refused: " << accepted.message();
  }
  WorkerMessage reply;
  forge::v1::AssignmentAck* ack = reply.mutable_ack();
  ack->set_job_id(a.job_id());
  ack->set_attempt(a.attempt());
  ack->set_rank(a.rank());
  ack->set_accepted(accepted.ok());
  ack->set_message(std::string(accepted.message()));
  Write(s, reply);
  if (accepted.ok() && supervisor_ != nullptr) {
    // After the ack: the coordinator then counts the rank as held while it starts.
    // Phase first: a trainer that dies at once is reported "exited" after this, not before.
    ranks_.SetPhase(a.job_id(), a.attempt(), a.rank(), kPhaseStarting);
    absl::Status started = supervisor_->Start(a);
    if (!started.ok()) {
      FORGE_LOG(ERROR) << fields << " cannot start the trainer: " << started;
      forge::v1::RankExited e;
      e.set_job_id(a.job_id());
      e.set_attempt(a.attempt());
      e.set_rank(a.rank());
      e.set_exit_code(127);
      e.set_reason(absl::StrCat("the worker could not start forge-trainer: ", started.message()));
      OnTrainerExit(e);
    }
  }
}

void WorkerAgent::HandleStop(const forge::v1::StopRanks& stop) {
  const std::vector<forge::v1::RankInfo> stopped = ranks_.Stop(stop.job_id(), stop.attempt());
  if (supervisor_ != nullptr) supervisor_->Stop(stop.job_id(), stop.attempt());
  for (const forge::v1::RankInfo& r : stopped) {
    FORGE_LOG(INFO) << "worker=" << options_.worker_id << " job=" << r.job_id()
                    << " attempt=" << r.attempt() << " rank=" << r.rank()
                    << " device=" << r.device() << " rank stopped (reason: " << stop.reason()
                    << ")";
  }
  if (stopped.empty()) {
    FORGE_LOG(INFO) << "worker=" << options_.worker_id << " job=" << stop.job_id()
                    << " stop up to attempt=" << stop.attempt()
                    << ": no rank of it held here (reason: " << stop.reason() << ")";
  }
}

bool WorkerAgent::Write(Session* s, const WorkerMessage& message) {
  absl::MutexLock lock(&s->write_mu);
  return s->stream->Write(message);
}

}  // namespace forge::worker
