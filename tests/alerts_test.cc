// Webhook alerts survive a coordinator crash: an alert the webhook has not accepted yet stays
// in the store's outbox, and the restarted coordinator sends it again with the same delivery
// id (receivers can drop repeats); once accepted it is gone, and a worker that was already
// dead before a restart is not reported again.
#include <signal.h>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/webhook_receiver.h"

namespace forge::testing {
namespace {

std::vector<std::string> LostDeliveries(WebhookReceiver& hooks) {
  std::vector<std::string> out;
  const auto events = hooks.Events();
  const auto ids = hooks.Deliveries();
  for (size_t i = 0; i < events.size() && i < ids.size(); ++i) {
    if (events[i].is_object() && events[i].value("event", "") == "worker_lost") {
      out.push_back(ids[i]);
    }
  }
  return out;
}

TEST(AlertsTest, AnAlertNotYetAcceptedAtACrashIsSentAfterTheRestart) {
  WebhookReceiver hooks;  // declared first: outlives the coordinator that posts to it
  Cluster cluster;
  hooks.set_status(503);  // the receiver is down: the coordinator keeps retrying
  // Recovered workers get 1 s to reconnect, as live ones get to heartbeat (the harness's
  // grace), so the check below that w-gone is not reported lost again is past it.
  const std::vector<std::string> flags = {
      "--alert-webhook=" + hooks.url(), "--alert-events=worker_lost", "--reconnect-grace-ms=1000"};
  cluster.StartCoordinator(flags);
  const int w = cluster.StartWorker(cluster.CreateWorkerToken(), "cpu:1", "w-gone",
                                    {"--trainer=" + cluster.IdleTrainer()});
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = cluster.Cli({"workers", "-o", "json"}, cluster.admin_token());
        return absl::StrContains(r.out, "WORKER_STATE_ALIVE");
      },
      absl::Seconds(20)));
  cluster.worker(w)->Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return !LostDeliveries(hooks).empty(); }, absl::Seconds(15)));
  const std::string id = LostDeliveries(hooks)[0];
  EXPECT_THAT(id, ::testing::MatchesRegex("al-[0-9a-f]{24}\\.0"));

  // The coordinator dies before the webhook accepted it; the receiver comes back.
  cluster.KillCoordinator(9);
  const size_t before = LostDeliveries(hooks).size();
  hooks.set_status(204);
  cluster.StartCoordinator(flags);
  ASSERT_TRUE(WaitFor([&] { return LostDeliveries(hooks).size() > before; }, absl::Seconds(15)))
      << "the outbox was not sent again";
  EXPECT_EQ(LostDeliveries(hooks).back(), id) << "same event, same delivery id";

  // Accepted now: the row is gone, so the next restart sends nothing; and w-gone, dead before
  // the restart, is not reported lost again when its recovery grace runs out.
  absl::SleepFor(absl::Seconds(2));
  const size_t settled = LostDeliveries(hooks).size();
  cluster.KillCoordinator(9);
  cluster.StartCoordinator(flags);
  absl::SleepFor(absl::Seconds(4));  // past the 1 s reconnect grace, and a resend
  EXPECT_EQ(LostDeliveries(hooks).size(), settled)
      << ::testing::PrintToString(LostDeliveries(hooks));
}

}  // namespace
}  // namespace forge::testing
