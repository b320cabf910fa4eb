// Nothing acknowledged is lost: kill -9 the coordinator while 8 clients submit, restart it,
// and every acknowledged job is there (and a retried request id is not duplicated).
#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace forge::testing {
namespace {

forge::v1::SubmitJobRequest Request(const std::string& request_id) {
  forge::v1::SubmitJobRequest req;
  req.set_request_id(request_id);
  req.mutable_spec()->set_name("durable");
  req.mutable_spec()->mutable_model()->set_preset("tiny");
  auto* m = req.mutable_spec()->mutable_data()->add_mixture();
  m->set_dataset("d");
  m->set_weight(1);
  return req;
}

TEST(DurabilityTest, KillDashNineLosesNoAcknowledgedSubmission) {
  Cluster cluster;
  cluster.StartCoordinator();
  const std::string token = cluster.CreateTenant("acme");
  cluster.RegisterDataset(token, "d", 20);

  constexpr int kClients = 8;
  constexpr int kAcksBeforeKill = 400;
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> acked;  // (request id, job id)
  std::atomic<int> acks{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = forge::v1::JobService::NewStub(cluster.channel());
      for (int i = 0; !stop.load() && i < 5000; ++i) {
        grpc::ClientContext ctx;
        Cluster::Authorize(&ctx, token);
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        const std::string rid = absl::StrCat("c", c, "-", i);
        forge::v1::SubmitJobResponse resp;
        grpc::Status s = stub->SubmitJob(&ctx, Request(rid), &resp);
        if (!s.ok()) return;  // the coordinator died: stop this client
        {
          std::lock_guard<std::mutex> lock(mu);
          acked.emplace_back(rid, resp.job().id());
        }
        acks.fetch_add(1);
      }
    });
  }
  ASSERT_TRUE(WaitFor([&] { return acks.load() >= kAcksBeforeKill; }, absl::Seconds(60)));
  cluster.KillCoordinator(9);  // mid-flight: clients are still submitting
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_GE(acked.size(), static_cast<size_t>(kAcksBeforeKill));

  cluster.StartCoordinator();
  auto stub = forge::v1::JobService::NewStub(cluster.channel());
  grpc::ClientContext ctx;
  Cluster::Authorize(&ctx, cluster.admin_token());
  forge::v1::ListJobsRequest req;
  req.set_limit(10000);
  forge::v1::ListJobsResponse list;
  ASSERT_TRUE(stub->ListJobs(&ctx, req, &list).ok());
  std::set<std::string> present;
  for (const auto& j : list.jobs()) present.insert(j.id());
  size_t missing = 0;
  for (const auto& [rid, id] : acked) missing += present.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged submissions";
  EXPECT_GE(present.size(), acked.size());  // unacknowledged ones may or may not be there

  // A client retrying an acknowledged request after the crash gets the same job back.
  grpc::ClientContext rctx;
  Cluster::Authorize(&rctx, token);
  forge::v1::SubmitJobResponse again;
  ASSERT_TRUE(stub->SubmitJob(&rctx, Request(acked.front().first), &again).ok());
  EXPECT_TRUE(again.deduplicated());
  EXPECT_EQ(again.job().id(), acked.front().second);
}

}  // namespace
}  // namespace forge::testing
