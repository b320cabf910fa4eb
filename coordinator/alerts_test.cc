#include "coordinator/alerts.h"

#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace forge::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// HMAC-SHA256 computed here, apart from alerts.cc (checked against RFC 4231 below).
std::string TestHmacHex(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), len));
}

template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// A webhook receiver on 127.0.0.1 that records every POST; `respond` (default: 200) decides the
// answer to the n-th request (0-based).
class Endpoint {
 public:
  struct Seen {
    std::string path, body;
    httplib::Headers headers;
    httplib::Params params;
    absl::Time at;
    std::string Header(const std::string& key) const {
      auto it = headers.find(key);
      return it == headers.end() ? "<absent>" : it->second;
    }
    std::string Summary() const { return nlohmann::json::parse(body).value("summary", ""); }
  };
  using Respond = std::function<void(Endpoint*, int n, httplib::Response&)>;

  explicit Endpoint(Respond respond = nullptr) : respond_(std::move(respond)) {
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      int n = 0;
      {
        absl::MutexLock lock(&mu_);
        n = static_cast<int>(seen_.size());
        seen_.push_back(Seen{req.path, req.body, req.headers, req.params, absl::Now()});
      }
      res.status = 200;
      if (respond_) respond_(this, n, res);
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Endpoint() {
    Release();
    server_.stop();
    thread_.join();
  }

  std::string Url(const std::string& path = "/hook") const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  int port() const { return port_; }
  std::vector<Seen> seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  size_t count() const {
    absl::MutexLock lock(&mu_);
    return seen_.size();
  }
  // Blocks a handler until Release() (or 10 s, so a broken test still ends).
  void Hang() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&released_), absl::Seconds(10));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  Respond respond_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

Endpoint::Respond HangAlways() {
  return [](Endpoint* e, int, httplib::Response&) { e->Hang(); };
}

AlertOptions FastOptions(std::vector<std::string> urls) {
  AlertOptions o;
  o.webhook_urls = std::move(urls);
  o.initial_backoff = absl::Milliseconds(10);
  o.max_backoff = absl::Milliseconds(50);
  o.connect_timeout = absl::Seconds(1);
  o.request_timeout = absl::Seconds(5);
  o.source = "forge-coordinator test";
  return o;
}

AlertEvent Event(const std::string& summary, const std::string& type = "job_failed") {
  AlertEvent e;
  e.type = type;
  e.severity = "critical";
  e.summary = summary;
  return e;
}

std::unique_ptr<AlertDispatcher> MustCreate(AlertOptions o) {
  auto d = AlertDispatcher::Create(std::move(o));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? std::move(*d) : nullptr;
}

