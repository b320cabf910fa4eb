#include "coordinator/alerts.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "httplib.h"

namespace forge::coordinator {
namespace {

constexpr char kUserAgent[] = "forge-coordinator";
constexpr size_t kLoggedBodyBytes = 200;

// One Emit: shared by the webhooks that want it.
struct EmittedAlert {
  AlertEvent event;
  absl::Time time;
  // Webhooks that have not yet delivered or given up on it (AlertOptions::on_settled).
  mutable std::atomic<int> unsettled{0};
};

struct Delivery {
  std::shared_ptr<const EmittedAlert> alert;
  std::string id;
};

enum class Outcome { kDelivered, kFailed, kDropped };

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kDelivered:
      return "delivered";
    case Outcome::kFailed:
      return "failed";
    case Outcome::kDropped:
      return "dropped";
  }
  return "dropped";
}

// `url` without userinfo, query or fragment: what logs and errors may show.
std::string RedactUrl(absl::string_view url) {
  url = url.substr(0, url.find_first_of("?#"));
  size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return std::string(url);
  size_t host_start = scheme_end + 3;
  size_t path_start = std::min(url.find('/', host_start), url.size());
  absl::string_view authority = url.substr(host_start, path_start - host_start);
  size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) authority.remove_prefix(at + 1);
  return absl::StrCat(url.substr(0, host_start), authority, url.substr(path_start));
}

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && absl::ascii_isxdigit(s[i + 1]) &&
        absl::ascii_isxdigit(s[i + 2])) {
      out += absl::HexStringToBytes(s.substr(i + 1, 2));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct WebhookUrl {
  std::string scheme_host_port;    // "https://hooks.example.com:8443", for httplib::Client
  std::string path;                // path and query of the request line; "/" at least
  std::string username, password;  // percent-decoded userinfo (basic auth); may be empty
  std::string redacted;            // for logs
};

absl::StatusOr<WebhookUrl> ParseWebhookUrl(size_t index, const std::string& url) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("alerts: webhook_urls[", index, "] \"", RedactUrl(url), "\" ", why));
  };
  if (url.empty()) return bad("is empty; give an http:// or https:// URL");
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return bad("contains a space or control character; percent-encode it");
    }
  }
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    return bad("has no scheme; write it as http://host[:port]/path or https://host[:port]/path");
  }
  std::string scheme = absl::AsciiStrToLower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") {
    return bad(absl::StrCat("has scheme \"", scheme, "\"; use http:// or https://"));
  }
  absl::string_view rest = absl::string_view(url).substr(scheme_end + 3);
  size_t authority_end = std::min(rest.find_first_of("/?#"), rest.size());
  absl::string_view authority = rest.substr(0, authority_end);
  absl::string_view tail = rest.substr(authority_end);
  tail = tail.substr(0, tail.find('#'));  // fragments are not sent

  WebhookUrl out;
  size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) {
    absl::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    size_t colon = userinfo.find(':');
    out.username = PercentDecode(userinfo.substr(0, colon));
    if (colon != absl::string_view::npos) out.password = PercentDecode(userinfo.substr(colon + 1));
  }
  absl::string_view host = authority, port;
  if (absl::StartsWith(authority, "[")) {
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return bad("has an unterminated [IPv6] host; write http://[::1]:8080/path");
    }
    host = authority.substr(0, close + 1);
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') {
      return bad("has text after the [IPv6] host; write http://[::1]:8080/path");
    }
    if (!after.empty()) port = after.substr(1);
    if (host.size() == 2) return bad("has no host; write http://host[:port]/path");
  } else {
    size_t colon = authority.find(':');
    if (colon != absl::string_view::npos) {
      if (authority.find(':', colon + 1) != absl::string_view::npos) {
        return bad(
            "has more than one ':' in the host; put IPv6 hosts in brackets: "
            "http://[::1]:8080/path");
      }
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    if (host.empty()) return bad("has no host; write http://host[:port]/path");
  }
  if (authority.size() > host.size()) {  // a ':' follows the host
    int n = 0;
    bool digits = !port.empty() && port.size() <= 5 &&
                  std::all_of(port.begin(), port.end(), absl::ascii_isdigit);
    if (digits) n = std::stoi(std::string(port));
    if (!digits || n < 1 || n > 65535) {
      return bad(absl::StrCat("has port \"", port, "\"; give a number in 1-65535 or leave it out"));
    }
  }
  out.scheme_host_port = absl::StrCat(scheme, "://", authority);
  out.path = tail.empty() ? "/" : (tail[0] == '?' ? absl::StrCat("/", tail) : std::string(tail));
  out.redacted = RedactUrl(absl::StrCat(out.scheme_host_port, out.path));
  return out;
}

