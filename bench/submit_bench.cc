// Durable submissions: N concurrent clients call SubmitJob against a real forge-coordinator
// (SQLite WAL, synchronous=FULL: every acknowledgement is durable). Reports throughput and
// acknowledgement latency.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_util.h"

ABSL_FLAG(int, clients, 8, "concurrent clients, each with its own connection");
ABSL_FLAG(double, seconds, 10, "measured duration");
ABSL_FLAG(double, warmup_seconds, 1, "unmeasured warm-up");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int clients = absl::GetFlag(FLAGS_clients);
  forge::bench::CoordinatorProcess coordinator(forge::bench::BinDirOf(argv[0]));
  const std::string token = coordinator.CreateToken("bench");
  coordinator.RegisterDataset(token, "general-english");

  forge::v1::SubmitJobRequest req;
  req.mutable_spec()->set_name("bench");
  req.mutable_spec()->mutable_model()->set_preset("tiny");
  auto* m = req.mutable_spec()->mutable_data()->add_mixture();
  m->set_dataset("general-english");
  m->set_weight(1);
  // No workers: jobs stay QUEUED, so the scheduler also sees a growing queue.

  using Clock = std::chrono::steady_clock;
  std::atomic<bool> measuring{false}, stop{false};
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::atomic<long> errors{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);  // a distinct connection per client
      auto stub = forge::v1::JobService::NewStub(grpc::CreateCustomChannel(
          coordinator.address(), grpc::InsecureChannelCredentials(), args));
      std::vector<double> mine;
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + token);
        forge::v1::SubmitJobResponse resp;
        const auto t0 = Clock::now();
        grpc::Status s = stub->SubmitJob(&ctx, req, &resp);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!s.ok()) {
          errors.fetch_add(1);
          continue;
        }
        if (measuring.load()) mine.push_back(ms);
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_warmup_seconds)));
  const double cpu0 = forge::bench::ProcessCpuSeconds(coordinator.pid());
  const auto start = Clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  measuring = false;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = forge::bench::ProcessCpuSeconds(coordinator.pid()) - cpu0;
  stop = true;
  for (auto& t : threads) t.join();

  const double rate = latencies_ms.size() / elapsed;
  std::printf("forge-bench-submit: durable SubmitJob (SQLite WAL, synchronous=FULL, group commit)\n");
  std::printf("machine: %u cores, %s; coordinator and clients share it\n",
              std::thread::hardware_concurrency(), forge::bench::CpuModel().c_str());
  std::printf("| clients | acknowledged | seconds | submissions/s | p50 ms | p99 ms | max ms | errors | coordinator CPU |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %d | %zu | %.1f | %.0f | %.2f | %.2f | %.2f | %ld | %.0f%% of one core |\n",
              clients, latencies_ms.size(), elapsed, rate,
              forge::bench::Percentile(latencies_ms, 0.50),
              forge::bench::Percentile(latencies_ms, 0.99),
              forge::bench::Percentile(latencies_ms, 1.0), errors.load(), 100 * cpu / elapsed);
  std::printf("reference: Slurm documents ~500 jobs/s sustained; goal >= 2,000/s with p99 <= 20 ms\n");
  std::printf("verdict: %s\n", rate >= 2000 && forge::bench::Percentile(latencies_ms, 0.99) <= 20
                                   ? "goal met" : "goal NOT met");
  return 0;
}
