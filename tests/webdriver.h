// A small W3C WebDriver client for end-to-end tests of the web dashboard: Debian's
// chromedriver driving headless Chromium, both on loopback.
//
//   if (std::string why = BrowserUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
//   absl::StatusOr<std::unique_ptr<Browser>> browser = Browser::Start(dir);
//   ASSERT_TRUE(browser.ok()) << browser.status();
//   (*browser)->Navigate(url); (*browser)->WaitFor("#jobs tr", absl::Seconds(10)); ...
//
// Elements are named by WebDriver element ids (opaque strings from FindAll / WaitFor); an id
// goes stale when its page is left. Errors carry chromedriver's error code and message and
// are mapped to canonical codes: no such element -> NOT_FOUND, invalid selector / argument
// -> INVALID_ARGUMENT, timeouts -> DEADLINE_EXCEEDED, chromedriver not answering ->
// UNAVAILABLE.
#ifndef FORGE_TESTS_WEBDRIVER_H_
#define FORGE_TESTS_WEBDRIVER_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/harness.h"

namespace httplib {
class Client;
}  // namespace httplib

namespace forge::testing {

inline constexpr char kChromiumPath[] = "/usr/bin/chromium";
inline constexpr char kChromedriverPath[] = "/usr/bin/chromedriver";

// Why a browser test cannot run on this machine ("" when it can): Chromium or chromedriver
// is missing. Tests GTEST_SKIP() with this message.
std::string BrowserUnavailableReason();

// Where tests save artifacts such as screenshots: $FORGE_TEST_ARTIFACTS if set, else
// <build dir>/test-artifacts (the parent of FORGE_BIN_DIR). Created if missing.
std::string ArtifactDir();

// One chromedriver process and one session of headless Chromium in it.
//
// Thread safety: owned by one thread (the test's); not safe for concurrent use.
class Browser {
 public:
  // Starts chromedriver (which picks a free loopback port; its log is
  // <work_dir>/chromedriver.log) and a session of headless Chromium with a fresh profile
  // (and XDG config and cache dirs) in <work_dir>/chromium whose viewport (what pages and
  // screenshots see) is width x height CSS pixels, at device scale 1. Bounded: fails with
  // DEADLINE_EXCEEDED / UNAVAILABLE after about 30 s, leaving nothing running.
  // REQUIRES: work_dir is writable (created if missing); BrowserUnavailableReason() is "".
  static absl::StatusOr<std::unique_ptr<Browser>> Start(const std::string& work_dir,
                                                        int width = 1400, int height = 1000);

  Browser(const Browser&) = delete;
  Browser& operator=(const Browser&) = delete;
  // Deletes the session, then SIGKILLs chromedriver and every process it started
  // (Chromium and its helpers), so a failing test leaves nothing behind, and removes
  // <work_dir>/chromium. Should this process die without it (a crash, a ctest timeout), a
  // watchdog shell kills chromedriver's process group within a second.
  ~Browser();

  // Loads `url` and waits for the page load to complete (page-load timeout 20 s).
  absl::Status Navigate(const std::string& url);
  absl::StatusOr<std::string> CurrentUrl();
  absl::StatusOr<std::string> Title();
  // The current DOM serialized as HTML (after scripts ran, not the bytes served).
  absl::StatusOr<std::string> PageSource();

  // Ids of the elements matching the CSS selector, in document order; empty if none.
  absl::StatusOr<std::vector<std::string>> FindAll(const std::string& css);
  // Polls FindAll(css) every 50 ms until it matches at least one element; DEADLINE_EXCEEDED
  // (naming the selector and the current URL) if none did within `timeout`.
  absl::StatusOr<std::vector<std::string>> WaitFor(const std::string& css, absl::Duration timeout);

  // The element's rendered text (what a user sees, e.g. without hidden children).
  absl::StatusOr<std::string> Text(const std::string& element);
  // The element's attribute `name`; NOT_FOUND if it has none.
  absl::StatusOr<std::string> Attribute(const std::string& element, const std::string& name);
  // Focuses the element and sends `text` as key strokes (appended to what it holds).
  absl::Status Type(const std::string& element, const std::string& text);
  // Scrolls the element into view and clicks its center, as a user would.
  absl::Status Click(const std::string& element);

  // Runs `script` as the body of a function (use `return`; arguments in `arguments[i]`)
  // synchronously in the page and returns its result as JSON (script timeout 10 s).
  absl::StatusOr<nlohmann::json> Execute(const std::string& script,
                                         nlohmann::json args = nlohmann::json::array());
  // A reference to `element` that Execute passes to the script as the DOM element.
  static nlohmann::json ElementArg(const std::string& element);

  // Saves the current viewport as a PNG file at `png_path` (its directory must exist).
  absl::Status Screenshot(const std::string& png_path);

  // chromedriver's loopback port and log (stdout, stderr, one line per command).
  int port() const { return port_; }
  const std::string& log_path() const { return log_path_; }

 private:
  Browser(std::string chromium_dir, std::unique_ptr<Process> driver,
          std::unique_ptr<Process> watchdog, int port);

  // Sends one command to chromedriver and returns the response's "value"; `timeout` bounds
  // the wait for the reply.
  absl::StatusOr<nlohmann::json> Call(const std::string& method, const std::string& path,
                                      const nlohmann::json& body, absl::Duration timeout);
  // Call() on /session/<id><path> with the default command timeout.
  absl::StatusOr<nlohmann::json> SessionCall(const std::string& method, const std::string& path,
                                             const nlohmann::json& body = nullptr);
  absl::StatusOr<std::string> SessionString(const std::string& path);
  // Resizes the window so that the page's viewport is width x height.
  absl::Status SetViewport(int width, int height);
  // SIGKILLs chromedriver and every Chromium process, then reaps chromedriver.
  void KillProcesses();

  // Constant after construction.
  const std::string chromium_dir_;
  const int port_;
  const std::string log_path_;
  std::unique_ptr<Process> driver_;
  std::unique_ptr<Process> watchdog_;
  std::unique_ptr<httplib::Client> http_;

  // Set by Start() once the session exists.
  std::string session_id_;
};

}  // namespace forge::testing

#endif  // FORGE_TESTS_WEBDRIVER_H_