TEST(TestHmacTest, MatchesRfc4231Case2) {
  EXPECT_EQ(TestHmacHex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(AlertDispatcherTest, PayloadAndHeadersAreExact) {
  Endpoint ep;
  FakeClock clock(absl::FromUnixMillis(1767323045678));  // 2026-01-02T03:04:05.678Z
  AlertOptions o =
      FastOptions({absl::StrCat("http://alice:p%40ss@127.0.0.1:", ep.port(), "/hook?token=abc")});
  o.secret = "s3cret";
  o.clock = &clock;
  auto d = MustCreate(o);
  AlertEvent e = Event("job j-12ab (acme/support-expert) failed: worker w1 lost, 3 restarts used");
  e.details = {{"job", {{"id", "j-12ab"}, {"tenant", "acme"}, {"restarts", 3}}},
               {"event", "spoofed"}};
  d->Emit(e);
  d->Emit(Event("second"));
  ASSERT_TRUE(WaitFor([&] { return ep.count() == 2; }));

  std::vector<Endpoint::Seen> seen = ep.seen();
  const Endpoint::Seen& r = seen[0];
  EXPECT_EQ(r.path, "/hook");
  EXPECT_EQ(r.params.find("token")->second, "abc");
  std::string id = r.Header("X-Forge-Delivery");
  EXPECT_THAT(id, ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(seen[1].Header("X-Forge-Delivery"), id);
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  EXPECT_EQ(r.Header("User-Agent"), "forge-coordinator");
  EXPECT_EQ(r.Header("X-Forge-Event"), "job_failed");
  EXPECT_EQ(r.Header("X-Forge-Attempt"), "1");
  EXPECT_EQ(r.Header("X-Forge-Signature-256"), "sha256=" + TestHmacHex("s3cret", r.body));
  EXPECT_EQ(r.Header("Authorization"), "Basic " + absl::Base64Escape("alice:p@ss"));

  nlohmann::json want = {
      {"id", id},
      {"event", "job_failed"},
      {"severity", "critical"},
      {"summary", "job j-12ab (acme/support-expert) failed: worker w1 lost, 3 restarts used"},
      {"time", "2026-01-02T03:04:05.678Z"},
      {"source", "forge-coordinator test"},
      {"job", {{"id", "j-12ab"}, {"tenant", "acme"}, {"restarts", 3}}}};
  EXPECT_EQ(nlohmann::json::parse(r.body), want);
  EXPECT_TRUE(WaitFor([&] { return d->stats().delivered == 2; }));
}

TEST(AlertDispatcherTest, InvalidUtf8IsReplacedNotFatal) {
  Endpoint ep;
  auto d = MustCreate(FastOptions({ep.Url()}));
  d->Emit(Event("bad \xff byte"));
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 1; }));
  EXPECT_EQ(ep.seen()[0].Summary(), "bad \xef\xbf\xbd byte");  // U+FFFD
}

TEST(AlertDispatcherTest, ServerErrorsAreRetriedWithTheSameIdAndBody) {
  Endpoint ep([](Endpoint*, int n, httplib::Response& res) { res.status = n < 2 ? 500 : 200; });
  auto d = MustCreate(FastOptions({ep.Url()}));
  d->Emit(Event("flaky"));
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 1; }));

  std::vector<Endpoint::Seen> seen = ep.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].Header("X-Forge-Attempt"), "1");
  EXPECT_EQ(seen[1].Header("X-Forge-Attempt"), "2");
  EXPECT_EQ(seen[2].Header("X-Forge-Attempt"), "3");
  for (const auto& s : seen) {
    EXPECT_EQ(s.Header("X-Forge-Delivery"), seen[0].Header("X-Forge-Delivery"));
    EXPECT_EQ(s.body, seen[0].body);
  }
  AlertDispatcher::Stats st = d->stats();
  EXPECT_EQ(st.retries, 2);
  EXPECT_EQ(st.failed, 0);
  EXPECT_EQ(st.queued, 0);
  auto counts = d->OutcomeCounts();
  EXPECT_EQ((counts[{"job_failed", "delivered"}]), 1);
  EXPECT_EQ((counts[{"job_failed", "failed"}]), 0);
  EXPECT_EQ((counts[{"worker_lost", "delivered"}]), 0);
  EXPECT_EQ(counts.size(), 15u);  // every type x 3 outcomes, present from the start
}