std::string HmacSha256Hex(absl::string_view key, absl::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return HexEncode(absl::string_view(reinterpret_cast<const char*>(mac), len));
}

std::string BuildBody(const Delivery& d, const std::string& source) {
  const AlertEvent& e = d.alert->event;
  nlohmann::json j = nlohmann::json::object();
  if (e.details.is_object()) {
    j = e.details;
  } else if (!e.details.is_null()) {
    j["details"] = e.details;
  }
  j["id"] = d.id;
  j["event"] = e.type;
  j["severity"] = e.severity;
  j["summary"] = e.summary;
  j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", d.alert->time, absl::UTCTimeZone());
  j["source"] = source;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool RetryableStatus(int status) {
  return status == 408 || status == 425 || status == 429 || (status >= 500 && status <= 599);
}

// A numeric Retry-After (seconds); HTTP-date forms are ignored (the normal backoff applies).
std::optional<absl::Duration> RetryAfter(const httplib::Response& res) {
  std::string v(absl::StripAsciiWhitespace(res.get_header_value("Retry-After")));
  if (v.empty() || !std::all_of(v.begin(), v.end(), absl::ascii_isdigit)) return std::nullopt;
  if (v.size() > 9) return absl::InfiniteDuration();
  return absl::Seconds(std::stoll(v));
}

}  // namespace

// One webhook: its queue, its counters and its sender thread.
//
// Concurrency: the fields under mu_ are shared by Emit, stats(), Shutdown and the sender
// thread; rng_ and the HTTP exchange belong to the sender thread alone (Shutdown reaches the
// client only through current_client_, to stop() a request that outlives the grace period).
class AlertDispatcher::Sender {
 public:
  Sender(const AlertOptions* options, WebhookUrl url, std::shared_ptr<httplib::Client> client)
      : options_(*options), url_(std::move(url)), client_(std::move(client)) {}

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  void Enqueue(std::shared_ptr<const EmittedAlert> alert, std::string id) {
    absl::MutexLock lock(&mu_);
    if (!accepting_) {
      CountLocked(alert->event.type, Outcome::kDropped);
      return;
    }
    if (queue_.size() >= options_.queue_capacity) {
      CountLocked(queue_.front().alert->event.type, Outcome::kDropped);
      queue_.pop_front();
      ++overflow_unlogged_;
    }
    queue_.push_back(Delivery{std::move(alert), std::move(id)});
  }

  void BeginShutdown(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    draining_ = true;
    drain_deadline_ = deadline;
  }

