// The WebDriver client against a small site served from the test: a login form that sets a
// cookie and redirects, and a page behind it with inline SVG and a script that changes the
// DOM after load. Also checks that no browser process outlives the Browser.
#include <dirent.h>
#include <httplib.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/webdriver.h"

namespace forge::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kToken[] = "s3cret-token";

constexpr char kLoginPage[] = R"(<!doctype html>
<html><head><title>Sign in</title></head><body>
<form method="post" action="/login">
  <input id="token" name="token" type="password">
  <button id="submit" type="submit">Sign in</button>
</form></body></html>)";

constexpr char kDashboardPage[] = R"(<!doctype html>
<html><head><title>Forge dashboard</title>
<style>body { font: 16px sans-serif; } polyline { fill: none; stroke: #c00; stroke-width: 4; }</style>
</head><body>
<h1>Jobs</h1>
<svg id="loss" width="400" height="200" viewBox="0 0 400 200">
  <rect width="400" height="200" fill="#eef"/>
  <polyline data-points="5" points="0,20 100,80 200,120 300,150 400,160"/>
</svg>
<ul id="jobs"></ul>
<script>
  window.addEventListener('load', () => setTimeout(() => {
    const li = document.createElement('li');
    li.id = 'loaded';
    li.textContent = 'job-1 running';
    document.getElementById('jobs').appendChild(li);
  }, 200));
</script>
</body></html>)";

// The site: /login (form and POST), / (needs the cookie the POST sets).
class Site {
 public:
  Site() {
    server_.Get("/login", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kLoginPage, "text/html");
    });
    server_.Post("/login", [this](const httplib::Request& req, httplib::Response& res) {
      {
        absl::MutexLock lock(&mu_);
        posted_token_ = req.get_param_value("token");
      }
      if (req.get_param_value("token") != kToken) {
        res.status = 401;
        res.set_content("wrong token", "text/plain");
        return;
      }
      res.set_header("Set-Cookie", "forge_session=ok; Path=/; HttpOnly; SameSite=Strict");
      res.set_redirect("/", 303);
    });
    server_.Get("/", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.get_header_value("Cookie").find("forge_session=ok") == std::string::npos) {
        res.set_redirect("/login", 303);
        return;
      }
      ++dashboard_views_;
      res.set_content(kDashboardPage, "text/html");
    });
    // The socket listens once bound; connections queue until the thread accepts them.
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Site() {
    server_.stop();
    thread_.join();
  }
  std::string url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  int port() const { return port_; }

  std::string posted_token() {
    absl::MutexLock lock(&mu_);
    return posted_token_;
  }
  std::atomic<int> dashboard_views_{0};

 private:
  absl::Mutex mu_;
  std::string posted_token_ ABSL_GUARDED_BY(mu_);
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::string MakeWorkDir() {
  std::string tmpl = absl::StrCat(::testing::TempDir(), "/forge-browser-XXXXXX");
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

// Live processes whose command line mentions `needle`.
std::vector<std::string> ProcessesMentioning(const std::string& needle) {
  std::vector<std::string> found;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(absl::StrCat("/proc/", e->d_name, "/cmdline"), std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos) {
      found.push_back(absl::StrCat(e->d_name, ": ", absl::StrReplaceAll(cmdline, {{"\0", " "}})));
    }
  }
  closedir(proc);
  return found;
}