TEST(AlertDispatcherTest, ClientErrorFailsWithoutRetryAndLogsNoSecrets) {
  Endpoint ep([](Endpoint*, int, httplib::Response& res) {
    res.status = 400;
    res.set_content("unknown channel\nsee docs", "text/plain");
  });
  AlertOptions o =
      FastOptions({absl::StrCat("http://bob:pw-hunter2@127.0.0.1:", ep.port(), "/h?token=tok123")});
  o.secret = "s3cret-key";
  auto d = MustCreate(o);
  ::testing::internal::CaptureStderr();
  d->Emit(Event("rejected"));
  bool failed = WaitFor([&] { return d->stats().failed == 1; });
  absl::SleepFor(absl::Milliseconds(100));  // a retry would come after ~10 ms
  d->Shutdown(absl::Seconds(1));
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(failed);
  EXPECT_EQ(ep.count(), 1u);
  EXPECT_EQ(d->stats().retries, 0);
  EXPECT_EQ(d->stats().delivered, 0);
  EXPECT_THAT(log, HasSubstr("event=alert_rejected"));
  EXPECT_THAT(log, HasSubstr("status=400"));
  EXPECT_THAT(log, HasSubstr("unknown channel\\nsee docs"));  // escaped onto one line
  EXPECT_THAT(log, HasSubstr(absl::StrCat("url=http://127.0.0.1:", ep.port(), "/h ")));
  EXPECT_THAT(log, Not(HasSubstr("s3cret-key")));
  EXPECT_THAT(log, Not(HasSubstr("hunter2")));
  EXPECT_THAT(log, Not(HasSubstr("tok123")));
}

TEST(AlertDispatcherTest, UnreachableEndpointFailsAfterMaxAttempts) {
  // A bound socket that never listens: connecting to it is refused.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  AlertOptions o = FastOptions({absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/")});
  o.max_attempts = 4;
  auto d = MustCreate(o);
  absl::Time start = absl::Now();
  d->Emit(Event("nobody home"));
  ASSERT_TRUE(WaitFor([&] { return d->stats().failed == 1; }));
  absl::Duration took = absl::Now() - start;
  close(fd);
  AlertDispatcher::Stats st = d->stats();
  EXPECT_EQ(st.retries, 3);
  EXPECT_EQ(st.delivered, 0);
  EXPECT_EQ(st.dropped, 0);
  EXPECT_EQ(st.queued, 0);
  // Backoffs of 10, 20 and 40 ms, each at least 80 % of that.
  EXPECT_GE(took, absl::Milliseconds(56));
  EXPECT_EQ((d->OutcomeCounts()[{"job_failed", "failed"}]), 1);
}

TEST(AlertDispatcherTest, RetryAfterIsHonoured) {
  Endpoint ep([](Endpoint*, int n, httplib::Response& res) {
    if (n == 0) {
      res.status = 503;
      res.set_header("Retry-After", "1");
    }
  });
  AlertOptions o = FastOptions({ep.Url()});
  o.max_backoff = absl::Seconds(5);
  auto d = MustCreate(o);
  d->Emit(Event("busy"));
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 1; }));
  std::vector<Endpoint::Seen> seen = ep.seen();
  ASSERT_EQ(seen.size(), 2u);
  absl::Duration gap = seen[1].at - seen[0].at;
  EXPECT_GE(gap, absl::Milliseconds(950)) << "initial_backoff is 10 ms; Retry-After said 1 s";
  EXPECT_LT(gap, absl::Seconds(3));
}

TEST(AlertDispatcherTest, RetryAfterIsCappedAtMaxBackoff) {
  Endpoint ep([](Endpoint*, int n, httplib::Response& res) {
    if (n == 0) {
      res.status = 429;
      res.set_header("Retry-After", "3600");
    }
  });
  AlertOptions o = FastOptions({ep.Url()});
  o.max_backoff = absl::Milliseconds(200);
  auto d = MustCreate(o);
  d->Emit(Event("rate limited"));
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 1; }));
  std::vector<Endpoint::Seen> seen = ep.seen();
  ASSERT_EQ(seen.size(), 2u);
  absl::Duration gap = seen[1].at - seen[0].at;
  EXPECT_GE(gap, absl::Milliseconds(190));
  EXPECT_LT(gap, absl::Seconds(3));
}

