// Webhook alerts: the coordinator POSTs a JSON event to operator-configured URLs when a job
// fails or restarts, a worker is lost, the regression guard blocks a promotion or a schedule
// skips a slot.
//
// Each webhook URL has its own sender thread and FIFO queue, so a slow or down endpoint never
// delays another and events reach one endpoint in the order they were emitted. A delivery is
// retried with exponential backoff (±20 % jitter) on 408, 425, 429, 5xx and connection or
// timeout errors, honouring a numeric Retry-After (capped at max_backoff); any other non-2xx
// status is a permanent failure. The request body is the same bytes on every attempt.
//
// Payload (Content-Type: application/json, UTF-8; invalid UTF-8 in the event is replaced):
//   {"id": "<delivery id>", "event": type, "severity": ..., "summary": ..., "time": RFC 3339
//    UTC of Emit, "source": options.source, <the keys of details>}
// `details` keys never override the fixed keys. Headers: User-Agent: forge-coordinator,
// X-Forge-Event, X-Forge-Delivery (the id: one per event and webhook, the same across retries),
// X-Forge-Attempt (1-based), and X-Forge-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>
// when a secret is set. userinfo in a URL is sent as HTTP basic auth.
//
// Logs never include the secret, and name URLs without userinfo or query (they may hold
// tokens).
//
// Thread safety: thread-safe. Each webhook's queue and counters sit under that webhook's own
// mutex, which Emit holds only to push; the network is used only by the sender threads.
#ifndef FORGE_COORDINATOR_ALERTS_H_
#define FORGE_COORDINATOR_ALERTS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "nlohmann/json.hpp"

namespace forge::coordinator {

// The event types the coordinator emits (the payload's `event` field).
inline constexpr const char* kAlertEventTypes[] = {"job_failed", "job_restarted", "worker_lost",
                                                   "guard_blocked", "schedule_skipped"};

struct AlertEvent {
  std::string type;      // one of kAlertEventTypes
  std::string severity;  // "critical" | "warning" | "info"
  // One line for people: "job j-12ab (acme/support-expert) failed: worker w1 lost, 3 restarts
  // used".
  std::string summary;
  // Merged into the payload at top level: {"job": {...}}, {"worker": {...}}, {"schedule": ...}.
  // A non-object value is sent as "details".
  nlohmann::json details = nlohmann::json::object();
  // A stable id for the event (an outbox row's); empty = Emit makes one. With an id, the
  // payload's id and X-Forge-Delivery are "<id>.<n>" (n: the webhook's index in webhook_urls),
  // the same when a restarted coordinator sends the event again, so receivers can drop repeats.
  std::string id;
  // When it happened (the payload's "time"); InfinitePast = when Emit was called.
  absl::Time time = absl::InfinitePast();
};

struct AlertOptions {
  // http:// or https:// URLs, each with its own sender. None: Emit does nothing.
  std::vector<std::string> webhook_urls;
  // When set, every request carries X-Forge-Signature-256: sha256=<hex HMAC-SHA256(secret,
  // body)>.
  std::string secret;
  // Event types to send; empty = all of kAlertEventTypes.
  std::vector<std::string> events;
  // Attempts per delivery, the first included (>= 1).
  int max_attempts = 8;
  // Wait before the 2nd attempt; doubles for each later one, ±20 % jitter, at most
  // max_backoff. A numeric Retry-After replaces it (also capped at max_backoff).
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(60);
  // TCP (and TLS) connect timeout; read and write timeouts of each request.
  absl::Duration connect_timeout = absl::Seconds(2);
  absl::Duration request_timeout = absl::Seconds(5);
  // Pending events per webhook (the one being sent not included); when full, the OLDEST
  // pending event is dropped (counted).
  size_t queue_capacity = 1000;
  // Put in every payload: "forge-coordinator 127.0.0.1:7700".
  std::string source;
  // The payload's "time". Null = RealClock(). Must outlive the dispatcher.
  Clock* clock = nullptr;
  // Called once per event that has an id, from a sender thread and without locks held, when
  // every webhook that took it has delivered it or given up on it (failed): the caller's
  // outbox row can go. Never called for an event dropped (queue overflow, Shutdown): its row
  // stays and a restarted coordinator sends it again. May be null.
  std::function<void(const std::string& id)> on_settled;
};

class AlertDispatcher {
 public:
  // INVALID_ARGUMENT naming the bad URL (without userinfo or query) or event type and the fix;
  // starts one sender thread per URL.
  static absl::StatusOr<std::unique_ptr<AlertDispatcher>> Create(AlertOptions options);
  ~AlertDispatcher();  // Shutdown(absl::Seconds(2))
  AlertDispatcher(const AlertDispatcher&) = delete;
  AlertDispatcher& operator=(const AlertDispatcher&) = delete;

  // Queues the event for every webhook that wants its type. Never blocks on the network and
  // never calls back; safe from any thread, including with other mutexes held (it only takes
  // each webhook's queue mutex briefly). After Shutdown the event is dropped (counted).
  void Emit(AlertEvent event);

  // Stops accepting events and lets the senders work until every queue is empty or `grace`
  // has passed; what is still pending then (queued, in a backoff wait or in flight) is dropped
  // and counted. A delivery whose next retry would come after the deadline is dropped at once.
  // Returns by `grace`, plus at most connect_timeout (and for https the TLS handshake, bounded
  // by request_timeout) when a connection is being set up at that moment.
  // Idempotent; later calls return at once.
  void Shutdown(absl::Duration grace);

  struct Stats {
    int64_t delivered = 0;  // got a 2xx
    int64_t failed = 0;     // gave up after max_attempts, or a permanent (non-retryable) status
    int64_t dropped = 0;    // queue overflow, or pending at (or emitted after) Shutdown
    int64_t retries = 0;    // attempts after the first
    int64_t queued = 0;     // pending now, the ones being sent included
  };
  // Summed over webhooks (an event sent to two webhooks counts twice).
  Stats stats() const;

  // Per (event type, outcome) counts for /metrics, summed over webhooks; outcome is
  // "delivered", "failed" or "dropped". Every wanted type has all three keys (zero until
  // something happens), so the series exist from the start.
  std::map<std::pair<std::string, std::string>, int64_t> OutcomeCounts() const;

  // Whether any webhook takes events of `type` (options.events); false without webhooks.
  bool Wants(const std::string& type) const;

 private:
  class Sender;
  AlertDispatcher(AlertOptions options, std::string id_prefix);
  std::string NextDeliveryId();

  // Constant after construction.
  const AlertOptions options_;
  const std::string id_prefix_;              // 16 random hex chars
  absl::flat_hash_set<std::string> wanted_;  // empty = every type
  std::vector<std::unique_ptr<Sender>> senders_;

  std::atomic<uint64_t> next_delivery_{0};
  absl::Mutex shutdown_mu_;  // serializes Shutdown
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_ALERTS_H_
