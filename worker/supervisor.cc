#include "worker/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace forge::worker {
namespace {

constexpr size_t kMaxBatchBytes = 64 << 10;

std::string ErrnoMessage(absl::string_view what) {
  return absl::StrCat(what, ": ", std::strerror(errno));
}

}  // namespace

TrainerSupervisor::TrainerSupervisor(SupervisorOptions options)
    : options_(std::move(options)), killer_([this] { KillerLoop(); }) {}

TrainerSupervisor::~TrainerSupervisor() {
  std::map<Key, std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    for (auto& [key, c] : children_) {
      if (!c.reaped) kill(-c.pid, SIGKILL);
    }
    threads.swap(threads_);
  }
  for (auto& [key, t] : threads) t.join();
  killer_.join();
}

absl::Status TrainerSupervisor::Start(const forge::v1::Assignment& a) {
  const Key key{a.job_id(), a.attempt(), a.rank()};
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&mu_);
    if (children_.contains(key)) return absl::OkStatus();
    if (shutdown_) return absl::CancelledError("the worker is shutting down");
    // Reader threads of reaped trainers are done (or about to be): join them here.
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (children_[it->first].reaped) {
        finished.push_back(std::move(it->second));
        it = threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::thread& t : finished) t.join();
  const std::string dir = absl::StrCat(options_.work_dir, "/ranks/", a.job_id(), "-a",
                                       a.attempt(), "-r", a.rank());
  RETURN_IF_ERROR(MakeDirs(dir, 0700));
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/assignment.pb", a.SerializeAsString(), 0600));

  std::vector<std::string> args = {
      options_.trainer_binary,
      absl::StrCat("--coordinator=", options_.coordinator),
      absl::StrCat("--assignment=", dir, "/assignment.pb"),
      absl::StrCat("--work-dir=", options_.work_dir),
      absl::StrCat("--parent-pid=", getpid()),
      absl::StrCat("--interface-address=", options_.peer_address),
  };
  std::vector<char*> argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(ErrnoMessage("pipe2"));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::ResourceExhaustedError(ErrnoMessage("fork"));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the agent died before prctl took effect
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  setpgid(pid, pid);  // also from the parent, so a Stop right away finds the group
  FORGE_LOG(INFO) << "event=trainer_started job=" << a.job_id() << " attempt=" << a.attempt()
                  << " rank=" << a.rank() << " device=" << a.device() << " pid=" << pid;
  absl::MutexLock lock(&mu_);
  children_[key].pid = pid;
  threads_[key] = std::thread([this, key, pid, fd = fds[0]] { Supervise(key, pid, fd); });
  return absl::OkStatus();
}

void TrainerSupervisor::Supervise(Key key, pid_t pid, int fd) {
  const auto& [job_id, attempt, rank] = key;
  std::string pending;     // a partial line
  std::string last_error;  // the trainer's last "forge-trainer:" line
  char buf[16384];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t end = pending.rfind('\n');
    if (end == std::string::npos && pending.size() < kMaxBatchBytes) continue;
    std::string lines = end == std::string::npos ? pending + "\n" : pending.substr(0, end + 1);
    pending = end == std::string::npos ? "" : pending.substr(end + 1);
    for (size_t at = 0; (at = lines.find("forge-trainer: ", at)) != std::string::npos;) {
      size_t eol = lines.find('\n', at);
      last_error = lines.substr(at + 15, eol - at - 15);
      at = eol;
    }
    if (options_.on_output) {
      forge::v1::RankLogs logs;
      logs.set_job_id(job_id);
      logs.set_attempt(attempt);
      logs.set_rank(rank);
      logs.set_data(std::move(lines));
      options_.on_output(logs);
    }
  }
  close(fd);
  if (!pending.empty() && options_.on_output) {
    forge::v1::RankLogs logs;
    logs.set_job_id(job_id);
    logs.set_attempt(attempt);
    logs.set_rank(rank);
    logs.set_data(pending + "\n");
    options_.on_output(logs);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status)
                               : (WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1);
  // The rank's private directory (its token, data copies, staging) goes with it; its output
  // already went to the coordinator.
  std::error_code ec;
  std::filesystem::remove_all(absl::StrCat(options_.work_dir, "/ranks/", job_id, "-a", attempt,
                                           "-r", rank),
                              ec);
  {
    absl::MutexLock lock(&mu_);
    children_[key].reaped = true;
  }
  FORGE_LOG(INFO) << "event=trainer_exited job=" << job_id << " attempt=" << attempt
                  << " rank=" << rank << " pid=" << pid << " code=" << code;
  if (options_.on_exit) {
    forge::v1::RankExited e;
    e.set_job_id(job_id);
    e.set_attempt(attempt);
    e.set_rank(rank);
    e.set_exit_code(code);
    if (last_error.size() > 1024) last_error.resize(1024);
    if (code != 0) e.set_reason(last_error);
    options_.on_exit(e);
  }
}

void TrainerSupervisor::Stop(const std::string& job_id, int32_t attempt) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto& [key, c] : children_) {
    if (std::get<0>(key) != job_id || std::get<1>(key) > attempt || c.reaped ||
        c.stop_requested) {
      continue;
    }
    c.stop_requested = true;
    c.stop_time = now;
    kill(-c.pid, SIGTERM);
    FORGE_LOG(INFO) << "event=trainer_stopping job=" << job_id << " attempt=" << std::get<1>(key)
                    << " rank=" << std::get<2>(key) << " pid=" << c.pid;
  }
}

void TrainerSupervisor::KillerLoop() {
  absl::MutexLock lock(&mu_);
  while (!shutdown_) {
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), absl::Milliseconds(200));
    const absl::Time now = absl::Now();
    for (auto& [key, c] : children_) {
      // The pid is ours until the reader thread reaps it, so it cannot be reused.
      if (c.stop_requested && !c.reaped && now - c.stop_time >= options_.stop_grace) {
        kill(-c.pid, SIGKILL);
        c.stop_time = absl::InfiniteFuture();
      }
    }
  }
}

}  // namespace forge::worker