TEST(AlertDispatcherTest, EventFilterSendsOnlyListedTypes) {
  Endpoint ep;
  AlertOptions o = FastOptions({ep.Url()});
  o.events = {"worker_lost"};
  auto d = MustCreate(o);
  d->Emit(Event("a", "job_failed"));
  d->Emit(Event("b", "worker_lost"));
  d->Emit(Event("c", "schedule_skipped"));
  d->Shutdown(absl::Seconds(5));
  std::vector<Endpoint::Seen> seen = ep.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].Header("X-Forge-Event"), "worker_lost");
  EXPECT_EQ(seen[0].Header("X-Forge-Signature-256"), "<absent>");  // no secret set
  auto counts = d->OutcomeCounts();
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ((counts[{"worker_lost", "delivered"}]), 1);
}

TEST(AlertDispatcherTest, OrderIsPreservedPerEndpointThroughRetries) {
  Endpoint ep(
      [](Endpoint*, int n, httplib::Response& res) { res.status = n % 3 == 0 ? 502 : 200; });
  auto d = MustCreate(FastOptions({ep.Url()}));
  for (int i = 0; i < 20; ++i) d->Emit(Event(absl::StrCat("e", i)));
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 20; }));
  std::vector<std::string> order;
  for (const auto& s : ep.seen()) {
    if (order.empty() || order.back() != s.Summary()) order.push_back(s.Summary());
  }
  std::vector<std::string> want;
  for (int i = 0; i < 20; ++i) want.push_back(absl::StrCat("e", i));
  EXPECT_EQ(order, want);
  EXPECT_GT(d->stats().retries, 0);
}

TEST(AlertDispatcherTest, HangingEndpointBlocksNeitherEmitNorAnotherEndpoint) {
  Endpoint hanging(HangAlways());
  Endpoint healthy;
  AlertOptions o = FastOptions({hanging.Url(), healthy.Url()});
  o.queue_capacity = 2000;
  auto d = MustCreate(o);
  absl::Time start = absl::Now();
  for (int i = 0; i < 1000; ++i) d->Emit(Event(absl::StrCat("e", i)));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));
  ASSERT_TRUE(WaitFor([&] { return healthy.count() == 1000; }, absl::Seconds(15)));
  EXPECT_EQ(hanging.count(), 1u);
  EXPECT_EQ(healthy.seen()[999].Summary(), "e999");

  absl::Time stop = absl::Now();
  d->Shutdown(absl::ZeroDuration());  // interrupts the hanging request
  EXPECT_LT(absl::Now() - stop, absl::Seconds(1));
  AlertDispatcher::Stats st = d->stats();
  EXPECT_EQ(st.delivered, 1000);
  EXPECT_EQ(st.dropped, 1000);
  EXPECT_EQ(st.queued, 0);
}

TEST(AlertDispatcherTest, QueueOverflowDropsTheOldestPending) {
  Endpoint ep([](Endpoint* e, int n, httplib::Response&) {
    if (n == 0) e->Hang();
  });
  AlertOptions o = FastOptions({ep.Url()});
  o.queue_capacity = 5;
  auto d = MustCreate(o);
  d->Emit(Event("e0"));
  ASSERT_TRUE(WaitFor([&] { return ep.count() == 1; }));  // e0 is in flight
  for (int i = 1; i <= 10; ++i) d->Emit(Event(absl::StrCat("e", i)));
  AlertDispatcher::Stats st = d->stats();
  EXPECT_EQ(st.dropped, 5);
  EXPECT_EQ(st.queued, 6);
  ep.Release();
  ASSERT_TRUE(WaitFor([&] { return d->stats().delivered == 6; }));
  std::vector<std::string> got;
  for (const auto& s : ep.seen()) got.push_back(s.Summary());
  EXPECT_THAT(got, ElementsAre("e0", "e6", "e7", "e8", "e9", "e10"));
  EXPECT_EQ((d->OutcomeCounts()[{"job_failed", "dropped"}]), 5);
}

