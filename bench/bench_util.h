// Shared by the control-plane benchmarks: a real forge-coordinator child process, percentiles,
// and machine facts for the report.
#ifndef FORGE_BENCH_BENCH_UTIL_H_
#define FORGE_BENCH_BENCH_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "forge/v1/coordinator.grpc.pb.h"

namespace forge::bench {

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// CPU seconds (user + system) used so far by process `pid`.
inline double ProcessCpuSeconds(pid_t pid) {
  std::string stat = Slurp(absl::StrCat("/proc/", pid, "/stat"));
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// A forge-coordinator child on 127.0.0.1 with a fresh state dir; killed on destruction.
class CoordinatorProcess {
 public:
  explicit CoordinatorProcess(const std::string& bin_dir, std::vector<std::string> extra = {})
      : bin_dir_(bin_dir) {
    char tmpl[] = "/tmp/forge-bench-XXXXXX";
    dir_ = mkdtemp(tmpl);
    const std::string port_file = dir_ + "/port";
    std::vector<std::string> argv = {bin_dir + "/forge-coordinator", "--listen=127.0.0.1:0",
                                     "--port-file=" + port_file, "--state-dir=" + dir_ + "/state",
                                     "--storage-root=" + dir_ + "/storage"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      int log = open((dir_ + "/coordinator.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    for (int i = 0; i < 400 && port_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      std::string s(absl::StripAsciiWhitespace(Slurp(port_file)));
      if (!s.empty()) port_ = std::stoi(s);
    }
    if (port_ == 0) {
      std::fprintf(stderr, "coordinator did not start; log in %s\n", dir_.c_str());
      std::exit(1);
    }
  }
  ~CoordinatorProcess() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    std::string cmd = absl::StrCat("rm -rf '", dir_, "'");
    (void)system(cmd.c_str());
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  pid_t pid() const { return pid_; }
  std::string admin_token() const {
    return std::string(absl::StripAsciiWhitespace(Slurp(dir_ + "/state/admin.token")));
  }

  // Creates a token through the admin API (tenant `name`, or a worker token if name is "").
  std::string CreateToken(const std::string& tenant) const {
    auto stub = forge::v1::AdminService::NewStub(
        grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + admin_token());
    if (!tenant.empty()) {
      forge::v1::CreateTenantRequest req;
      req.set_name(tenant);
      forge::v1::CreateTenantResponse resp;
      grpc::Status s = stub->CreateTenant(&ctx, req, &resp);
      if (!s.ok()) std::fprintf(stderr, "create tenant: %s\n", s.error_message().c_str());
      return resp.token();
    }
    forge::v1::CreateTokenRequest req;
    req.set_kind(forge::v1::TOKEN_KIND_WORKER);
    forge::v1::CreateTokenResponse resp;
    grpc::Status s = stub->CreateToken(&ctx, req, &resp);
    if (!s.ok()) std::fprintf(stderr, "create token: %s\n", s.error_message().c_str());
    return resp.token();
  }

  // Prepares a small dataset with `forge data prepare` and registers it for the tenant whose
  // token is given (jobs may only name registered datasets). Exits on failure.
  void RegisterDataset(const std::string& tenant_token, const std::string& name) const {
    const std::string text = dir_ + "/text-" + name, out = dir_ + "/data-" + name;
    std::string cmd = absl::StrCat(
        "mkdir -p '", text, "' && for i in $(seq 20); do echo \"document $i of ", name,
        " with some words in it\" > '", text, "'/doc-$i.txt; done && '", bin_dir_,
        "/forge' data prepare --input '", text, "' --name ", name, " --out '", out,
        "' >/dev/null && FORGE_COORDINATOR=", address(), " FORGE_TOKEN=", tenant_token, " '",
        bin_dir_, "/forge' data register ", name, " '", out, "' >/dev/null");
    if (system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "could not register dataset %s\n", name.c_str());
      std::exit(1);
    }
  }

 private:
  std::string bin_dir_;
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// build/bin, found next to the running benchmark binary.
inline std::string BinDirOf(const char* argv0) {
  std::string self(argv0);
  size_t slash = self.rfind('/');
  return slash == std::string::npos ? "." : self.substr(0, slash);
}

}  // namespace forge::bench

#endif  // FORGE_BENCH_BENCH_UTIL_H_