  // Waits for the thread until `deadline`, then makes it stop (interrupting a request in
  // flight) and joins it.
  void FinishShutdown(absl::Time deadline) {
    if (!thread_.joinable()) return;  // never started (Create failed part way)
    for (;;) {
      std::shared_ptr<httplib::Client> in_flight;
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithDeadline(absl::Condition(&exited_), deadline)) break;
        hard_stop_ = true;
        in_flight = current_client_;
      }
      // stop() shuts the socket down only while a request is in flight; one that starts
      // right after is caught on the next round.
      if (in_flight != nullptr) in_flight->stop();
      deadline = absl::Now() + absl::Milliseconds(20);
    }
    thread_.join();
  }

  void AddStats(Stats* s) const {
    absl::MutexLock lock(&mu_);
    s->delivered += delivered_;
    s->failed += failed_;
    s->dropped += dropped_;
    s->retries += retries_;
    s->queued += static_cast<int64_t>(queue_.size()) + (in_flight_ ? 1 : 0);
  }

  void AddOutcomes(std::map<std::pair<std::string, std::string>, int64_t>* out) const {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, n] : outcomes_) (*out)[key] += n;
  }

 private:
  void Run() {
    for (;;) {
      Delivery d;
      int64_t overflowed = 0;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &Sender::HasWorkOrDraining));
        if (queue_.empty() || MustStopLocked()) break;
        d = std::move(queue_.front());
        queue_.pop_front();
        in_flight_ = true;
        overflowed = std::exchange(overflow_unlogged_, 0);
      }
      if (overflowed > 0) {
        FORGE_LOG(WARNING) << "event=alert_dropped url=" << url_.redacted
                           << " reason=queue_full count=" << overflowed
                           << " queue_capacity=" << options_.queue_capacity;
      }
      Outcome outcome = Deliver(d);
      {
        absl::MutexLock lock(&mu_);
        in_flight_ = false;
        CountLocked(d.alert->event.type, outcome);
      }
      // Delivered or given up on by every webhook: the caller may forget it. (Dropped at
      // shutdown it is not settled: a restart sends it again.)
      if (outcome != Outcome::kDropped && d.alert->unsettled.fetch_sub(1) == 1 &&
          options_.on_settled && !d.alert->event.id.empty()) {
        options_.on_settled(d.alert->event.id);
      }
    }
    size_t abandoned = 0;
    {
      absl::MutexLock lock(&mu_);
      abandoned = queue_.size();
      for (const Delivery& d : queue_) CountLocked(d.alert->event.type, Outcome::kDropped);
      queue_.clear();
    }
    if (abandoned > 0) {
      FORGE_LOG(WARNING) << "event=alert_dropped url=" << url_.redacted
                         << " reason=shutdown count=" << abandoned;
    }
    absl::MutexLock lock(&mu_);
    exited_ = true;
  }

  // Sends `d` until it is delivered, fails for good, or Shutdown ends it.
  Outcome Deliver(const Delivery& d) {
    const std::string& type = d.alert->event.type;
    const std::string body = BuildBody(d, options_.source);
    httplib::Headers headers = {
        {"User-Agent", kUserAgent}, {"X-Forge-Event", type}, {"X-Forge-Delivery", d.id}};
    if (!options_.secret.empty()) {
      headers.emplace("X-Forge-Signature-256",
                      absl::StrCat("sha256=", HmacSha256Hex(options_.secret, body)));
    }
    auto log_dropped = [&](int attempt) {
      FORGE_LOG(WARNING) << "event=alert_dropped url=" << url_.redacted << " type=" << type
                         << " id=" << d.id << " attempt=" << attempt << " reason=shutdown";
      return Outcome::kDropped;
    };
    for (int attempt = 1;; ++attempt) {
      {
        absl::MutexLock lock(&mu_);
        if (MustStopLocked()) return log_dropped(attempt);
        if (attempt > 1) ++retries_;
        current_client_ = client_;
      }
      httplib::Headers h = headers;
      h.emplace("X-Forge-Attempt", std::to_string(attempt));
      httplib::Result res = client_->Post(url_.path, h, body, "application/json");
      {
        absl::MutexLock lock(&mu_);
        current_client_ = nullptr;
      }
      if (res && res->status / 100 == 2) {
        FORGE_LOG(INFO) << "event=alert_delivered url=" << url_.redacted << " type=" << type
                        << " id=" << d.id << " attempt=" << attempt << " status=" << res->status;
        return Outcome::kDelivered;
      }
      if (res && !RetryableStatus(res->status)) {
        FORGE_LOG(WARNING) << "event=alert_rejected url=" << url_.redacted << " type=" << type
                           << " id=" << d.id << " attempt=" << attempt << " status=" << res->status
                           << " body=\"" << absl::CHexEscape(res->body.substr(0, kLoggedBodyBytes))
                           << "\" (not retried: the status is permanent; fix the endpoint)";
        return Outcome::kFailed;
      }
      {
        // A request cut off by Shutdown is not the endpoint's failure.
        absl::MutexLock lock(&mu_);
        if (MustStopLocked()) return log_dropped(attempt);
      }
      std::string what = res ? absl::StrCat("status=", res->status)
                             : absl::StrCat("error=\"", httplib::to_string(res.error()), "\"");
      if (attempt >= options_.max_attempts) {
        FORGE_LOG(WARNING) << "event=alert_failed url=" << url_.redacted << " type=" << type
                           << " id=" << d.id << " attempts=" << attempt << " " << what;
        return Outcome::kFailed;
      }
      absl::Duration wait = Backoff(attempt, res ? RetryAfter(*res) : std::nullopt);
      FORGE_LOG(WARNING) << "event=alert_retry url=" << url_.redacted << " type=" << type
                         << " id=" << d.id << " attempt=" << attempt << " " << what
                         << " wait_ms=" << absl::ToInt64Milliseconds(wait);
      bool give_up = false;
      {
        absl::MutexLock lock(&mu_);
        wake_ = absl::Now() + wait;
        mu_.AwaitWithDeadline(absl::Condition(this, &Sender::WaitIsPointless), wake_);
        give_up = WaitIsPointless();
      }
      if (give_up) return log_dropped(attempt + 1);
    }
  }

  // The wait before attempt `failed_attempt` + 1.
  absl::Duration Backoff(int failed_attempt, std::optional<absl::Duration> retry_after) {
    if (retry_after.has_value()) return std::min(*retry_after, options_.max_backoff);
    absl::Duration d = options_.initial_backoff;
    for (int i = 1; i < failed_attempt && d < options_.max_backoff; ++i) d *= 2;
    d = std::min(d, options_.max_backoff);
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    return std::min(d * jitter(rng_), options_.max_backoff);
  }

  bool HasWorkOrDraining() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || draining_;
  }
  // Past the grace period, or told to stop.
  bool MustStopLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return hard_stop_ || (draining_ && absl::Now() >= drain_deadline_);
  }
  // A backoff wait ending at wake_ would outlast the grace period.
  bool WaitIsPointless() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return hard_stop_ || (draining_ && drain_deadline_ < wake_);
  }
  void CountLocked(const std::string& type, Outcome o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    switch (o) {
      case Outcome::kDelivered:
        ++delivered_;
        break;
      case Outcome::kFailed:
        ++failed_;
        break;
      case Outcome::kDropped:
        ++dropped_;
        break;
    }
    ++outcomes_[{type, OutcomeName(o)}];
  }

  // Constant after construction.
  const AlertOptions& options_;
  const WebhookUrl url_;
  const std::shared_ptr<httplib::Client> client_;

  // Sender thread only.
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;  // also joined by FinishShutdown

  mutable absl::Mutex mu_;
  std::deque<Delivery> queue_ ABSL_GUARDED_BY(mu_);
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;  // Shutdown began
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool hard_stop_ ABSL_GUARDED_BY(mu_) = false;  // the grace period is over
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time wake_ ABSL_GUARDED_BY(mu_);  // end of the current backoff wait
  std::shared_ptr<httplib::Client> current_client_ ABSL_GUARDED_BY(mu_);  // while a request runs
  int64_t overflow_unlogged_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t retries_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::pair<std::string, std::string>, int64_t> outcomes_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<AlertDispatcher>> AlertDispatcher::Create(AlertOptions options) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("alerts: ", parts...));
  };
  for (const std::string& e : options.events) {
    if (std::find_if(std::begin(kAlertEventTypes), std::end(kAlertEventTypes),
                     [&](const char* t) { return e == t; }) == std::end(kAlertEventTypes)) {
      return bad("unknown event type \"", absl::CHexEscape(e),
                 "\"; valid types: ", absl::StrJoin(kAlertEventTypes, ", "), " (or none for all)");
    }
  }
  if (options.max_attempts < 1) {
    return bad("max_attempts must be >= 1 (got ", options.max_attempts, ")");
  }
  if (options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff) {
    return bad("backoff must satisfy 0 < initial_backoff <= max_backoff (got ",
               absl::FormatDuration(options.initial_backoff), " and ",
               absl::FormatDuration(options.max_backoff), ")");
  }
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.request_timeout <= absl::ZeroDuration()) {
    return bad("connect_timeout and request_timeout must be > 0 (got ",
               absl::FormatDuration(options.connect_timeout), " and ",
               absl::FormatDuration(options.request_timeout), ")");
  }
  if (options.queue_capacity < 1) return bad("queue_capacity must be >= 1 (got 0)");

  std::vector<WebhookUrl> urls;
  for (size_t i = 0; i < options.webhook_urls.size(); ++i) {
    ASSIGN_OR_RETURN(WebhookUrl url, ParseWebhookUrl(i, options.webhook_urls[i]));
    for (size_t j = 0; j < i; ++j) {
      if (options.webhook_urls[j] == options.webhook_urls[i]) {
        return bad("webhook_urls[", i, "] \"", url.redacted, "\" repeats webhook_urls[", j,
                   "]; list each URL once");
      }
    }
    urls.push_back(std::move(url));
  }
  ASSIGN_OR_RETURN(std::string random, SecureRandomBytes(8));
  if (options.clock == nullptr) options.clock = RealClock();

  std::unique_ptr<AlertDispatcher> d(new AlertDispatcher(std::move(options), HexEncode(random)));
  for (WebhookUrl& url : urls) {
    auto client = std::make_shared<httplib::Client>(url.scheme_host_port);
    if (!client->is_valid()) {
      return bad("webhook \"", url.redacted, "\": cannot set up an HTTP client for ",
                 RedactUrl(url.scheme_host_port), " (for https, check the OpenSSL setup)");
    }
    const AlertOptions& o = d->options_;
    client->set_connection_timeout(absl::ToChronoMicroseconds(o.connect_timeout));
    client->set_read_timeout(absl::ToChronoMicroseconds(o.request_timeout));
    client->set_write_timeout(absl::ToChronoMicroseconds(o.request_timeout));
    client->set_url_encode(false);  // the path is sent as configured (validated above)
    client->set_follow_location(false);
    if (!url.username.empty() || !url.password.empty()) {
      client->set_basic_auth(url.username, url.password);
    }
    d->senders_.push_back(std::make_unique<Sender>(&d->options_, std::move(url), client));
  }
  for (auto& s : d->senders_) s->Start();
  return d;
}

