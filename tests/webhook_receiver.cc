#include "tests/webhook_receiver.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace forge::testing {

WebhookReceiver::WebhookReceiver() {
  server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
    absl::MutexLock lock(&mu_);
    bodies_.push_back(req.body);
    signatures_.push_back(req.get_header_value("X-Forge-Signature-256"));
    deliveries_.push_back(req.get_header_value("X-Forge-Delivery"));
    res.status = status_;
  });
  port_ = server_.bind_to_any_port("127.0.0.1");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  for (int i = 0; i < 5000 && !server_.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

WebhookReceiver::~WebhookReceiver() {
  server_.stop();
  thread_.join();
}

std::string WebhookReceiver::url() const {
  return absl::StrCat("http://127.0.0.1:", port_, "/hook");
}

std::vector<nlohmann::json> WebhookReceiver::Events() {
  absl::MutexLock lock(&mu_);
  std::vector<nlohmann::json> out;
  for (const auto& b : bodies_) out.push_back(nlohmann::json::parse(b, nullptr, false));
  return out;
}

void WebhookReceiver::set_status(int status) {
  absl::MutexLock lock(&mu_);
  status_ = status;
}

std::vector<std::string> WebhookReceiver::Deliveries() {
  absl::MutexLock lock(&mu_);
  return deliveries_;
}

std::vector<std::string> WebhookReceiver::Signatures() {
  absl::MutexLock lock(&mu_);
  return signatures_;
}

bool WebhookReceiver::Has(const std::string& type, const std::string& record,
                          const std::string& field, const std::string& value) {
  for (const auto& e : Events()) {
    if (!e.is_object() || e.value("event", "") != type) continue;
    if (record.empty()) return true;
    const auto it = e.find(record);
    if (it != e.end() && it->is_object() && it->value(field, "") == value) return true;
  }
  return false;
}

}  // namespace forge::testing
