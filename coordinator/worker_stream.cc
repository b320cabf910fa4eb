// WorkerService.Connect: one bidirectional stream per worker agent.
//
// Writes and the stream's end are serialised by a small state machine in StreamWriter: at most
// one StartWrite in flight, Finish only when no write is in flight, and nothing after Finish.
// No lock is held across StartWrite or Finish. The reactor deletes itself in OnDone; the
// StreamWriter (shared with the WorkerManager) outlives it and refuses sends once finished.
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "coordinator/service.h"

namespace forge::coordinator {
namespace {

using forge::v1::CoordinatorMessage;
using forge::v1::WorkerMessage;
using Reactor = grpc::ServerBidiReactor<WorkerMessage, CoordinatorMessage>;

class StreamWriter final : public WorkerConnection {
 public:
  explicit StreamWriter(Reactor* reactor) : reactor_(reactor) {}

  bool Send(const CoordinatorMessage& msg) override {
    Reactor* r;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_ || reactor_ == nullptr) return false;
      if (queue_.size() >= kMaxQueued) {
        // A worker that does not read its stream is as good as gone.
        FORGE_LOG(WARNING) << "event=worker_stream_overflow queued=" << queue_.size();
        finishing_ = true;
        finish_status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                      "worker is not reading its stream");
        return false;
      }
      queue_.push_back(msg);
      if (writing_) return true;
      writing_ = true;
      current_ = std::move(queue_.front());
      queue_.pop_front();
      r = reactor_;
    }
    r->StartWrite(&current_);
    return true;
  }

  void Close(absl::string_view why) override {
    RequestFinish(grpc::Status(grpc::StatusCode::ABORTED, std::string(why)));
  }

  // Called from OnWriteDone.
  void WriteDone(bool ok) {
    Reactor* write_on = nullptr;
    Reactor* finish_on = nullptr;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        finishing_ = true;
        if (finish_status_.ok()) finish_status_ = grpc::Status::CANCELLED;
      }
      if (!finishing_ && !queue_.empty()) {
        writing_ = true;
        current_ = std::move(queue_.front());
        queue_.pop_front();
        write_on = reactor_;
      } else if (finishing_ && !finished_) {
        finished_ = true;
        finish_on = reactor_;
        status = finish_status_;
      }
    }
    if (write_on) write_on->StartWrite(&current_);
    if (finish_on) finish_on->Finish(status);
  }

  void RequestFinish(grpc::Status status) {
    Reactor* finish_on = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (!finishing_) {
        finishing_ = true;
        finish_status_ = std::move(status);
      }
      if (!writing_) {
        finished_ = true;
        finish_on = reactor_;
        status = finish_status_;
      }
    }
    if (finish_on) finish_on->Finish(status);
  }

  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  static constexpr size_t kMaxQueued = 10000;
  absl::Mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_);
  std::deque<CoordinatorMessage> queue_ ABSL_GUARDED_BY(mu_);
  CoordinatorMessage current_;  // owned by the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