AlertDispatcher::AlertDispatcher(AlertOptions options, std::string id_prefix)
    : options_(std::move(options)),
      id_prefix_(std::move(id_prefix)),
      wanted_(options_.events.begin(), options_.events.end()) {}

AlertDispatcher::~AlertDispatcher() { Shutdown(absl::Seconds(2)); }

bool AlertDispatcher::Wants(const std::string& type) const {
  return wanted_.empty() || wanted_.contains(type);
}

std::string AlertDispatcher::NextDeliveryId() {
  uint64_t n = next_delivery_.fetch_add(1, std::memory_order_relaxed);
  return absl::StrCat(id_prefix_, absl::Hex(n, absl::kZeroPad16));
}

void AlertDispatcher::Emit(AlertEvent event) {
  if (senders_.empty() || !Wants(event.type)) return;
  const absl::Time time = event.time == absl::InfinitePast() ? options_.clock->Now() : event.time;
  auto alert = std::make_shared<EmittedAlert>();
  alert->event = std::move(event);
  alert->time = time;
  alert->unsettled.store(static_cast<int>(senders_.size()));
  const std::string& id = alert->event.id;
  for (size_t i = 0; i < senders_.size(); ++i) {
    senders_[i]->Enqueue(alert, id.empty() ? NextDeliveryId() : absl::StrCat(id, ".", i));
  }
}

void AlertDispatcher::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  absl::Time deadline = absl::Now() + std::max(grace, absl::ZeroDuration());
  for (auto& s : senders_) s->BeginShutdown(deadline);
  for (auto& s : senders_) s->FinishShutdown(deadline);
  if (!senders_.empty()) {
    Stats s = stats();
    FORGE_LOG(INFO) << "event=alerts_stopped webhooks=" << senders_.size()
                    << " delivered=" << s.delivered << " failed=" << s.failed
                    << " dropped=" << s.dropped << " retries=" << s.retries;
  }
}

AlertDispatcher::Stats AlertDispatcher::stats() const {
  Stats s;
  for (const auto& sender : senders_) sender->AddStats(&s);
  return s;
}

std::map<std::pair<std::string, std::string>, int64_t> AlertDispatcher::OutcomeCounts() const {
  std::map<std::pair<std::string, std::string>, int64_t> out;
  for (const char* type : kAlertEventTypes) {
    if (!Wants(type)) continue;
    for (const char* o : {"delivered", "failed", "dropped"}) out[{type, o}] = 0;
  }
  for (const auto& sender : senders_) sender->AddOutcomes(&out);
  return out;
}

}  // namespace forge::coordinator