TEST(BrowserTest, LogsInAndReadsTheDashboard) {
  if (std::string why = BrowserUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  Site site;
  const std::string dir = MakeWorkDir();
  const absl::Time start = absl::Now();
  int driver_port = 0;
  {
    absl::StatusOr<std::unique_ptr<Browser>> started = Browser::Start(dir);
    ASSERT_TRUE(started.ok()) << started.status();
    Browser& b = **started;
    std::cerr << "browser started in " << absl::Now() - start << "\n";

    // Without the cookie the dashboard sends us to the login form.
    ASSERT_TRUE(b.Navigate(site.url("/")).ok());
    EXPECT_EQ(*b.CurrentUrl(), site.url("/login"));
    EXPECT_EQ(*b.Title(), "Sign in");
    absl::StatusOr<std::vector<std::string>> token = b.FindAll("#token");
    ASSERT_TRUE(token.ok()) << token.status();
    ASSERT_THAT(*token, SizeIs(1));
    ASSERT_TRUE(b.Type(token->front(), kToken).ok());
    absl::StatusOr<std::vector<std::string>> submit = b.FindAll("button[type=submit]");
    ASSERT_TRUE(submit.ok() && submit->size() == 1) << submit.status();
    EXPECT_EQ(*b.Text(submit->front()), "Sign in");
    ASSERT_TRUE(b.Click(submit->front()).ok());

    // The script adds #loaded 200 ms after load, so this polls at least once.
    absl::StatusOr<std::vector<std::string>> loaded = b.WaitFor("#loaded", absl::Seconds(10));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(site.posted_token(), kToken);
    EXPECT_EQ(site.dashboard_views_.load(), 1);
    EXPECT_EQ(*b.CurrentUrl(), site.url("/"));
    EXPECT_EQ(*b.Title(), "Forge dashboard");
    EXPECT_EQ(*b.Text(loaded->front()), "job-1 running");

    absl::StatusOr<std::vector<std::string>> lines = b.FindAll("svg#loss polyline");
    ASSERT_TRUE(lines.ok()) << lines.status();
    ASSERT_THAT(*lines, SizeIs(1));
    EXPECT_EQ(*b.Attribute(lines->front(), "data-points"), "5");
    EXPECT_EQ(b.Attribute(lines->front(), "data-missing").status().code(),
              absl::StatusCode::kNotFound);
    absl::StatusOr<std::vector<std::string>> none = b.FindAll("table");
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_THAT(*none, SizeIs(0));

    absl::StatusOr<nlohmann::json> viewport =
        b.Execute("return [innerWidth, innerHeight, devicePixelRatio];");
    ASSERT_TRUE(viewport.ok()) << viewport.status();
    EXPECT_EQ(*viewport, nlohmann::json::array({1400, 1000, 1}));
    absl::StatusOr<nlohmann::json> sum =
        b.Execute("return document.querySelectorAll('li').length + arguments[0];", {41});
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(*sum, 42);
    // An element passed in and a structured result coming back.
    absl::StatusOr<nlohmann::json> points = b.Execute(
        "const p = arguments[0]; return {n: p.points.numberOfItems, tag: p.tagName,"
        " cookie: document.cookie};",
        nlohmann::json::array({Browser::ElementArg(lines->front())}));
    ASSERT_TRUE(points.ok()) << points.status();
    EXPECT_EQ((*points)["n"], 5);
    EXPECT_EQ((*points)["tag"], "polyline");
    EXPECT_EQ((*points)["cookie"], "");  // HttpOnly: invisible to scripts
    absl::StatusOr<std::string> source = b.PageSource();
    ASSERT_TRUE(source.ok()) << source.status();
    EXPECT_THAT(*source, HasSubstr("job-1 running"));  // the DOM now, not the bytes served

    // Errors carry chromedriver's code and message.
    absl::Status bad = b.FindAll("li[[").status();
    EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(bad.message(), HasSubstr("invalid selector"));
    absl::Status thrown = b.Execute("throw new Error('boom');").status();
    EXPECT_THAT(thrown.message(), HasSubstr("boom")) << thrown;
    absl::Status late = b.WaitFor("#never", absl::Milliseconds(200)).status();
    EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
    EXPECT_THAT(late.message(), HasSubstr(site.url("/")));

    const std::string png = ArtifactDir() + "/browser_test.png";
    ASSERT_TRUE(b.Screenshot(png).ok());
    std::ifstream in(png, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_THAT(bytes, StartsWith(std::string("\x89PNG\r\n\x1a\n", 8)));
    EXPECT_GT(bytes.size(), 1024u);
    // IHDR: big-endian width and height at bytes 16..23.
    ASSERT_GE(bytes.size(), 24u);
    auto be32 = [&](size_t at) {
      return (uint32_t{uint8_t(bytes[at])} << 24) | (uint32_t{uint8_t(bytes[at + 1])} << 16) |
             (uint32_t{uint8_t(bytes[at + 2])} << 8) | uint32_t{uint8_t(bytes[at + 3])};
    };
    EXPECT_EQ(be32(16), 1400u);  // the default viewport
    EXPECT_EQ(be32(20), 1000u);
    std::cerr << "screenshot: " << png << " (" << bytes.size() << " bytes)\n";

    EXPECT_THAT(ProcessesMentioning(dir), ::testing::Not(::testing::IsEmpty()));
    driver_port = b.port();
    EXPECT_TRUE(httplib::Client("127.0.0.1", driver_port).Get("/status"));
  }
  // The Browser is gone, and with it chromedriver and every Chromium process.
  EXPECT_THAT(ProcessesMentioning(dir), ::testing::IsEmpty());
  EXPECT_FALSE(httplib::Client("127.0.0.1", driver_port).Get("/status"));
  std::cerr << "whole test: " << absl::Now() - start << "\n";
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

TEST(BrowserTest, StartFailsCleanlyWithoutAWorkDir) {
  if (std::string why = BrowserUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  absl::StatusOr<std::unique_ptr<Browser>> b = Browser::Start("/proc/no-such-dir");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
}

// Run by KilledTestLeavesNothingRunning in a child process, which dies with the browser up.
TEST(BrowserTest, DISABLED_StartAndDie) {
  const char* dir = getenv("FORGE_BROWSER_TEST_DIR");
  ASSERT_NE(dir, nullptr);
  absl::StatusOr<std::unique_ptr<Browser>> b = Browser::Start(dir);
  ASSERT_TRUE(b.ok()) << b.status();
  std::ofstream(std::string(dir) + "/started") << "ok";
  raise(SIGKILL);
}

// A test killed without running destructors (a crash, ctest's timeout) takes chromedriver
// and Chromium with it, through the watchdog.
TEST(BrowserTest, KilledTestLeavesNothingRunning) {
  if (std::string why = BrowserUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  const std::string dir = MakeWorkDir();
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';
  Process child(
      {self, "--gtest_also_run_disabled_tests", "--gtest_filter=BrowserTest.DISABLED_StartAndDie"},
      dir + "/child.log", {{"FORGE_BROWSER_TEST_DIR", dir}});
  EXPECT_EQ(child.Wait(absl::Seconds(40)), 128 + SIGKILL);
  ASSERT_TRUE(std::filesystem::exists(dir + "/started"))
      << "the child did not start its browser; log " << child.log_path();
  // The watchdog polls once a second.
  EXPECT_TRUE(WaitFor([&] { return ProcessesMentioning(dir).empty(); }, absl::Seconds(5)))
      << ::testing::PrintToString(ProcessesMentioning(dir));
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace forge::testing
