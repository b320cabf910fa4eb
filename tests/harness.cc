#include "tests/harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace forge::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out_path,
            const std::string& err_path, const std::map<std::string, std::string>& env) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int err =
        err_path == out_path ? out : open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string BinDir() {
  // The environment's first: scripts/gpu-check runs these tests from a bundle, elsewhere than
  // the build that compiled them.
  const char* dir = getenv("FORGE_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : FORGE_BIN_DIR;
}

bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return pred();
}

Process::Process(std::vector<std::string> argv, std::string log_path,
                 std::map<std::string, std::string> env)
    : log_path_(std::move(log_path)) {
  pid_ = Spawn(argv, log_path_, log_path_, env);
}

Process::~Process() {
  if (Running()) {
    Kill(SIGKILL);
    Wait(absl::Seconds(10));
  }
}

bool Process::Running() {
  if (reaped_ || pid_ <= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void Process::Kill(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

int Process::Wait(absl::Duration timeout) {
  if (!WaitFor([this] { return !Running(); }, timeout)) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

Cluster::Cluster() {
  std::string tmpl = absl::StrCat(::testing::TempDir(), "/forge-it-XXXXXX");
  char* d = mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  dir_ = tmpl;
}

Cluster::~Cluster() {
  workers_.clear();
  coordinator_.reset();
  if (::testing::Test::HasFailure()) {
    std::cerr << "test artifacts kept in " << dir_ << "\n";
  } else {
    std::string cmd = absl::StrCat("rm -rf '", dir_, "'");
    (void)system(cmd.c_str());
  }
}

void Cluster::StartCoordinator(std::vector<std::string> extra_flags) {
  const std::string port_file = dir_ + "/coordinator.port";
  unlink(port_file.c_str());
  std::vector<std::string> argv = {BinDir() + "/forge-coordinator",
                                   // A restart keeps the port, so workers find it again.
                                   absl::StrCat("--listen=127.0.0.1:", port_),
                                   "--port-file=" + port_file, "--state-dir=" + dir_ + "/state",
                                   "--storage-root=" + dir_ + "/storage",
                                   "--heartbeat-interval-ms=200", "--heartbeat-grace-ms=1000"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  coordinator_ = std::make_unique<Process>(
      argv, absl::StrCat(dir_, "/coordinator.", ++coordinator_starts_, ".log"));
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string s(absl::StripAsciiWhitespace(Slurp(port_file)));
        return absl::SimpleAtoi(s, &port_) && port_ > 0;
      },
      absl::Seconds(20)))
      << "coordinator did not write its port; log: " << Slurp(coordinator_->log_path());
  // A private subchannel pool: a restarted coordinator on the same port must not inherit the
  // dead one's connection state from a shared pool.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
  ASSERT_TRUE(
      channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
}

void Cluster::KillCoordinator(int sig) {
  ASSERT_TRUE(coordinator_ != nullptr);
  coordinator_->Kill(sig);
  EXPECT_NE(coordinator_->Wait(absl::Seconds(10)), -1);
}

std::string Cluster::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string Cluster::admin_token() const {
  return std::string(absl::StripAsciiWhitespace(Slurp(dir_ + "/state/admin.token")));
}

std::string Cluster::IdleTrainer() {
  const std::string path = WriteFile("idle-trainer.sh", "#!/bin/sh\nexec sleep 100000\n");
  chmod(path.c_str(), 0755);
  return path;
}

int Cluster::StartWorker(const std::string& token, const std::string& devices,
                         const std::string& worker_id, std::vector<std::string> extra_flags) {
  const int i = static_cast<int>(workers_.size());
  const std::string wdir = absl::StrCat(dir_, "/worker-", worker_id);
  const std::string token_file = absl::StrCat(dir_, "/worker-", worker_id, ".token");
  WriteFile(absl::StrCat("worker-", worker_id, ".token"), token + "\n");
  std::vector<std::string> argv{BinDir() + "/forge-worker",   "--coordinator=" + address(),
                                "--token-file=" + token_file, "--devices=" + devices,
                                "--work-dir=" + wdir,         "--worker-id=" + worker_id};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  workers_.push_back(
      std::make_unique<Process>(argv, absl::StrCat(dir_, "/worker-", worker_id, ".", i, ".log")));
  return i;
}

CliResult Cluster::Cli(const std::vector<std::string>& args, const std::string& token) {
  static int n = 0;
  const std::string out = absl::StrCat(dir_, "/cli.", ++n, ".out");
  const std::string err = absl::StrCat(dir_, "/cli.", n, ".err");
  std::vector<std::string> argv = {BinDir() + "/forge"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::map<std::string, std::string> env = {{"FORGE_COORDINATOR", address()}};
  env["FORGE_TOKEN"] = token;
  pid_t pid = Spawn(argv, out, err, env);
  int status = 0;
  waitpid(pid, &status, 0);
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

std::string Cluster::WriteFile(const std::string& name, const std::string& content) {
  const std::string path = dir_ + "/" + name;
  std::ofstream f(path);
  f << content;
  return path;
}

std::shared_ptr<grpc::Channel> Cluster::channel() { return channel_; }

void Cluster::Authorize(grpc::ClientContext* ctx, const std::string& token) {
  ctx->AddMetadata("authorization", "Bearer " + token);
}

std::string Cluster::CreateTenant(const std::string& name) {
  CliResult r = Cli({"admin", "tenant", "create", name}, admin_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return std::string(absl::StripAsciiWhitespace(r.out));
}

std::string Cluster::CreateWorkerToken() {
  CliResult r = Cli({"admin", "token", "create", "--worker"}, admin_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return std::string(absl::StripAsciiWhitespace(r.out));
}

}  // namespace forge::testing

namespace forge::testing {

std::string Cluster::RegisterDataset(const std::string& tenant_token, const std::string& name,
                                     int docs, int seed) {
  static const char* const kWords[] = {
      "the",      "model",   "support",  "ticket", "customer", "reply",  "order", "refund",
      "shipping", "account", "password", "reset",  "thanks",   "please", "help",  "issue",
      "update",   "team",    "data",     "train",  "of",       "and",    "to",    "a",
      "in",       "is",      "was",      "for",    "on",       "with"};
  const std::string out = absl::StrCat(dir_, "/prepared-", name, "-", docs, "-", seed);
  if (std::filesystem::exists(out + "/manifest.json")) {  // prepared before (another tenant)
    CliResult reg = Cli({"data", "register", name, out}, tenant_token);
    EXPECT_EQ(reg.exit_code, 0) << reg.err;
    return out;
  }
  const std::string in = absl::StrCat(dir_, "/text-", name, "-", docs, "-", seed);
  std::filesystem::create_directories(in);
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(seed + 1);
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int d = 0; d < docs; ++d) {
    std::string text = absl::StrCat(name, " document ", d, ":");
    const int words = 60 + static_cast<int>(next() % 120);
    for (int w = 0; w < words; ++w) {
      absl::StrAppend(&text, " ", kWords[next() % (sizeof(kWords) / sizeof(kWords[0]))]);
      if (next() % 11 == 0) absl::StrAppend(&text, ".");
    }
    std::ofstream(absl::StrCat(in, "/doc-", d, ".txt")) << text << "\n";
  }
  CliResult prep = Cli({"data", "prepare", "--input", in, "--name", name, "--out", out}, "");
  EXPECT_EQ(prep.exit_code, 0) << prep.err;
  CliResult reg = Cli({"data", "register", name, out}, tenant_token);
  EXPECT_EQ(reg.exit_code, 0) << reg.err;
  return out;
}

std::vector<pid_t> TrainerPids(const std::string& job_id) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  while (dirent* e = d ? readdir(d) : nullptr) {
    const pid_t pid = static_cast<pid_t>(atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream f(absl::StrCat("/proc/", pid, "/cmdline"));
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (absl::StrContains(cmd, "forge-trainer") && absl::StrContains(cmd, job_id)) {
      out.push_back(pid);
    }
  }
  if (d) closedir(d);
  return out;
}

}  // namespace forge::testing
