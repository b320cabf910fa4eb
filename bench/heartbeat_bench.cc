// Heartbeat fan-in: W simulated workers, each with its own WorkerService.Connect stream, send
// a heartbeat every interval to a real forge-coordinator; every heartbeat is acknowledged.
// Reports the acknowledgement round trip (send -> HeartbeatAck) and the coordinator's CPU.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "bench/bench_util.h"

ABSL_FLAG(int, workers, 10000, "simulated workers (one stream each)");
ABSL_FLAG(int, channels, 32, "client connections the streams are spread over");
ABSL_FLAG(double, interval_s, 1.0, "heartbeat interval per worker");
ABSL_FLAG(double, seconds, 15, "measured duration");

namespace {

using Clock = std::chrono::steady_clock;
using forge::v1::CoordinatorMessage;
using forge::v1::WorkerMessage;

std::atomic<bool> g_measuring{false};
absl::Mutex g_mu;
std::vector<double>* g_rtts_ms = new std::vector<double>();  // guarded by g_mu

class SimWorker final : public grpc::ClientBidiReactor<WorkerMessage, CoordinatorMessage> {
 public:
  SimWorker(forge::v1::WorkerService::Stub* stub, const std::string& token, int id) {
    ctx_.AddMetadata("authorization", "Bearer " + token);
    stub->async()->Connect(&ctx_, this);
    auto* reg = out_.mutable_register_();
    reg->set_worker_id("sim-" + std::to_string(id));
    reg->set_hostname("sim");
    auto* d = reg->add_devices();
    d->set_id("cpu:0");
    d->set_kind(forge::v1::DEVICE_KIND_CPU);
    writing_ = true;
    StartWrite(&out_);
    StartRead(&in_);
    StartCall();
  }
  // Sends the next heartbeat unless a write is still in flight. Called by the ticker thread.
  void Tick() {
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || done_ || !registered_) return;
      writing_ = true;
      out_.Clear();
      out_.mutable_heartbeat()->set_seq(++seq_);
      sent_at_ = Clock::now();
    }
    StartWrite(&out_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (in_.has_registered()) {
      absl::MutexLock lock(&mu_);
      registered_ = true;
    } else if (in_.has_heartbeat_ack() && g_measuring.load()) {
      double ms;
      {
        absl::MutexLock lock(&mu_);
        if (in_.heartbeat_ack().seq() != seq_) goto next;
        ms = std::chrono::duration<double, std::milli>(Clock::now() - sent_at_).count();
      }
      absl::MutexLock lock(&g_mu);
      g_rtts_ms->push_back(ms);
    }
  next:
    StartRead(&in_);
  }
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
    status_ = s;
  }
  bool registered() {
    absl::MutexLock lock(&mu_);
    return registered_;
  }
  void Cancel() { ctx_.TryCancel(); }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  grpc::ClientContext ctx_;
  WorkerMessage out_;
  CoordinatorMessage in_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_;
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  Clock::time_point sent_at_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_workers);
  const double interval = absl::GetFlag(FLAGS_interval_s);
  // Generous grace: the benchmark measures fan-in, not how long a 2-core box takes to open
  // 10,000 streams.
  forge::bench::CoordinatorProcess coordinator(
      forge::bench::BinDirOf(argv[0]),
      {"--heartbeat-interval-ms=" + std::to_string(static_cast<int>(interval * 1000)),
       "--heartbeat-grace-ms=60000"});
  const std::string token = coordinator.CreateToken("");

  std::vector<std::unique_ptr<forge::v1::WorkerService::Stub>> stubs;
  for (int c = 0; c < absl::GetFlag(FLAGS_channels); ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);
    stubs.push_back(forge::v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        coordinator.address(), grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::unique_ptr<SimWorker>> workers;
  const auto t_connect = Clock::now();
  for (int i = 0; i < n; ++i) {
    workers.push_back(std::make_unique<SimWorker>(stubs[i % stubs.size()].get(), token, i));
  }
  int registered = 0;
  for (int tries = 0; tries < 1200; ++tries) {
    registered = 0;
    for (auto& w : workers) registered += w->registered();
    if (registered == n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double connect_s = std::chrono::duration<double>(Clock::now() - t_connect).count();

  // Ticker: spreads each worker's heartbeat evenly over the interval.
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    const auto step = std::chrono::duration<double>(interval / n);
    auto next = Clock::now();
    for (size_t i = 0; !stop.load(); i = (i + 1) % workers.size()) {
      workers[i]->Tick();
      next += std::chrono::duration_cast<Clock::duration>(step);
      std::this_thread::sleep_until(next);
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));  // warm-up
  const double cpu0 = forge::bench::ProcessCpuSeconds(coordinator.pid());
  const auto start = Clock::now();
  g_measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  g_measuring = false;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = forge::bench::ProcessCpuSeconds(coordinator.pid()) - cpu0;
  stop = true;
  ticker.join();

  std::vector<double> rtts;
  {
    absl::MutexLock lock(&g_mu);
    rtts = *g_rtts_ms;
  }
  std::printf("forge-bench-heartbeat: heartbeat fan-in to a real forge-coordinator\n");
  std::printf("machine: %u cores, %s; coordinator and simulated workers share it\n",
              std::thread::hardware_concurrency(), forge::bench::CpuModel().c_str());
  std::printf("| workers | registered | connect s | target hb/s | acked hb/s | p50 ms | p99 ms | coordinator CPU |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::printf("| %d | %d | %.1f | %.0f | %.0f | %.2f | %.2f | %.0f%% of one core |\n", n, registered,
              connect_s, n / interval, rtts.size() / elapsed, forge::bench::Percentile(rtts, 0.5),
              forge::bench::Percentile(rtts, 0.99), 100 * cpu / elapsed);
  std::printf("reference: goal 10,000 workers at 1 Hz with every heartbeat acknowledged; the\n"
              "p99 is the send->ack round trip, which includes the benchmark's own client CPU\n");
  for (auto& w : workers) w->Cancel();
  for (int tries = 0; tries < 100; ++tries) {
    bool all = true;
    for (auto& w : workers) all = all && w->done();
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}