class WorkerStream final : public Reactor {
 public:
  WorkerStream(AuthManager* auth, WorkerManager* workers, JobManager* jobs,
               StorageGateway* storage, std::function<void()> wake,
               grpc::CallbackServerContext* ctx)
      : workers_(workers), jobs_(jobs), storage_(storage), wake_(std::move(wake)),
        writer_(std::make_shared<StreamWriter>(this)) {
    absl::StatusOr<Principal> p = AuthenticateCall(*auth, ctx);
    if (p.ok() && !p->is_worker()) {
      p = absl::PermissionDeniedError("WorkerService.Connect needs a worker token "
                                      "(forge admin token create --worker)");
    }
    if (!p.ok()) {
      writer_->RequestFinish(ToGrpcStatus(p.status()));
      return;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      writer_->RequestFinish(grpc::Status::OK);  // the worker closed its side or went away
      return;
    }
    absl::Status s = Handle(in_);
    if (!s.ok()) {
      FORGE_LOG(WARNING) << "event=worker_stream_error worker=" << worker_id_ << " error=" << s;
      writer_->RequestFinish(ToGrpcStatus(s));
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { writer_->WriteDone(ok); }

  void OnCancel() override { writer_->RequestFinish(grpc::Status::CANCELLED); }

  void OnDone() override {
    writer_->Detach();
    if (generation_ != 0) workers_->Disconnected(worker_id_, generation_);
    delete this;
  }

 private:
  absl::Status Handle(const WorkerMessage& msg) {
    switch (msg.msg_case()) {
      case WorkerMessage::kRegister: {
        if (generation_ != 0) {
          return absl::FailedPreconditionError("register sent twice on one stream");
        }
        auto registered = workers_->Register(msg.register_(), writer_);
        if (!registered.ok()) return registered.status();
        worker_id_ = msg.register_().worker_id();
        generation_ = registered->second;
        CoordinatorMessage reply;
        *reply.mutable_registered() = registered->first;
        writer_->Send(reply);
        std::vector<forge::v1::RankInfo> held(msg.register_().ranks().begin(),
                                              msg.register_().ranks().end());
        jobs_->ReconcileWorker(worker_id_, held);
        // Trainers that ended while the worker was disconnected.
        for (const forge::v1::RankInfo& r : held) {
          if (r.phase() != "exited") continue;
          forge::v1::RankExited e;
          e.set_job_id(r.job_id());
          e.set_attempt(r.attempt());
          e.set_rank(r.rank());
          e.set_exit_code(r.exit_code());
          e.set_reason(r.exit_reason());
          jobs_->OnRankExited(worker_id_, e);
        }
        if (wake_) wake_();
        return absl::OkStatus();
      }
      case WorkerMessage::kHeartbeat: {
        if (generation_ == 0) return absl::FailedPreconditionError("heartbeat before register");
        workers_->Heartbeat(worker_id_, generation_, msg.heartbeat());
        CoordinatorMessage ack;
        ack.mutable_heartbeat_ack()->set_seq(msg.heartbeat().seq());
        writer_->Send(ack);
        return absl::OkStatus();
      }
      case WorkerMessage::kAck:
        if (generation_ == 0) return absl::FailedPreconditionError("ack before register");
        jobs_->OnAssignmentAck(worker_id_, msg.ack());
        return absl::OkStatus();
      case WorkerMessage::kExited:
        if (generation_ == 0) return absl::FailedPreconditionError("exited before register");
        FORGE_LOG(INFO) << "event=rank_exited worker=" << worker_id_
                        << " job=" << msg.exited().job_id() << " attempt=" << msg.exited().attempt()
                        << " rank=" << msg.exited().rank() << " code=" << msg.exited().exit_code();
        jobs_->OnRankExited(worker_id_, msg.exited());
        return absl::OkStatus();
      case WorkerMessage::kLogs: {
        if (generation_ == 0) return absl::FailedPreconditionError("logs before register");
        const forge::v1::RankLogs& logs = msg.logs();
        const std::string tenant = jobs_->TenantOf(logs.job_id());
        if (tenant.empty() || storage_ == nullptr) return absl::OkStatus();  // unknown job
        if (!jobs_->WorkerServedJob(logs.job_id(), worker_id_)) {
          FORGE_LOG(WARNING) << "event=logs_refused worker=" << worker_id_
                             << " job=" << logs.job_id() << " reason=never_placed_here";
          return absl::OkStatus();
        }
        std::string lines;
        const std::string prefix = absl::StrCat("a", logs.attempt(), " r", logs.rank(), " | ");
        for (absl::string_view line : absl::StrSplit(logs.data(), '\n', absl::SkipEmpty())) {
          absl::StrAppend(&lines, prefix, line, "\n");
        }
        if (absl::Status s = storage_->AppendLog(tenant, logs.job_id(), lines); !s.ok()) {
          FORGE_LOG(WARNING) << "event=log_append_failed job=" << logs.job_id() << " error=" << s;
        }
        return absl::OkStatus();
      }
      default:
        return absl::InvalidArgumentError("empty or unknown worker message");
    }
  }

  WorkerManager* const workers_;
  JobManager* const jobs_;
  StorageGateway* const storage_;
  const std::function<void()> wake_;
  std::shared_ptr<StreamWriter> writer_;
  WorkerMessage in_;  // owned by the read in flight
  std::string worker_id_;
  uint64_t generation_ = 0;  // 0 until registered
};

}  // namespace

grpc::ServerBidiReactor<WorkerMessage, CoordinatorMessage>* WorkerServiceImpl::Connect(
    grpc::CallbackServerContext* ctx) {
  return new WorkerStream(auth_, workers_, jobs_, storage_, wake_, ctx);
}

}  // namespace forge::coordinator