TEST(AlertDispatcherTest, ShutdownIsBoundedByGraceAndDropsWhatIsPending) {
  Endpoint ep(HangAlways());
  auto d = MustCreate(FastOptions({ep.Url()}));
  for (int i = 0; i < 5; ++i) d->Emit(Event(absl::StrCat("e", i)));
  ASSERT_TRUE(WaitFor([&] { return ep.count() == 1; }));
  absl::Time start = absl::Now();
  d->Shutdown(absl::Milliseconds(200));
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(190));
  EXPECT_LT(took, absl::Seconds(1));
  d->Shutdown(absl::Seconds(10));  // idempotent: returns at once
  d->Emit(Event("late"));
  AlertDispatcher::Stats st = d->stats();
  EXPECT_EQ(st.delivered, 0);
  EXPECT_EQ(st.dropped, 6);
  EXPECT_EQ(st.queued, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST(AlertDispatcherTest, ShutdownDeliversWhatFitsInGrace) {
  Endpoint ep([](Endpoint*, int, httplib::Response&) { absl::SleepFor(absl::Milliseconds(10)); });
  auto d = MustCreate(FastOptions({ep.Url()}));
  for (int i = 0; i < 10; ++i) d->Emit(Event(absl::StrCat("e", i)));
  absl::Time start = absl::Now();
  d->Shutdown(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(d->stats().delivered, 10);
  EXPECT_EQ(d->stats().dropped, 0);
}

TEST(AlertDispatcherTest, ShutdownCutsABackoffThatWouldOutlastGrace) {
  Endpoint ep([](Endpoint*, int, httplib::Response& res) { res.status = 500; });
  AlertOptions o = FastOptions({ep.Url()});
  o.initial_backoff = absl::Seconds(30);
  o.max_backoff = absl::Seconds(60);
  auto d = MustCreate(o);
  d->Emit(Event("doomed"));
  ASSERT_TRUE(WaitFor([&] { return ep.count() == 1 && d->stats().queued == 1; }));
  absl::SleepFor(absl::Milliseconds(20));  // into the backoff wait
  absl::Time start = absl::Now();
  d->Shutdown(absl::Seconds(2));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_EQ(d->stats().dropped, 1);
  EXPECT_EQ(d->stats().failed, 0);
  EXPECT_EQ(ep.count(), 1u);
}

TEST(AlertDispatcherTest, NoWebhooksMeansNothingToDo) {
  auto d = MustCreate(AlertOptions{});
  d->Emit(Event("x"));
  EXPECT_EQ(d->stats().queued, 0);
  EXPECT_EQ(d->stats().dropped, 0);
}

TEST(AlertDispatcherCreateTest, RejectsBadUrlsNamingThemAndTheFix) {
  struct Case {
    std::string url, want;
  };
  for (const Case& c : std::vector<Case>{
           {"ftp://hooks.example.com/x", "use http:// or https://"},
           {"hooks.example.com/x", "has no scheme"},
           {"http://:8080/x", "has no host"},
           {"http://hooks.example.com:99999/x", "port \"99999\"; give a number in 1-65535"},
           {"http://hooks.example.com:/x", "port \"\""},
           {"http://hooks.example.com/a b", "percent-encode"},
           {"http://::1/x", "brackets"},
           {"", "is empty"},
       }) {
    AlertOptions o;
    o.webhook_urls = {"https://ok.example.com/hook", c.url};
    auto d = AlertDispatcher::Create(o);
    ASSERT_FALSE(d.ok()) << c.url;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(d.status().message(), HasSubstr(absl::StrCat("webhook_urls[1] \"", c.url)));
    EXPECT_THAT(d.status().message(), HasSubstr(c.want)) << c.url;
  }
}

TEST(AlertDispatcherCreateTest, ErrorsHideUserinfoAndQuery) {
  AlertOptions o;
  o.webhook_urls = {"https://user:tok123@hooks.example.com:0/x?key=sekrit"};
  auto d = AlertDispatcher::Create(o);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("\"https://hooks.example.com:0/x\""));
  EXPECT_THAT(d.status().message(), Not(HasSubstr("tok123")));
  EXPECT_THAT(d.status().message(), Not(HasSubstr("sekrit")));

  o.webhook_urls = {"https://a.example.com/h", "https://a.example.com/h"};
  d = AlertDispatcher::Create(o);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("repeats webhook_urls[0]"));
}

