// A webhook endpoint for integration tests: an HTTP server on 127.0.0.1 that records every
// alert the coordinator POSTs to /hook.
#ifndef FORGE_TESTS_WEBHOOK_RECEIVER_H_
#define FORGE_TESTS_WEBHOOK_RECEIVER_H_

#include <httplib.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace forge::testing {

class WebhookReceiver {
 public:
  WebhookReceiver();
  ~WebhookReceiver();

  // The status the endpoint answers from now on (204 at first; 503 plays a webhook that is
  // down: the coordinator retries). Requests are recorded whatever the answer.
  void set_status(int status);
  // The X-Forge-Delivery header of each request.
  std::vector<std::string> Deliveries();

  // The URL to pass as --alert-webhook.
  std::string url() const;
  // Every event received so far (parsed bodies), in arrival order.
  std::vector<nlohmann::json> Events();
  // The X-Forge-Signature-256 header of each request.
  std::vector<std::string> Signatures();
  // Whether an event of `type` arrived whose `record.field` equals `value` (e.g.
  // Has("job_failed", "job", "id", "j-..")); `record` empty matches any event of the type.
  bool Has(const std::string& type, const std::string& record = "", const std::string& field = "",
           const std::string& value = "");

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<std::string> bodies_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> signatures_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> deliveries_ ABSL_GUARDED_BY(mu_);
  int status_ ABSL_GUARDED_BY(mu_) = 204;
};

}  // namespace forge::testing

#endif  // FORGE_TESTS_WEBHOOK_RECEIVER_H_