TEST(AlertDispatcherCreateTest, RejectsUnknownEventsListingTheValidOnes) {
  AlertOptions o;
  o.webhook_urls = {"http://127.0.0.1:9/hook"};
  o.events = {"job_failed", "job_exploded"};
  auto d = AlertDispatcher::Create(o);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("\"job_exploded\""));
  EXPECT_THAT(d.status().message(),
              HasSubstr("job_failed, job_restarted, worker_lost, guard_blocked, "
                        "schedule_skipped"));
}

TEST(AlertDispatcherCreateTest, RejectsNonsenseNumbers) {
  AlertOptions o;
  o.max_attempts = 0;
  EXPECT_THAT(AlertDispatcher::Create(o).status().message(), HasSubstr("max_attempts"));
  o = AlertOptions{};
  o.initial_backoff = absl::ZeroDuration();
  EXPECT_THAT(AlertDispatcher::Create(o).status().message(), HasSubstr("initial_backoff"));
  o = AlertOptions{};
  o.queue_capacity = 0;
  EXPECT_THAT(AlertDispatcher::Create(o).status().message(), HasSubstr("queue_capacity"));
}


TEST(AlertsOutboxTest, AnEventWithAnIdSettlesOnceEveryWebhookIsDone) {
  Endpoint ok;
  Endpoint refuses([](Endpoint*, int, httplib::Response& res) { res.status = 400; });
  AlertOptions o = FastOptions({ok.Url(), refuses.Url()});
  absl::Mutex mu;
  std::vector<std::string> settled;
  o.on_settled = [&](const std::string& id) {
    absl::MutexLock lock(&mu);
    settled.push_back(id);
  };
  auto d = *AlertDispatcher::Create(std::move(o));
  AlertEvent e = Event("with an id");
  e.id = "al-42";
  e.time = absl::FromUnixSeconds(1764000000);
  d->Emit(e);
  d->Emit(Event("without an id: nothing to settle"));
  ASSERT_TRUE(WaitFor([&] { return ok.count() == 2 && refuses.count() == 2; }));
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return !settled.empty();
  }));
  d->Shutdown(absl::Seconds(1));
  EXPECT_EQ(settled, std::vector<std::string>{"al-42"});
  // The id and time are the caller's: stable across a coordinator restart.
  const auto seen = ok.seen();
  EXPECT_EQ(seen[0].Header("X-Forge-Delivery"), "al-42.0");
  EXPECT_EQ(refuses.seen()[0].Header("X-Forge-Delivery"), "al-42.1");
  nlohmann::json body = nlohmann::json::parse(seen[0].body);
  EXPECT_EQ(body["id"], "al-42.0");
  EXPECT_EQ(body["time"], "2025-11-24T16:00:00.000Z");
}

TEST(AlertsOutboxTest, AnEventDroppedAtShutdownIsNotSettled) {
  Endpoint down([](Endpoint*, int, httplib::Response& res) { res.status = 503; });
  AlertOptions o = FastOptions({down.Url()});
  std::atomic<int> settled{0};
  o.on_settled = [&](const std::string&) { ++settled; };
  auto d = *AlertDispatcher::Create(std::move(o));
  AlertEvent e = Event("endpoint down");
  e.id = "al-7";
  d->Emit(e);
  ASSERT_TRUE(WaitFor([&] { return down.count() >= 2; }));
  d->Shutdown(absl::Milliseconds(50));
  EXPECT_EQ(settled.load(), 0) << "its outbox row must stay for the next start";
  EXPECT_EQ(d->stats().dropped, 1);
}

}  // namespace
}  // namespace forge::coordinator
