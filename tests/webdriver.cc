#include "tests/webdriver.h"

#include <dirent.h>
#include <httplib.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace forge::testing {
namespace {

namespace fs = std::filesystem;

// The W3C key under which an element reference travels.
constexpr char kElementKey[] = "element-6066-11e4-a52e-4f735466cecf";
constexpr absl::Duration kStartTimeout = absl::Seconds(30);
// Longer than the session's page-load (20 s) and script (10 s) timeouts, so chromedriver
// reports those itself, with its message, before the HTTP call gives up.
constexpr absl::Duration kCommandTimeout = absl::Seconds(30);
constexpr absl::Duration kDeleteTimeout = absl::Seconds(5);

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The port chromedriver announces on stdout when started with --port=0 (it binds a free
// one itself, so there is no window in which another process can take it); 0 until then.
int AnnouncedPort(const std::string& log) {
  constexpr absl::string_view kLine = "started successfully on port ";
  size_t at = log.find(kLine.data(), 0, kLine.size());
  if (at == std::string::npos) return 0;
  size_t begin = at + kLine.size();
  size_t end = log.find_first_not_of("0123456789", begin);
  if (end == std::string::npos) return 0;  // the line is still being written
  int port = 0;
  return absl::SimpleAtoi(absl::string_view(log).substr(begin, end - begin), &port) ? port : 0;
}

// `root` (unless 0) and its live descendants, and every other live process whose command
// line mentions `dir`; never this process.
std::set<pid_t> OurProcesses(pid_t root, const std::string& dir) {
  std::multimap<pid_t, pid_t> children;  // by parent
  std::set<pid_t> found;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* e = readdir(proc)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid) || pid == getpid()) continue;
    std::string stat = Slurp(absl::StrCat("/proc/", pid, "/stat"));
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    if (!(rest >> state >> ppid) || state == "Z") continue;
    children.emplace(ppid, pid);
    if (Slurp(absl::StrCat("/proc/", pid, "/cmdline")).find(dir) != std::string::npos) {
      found.insert(pid);
    }
  }
  closedir(proc);
  if (root == 0) return found;
  std::vector<pid_t> todo = {root};
  found.insert(root);
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    auto [begin, end] = children.equal_range(p);
    for (auto it = begin; it != end; ++it) {
      if (found.insert(it->second).second) todo.push_back(it->second);
    }
  }
  return found;
}

absl::StatusCode CodeFor(const std::string& error) {
  static const auto* const kCodes = new std::map<std::string, absl::StatusCode>{
      {"no such element", absl::StatusCode::kNotFound},
      {"no such frame", absl::StatusCode::kNotFound},
      {"no such window", absl::StatusCode::kNotFound},
      {"no such alert", absl::StatusCode::kNotFound},
      {"no such cookie", absl::StatusCode::kNotFound},
      {"no such shadow root", absl::StatusCode::kNotFound},
      {"stale element reference", absl::StatusCode::kFailedPrecondition},
      {"detached shadow root", absl::StatusCode::kFailedPrecondition},
      {"element not interactable", absl::StatusCode::kFailedPrecondition},
      {"element click intercepted", absl::StatusCode::kFailedPrecondition},
      {"invalid element state", absl::StatusCode::kFailedPrecondition},
      {"unexpected alert open", absl::StatusCode::kFailedPrecondition},
      {"invalid session id", absl::StatusCode::kFailedPrecondition},
      {"invalid argument", absl::StatusCode::kInvalidArgument},
      {"invalid selector", absl::StatusCode::kInvalidArgument},
      {"invalid cookie domain", absl::StatusCode::kInvalidArgument},
      {"unknown command", absl::StatusCode::kUnimplemented},
      {"unknown method", absl::StatusCode::kUnimplemented},
      {"unsupported operation", absl::StatusCode::kUnimplemented},
      {"timeout", absl::StatusCode::kDeadlineExceeded},
      {"script timeout", absl::StatusCode::kDeadlineExceeded},
      {"session not created", absl::StatusCode::kUnavailable},
  };
  auto it = kCodes->find(error);
  return it == kCodes->end() ? absl::StatusCode::kUnknown : it->second;
}

// chromedriver appends "(Session info: chrome=...)" to most messages; it says nothing new.
std::string TrimMessage(std::string message) {
  size_t info = message.find("(Session info:");
  if (info != std::string::npos) message.resize(info);
  return std::string(absl::StripAsciiWhitespace(message));
}

absl::StatusOr<std::string> AsString(const nlohmann::json& value, absl::string_view what) {
  if (!value.is_string()) {
    return absl::InternalError(
        absl::StrCat("webdriver ", what, ": expected a string, got ", value.dump()));
  }
  return value.get<std::string>();
}

}  // namespace

std::string BrowserUnavailableReason() {
  for (const char* path : {kChromiumPath, kChromedriverPath}) {
    if (access(path, X_OK) != 0) {
      return absl::StrCat("browser tests need ", path,
                          " (Debian packages chromium and chromium-driver; scripts/setup "
                          "installs them)");
    }
  }
  return "";
}

std::string ArtifactDir() {
  const char* env = getenv("FORGE_TEST_ARTIFACTS");
  fs::path dir = env != nullptr && *env != '\0'
                     ? fs::path(env)
                     : fs::path(BinDir()).parent_path() / "test-artifacts";
  std::error_code ec;
  fs::create_directories(dir, ec);  // a failure shows when the artifact is written
  return dir.string();
}

absl::StatusOr<std::unique_ptr<Browser>> Browser::Start(const std::string& work_dir, int width,
                                                        int height) {
  if (std::string why = BrowserUnavailableReason(); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  const absl::Time deadline = absl::Now() + kStartTimeout;
  const std::string chromium_dir = work_dir + "/chromium";
  std::error_code ec;
  fs::remove_all(chromium_dir, ec);
  if (!fs::create_directories(chromium_dir + "/profile", ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the Chromium profile in ", chromium_dir, ": ", ec.message()));
  }

  // Chromium keeps its crash database and some caches under the XDG directories, not the
  // profile: point those into the work dir too, so runs share nothing.
  auto driver = std::make_unique<Process>(
      std::vector<std::string>{kChromedriverPath, "--port=0", "--log-level=INFO"},
      work_dir + "/chromedriver.log",
      std::map<std::string, std::string>{{"XDG_CONFIG_HOME", chromium_dir + "/config"},
                                         {"XDG_CACHE_HOME", chromium_dir + "/cache"}});
  // ~Browser does not run when this process crashes or is SIGKILLed (a ctest timeout):
  // then this shell kills chromedriver's process group, which Chromium's processes share.
  auto watchdog = std::make_unique<Process>(
      std::vector<std::string>{
          "/bin/sh", "-c",
          absl::StrCat("while kill -0 ", getpid(), " 2>/dev/null; do sleep 1; done; kill -KILL -",
                       driver->pid())},
      "/dev/null");
  int port = 0;
  while ((port = AnnouncedPort(Slurp(driver->log_path()))) == 0) {
    if (!driver->Running()) {
      return absl::UnavailableError(absl::StrCat("chromedriver exited at start; log ",
                                                 driver->log_path(), ":\n",
                                                 Slurp(driver->log_path())));
    }
    if (absl::Now() > deadline - absl::Seconds(20)) {
      return absl::DeadlineExceededError(
          absl::StrCat("chromedriver did not announce its port within 10 s; log ",
                       driver->log_path(), ":\n", Slurp(driver->log_path())));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  // From here on the destructor of `browser` cleans up whatever fails.
  std::unique_ptr<Browser> browser(
      new Browser(chromium_dir, std::move(driver), std::move(watchdog), port));

  const nlohmann::json chrome_options = {
      {"binary", kChromiumPath},
      {"args",
       {"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        // The network is closed in CI: without these Chromium keeps trying to reach Google
        // (updates, sync, QUIC probes) and is slow to load even loopback pages.
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--user-data-dir=" + chromium_dir + "/profile",
        absl::StrCat("--window-size=", width, ",", height)}},
  };
  const nlohmann::json request = {
      {"capabilities",
       {{"alwaysMatch",
         {{"browserName", "chrome"},
          {"pageLoadStrategy", "normal"},
          {"timeouts", {{"pageLoad", 20000}, {"script", 10000}, {"implicit", 0}}},
          {"goog:chromeOptions", chrome_options}}}}},
  };
  ASSIGN_OR_RETURN(nlohmann::json value,
                   browser->Call("POST", "/session", request, deadline - absl::Now()));
  if (!value.is_object() || !value.contains("sessionId") || !value["sessionId"].is_string()) {
    return absl::InternalError(
        absl::StrCat("webdriver POST /session: no sessionId in ", value.dump()));
  }
  browser->session_id_ = value["sessionId"].get<std::string>();
  RETURN_IF_ERROR(browser->SetViewport(width, height));
  return browser;
}

Browser::Browser(std::string chromium_dir, std::unique_ptr<Process> driver,
                 std::unique_ptr<Process> watchdog, int port)
    : chromium_dir_(std::move(chromium_dir)),
      port_(port),
      log_path_(driver->log_path()),
      driver_(std::move(driver)),
      watchdog_(std::move(watchdog)),
      http_(std::make_unique<httplib::Client>("127.0.0.1", port)) {
  http_->set_connection_timeout(std::chrono::seconds(5));
  http_->set_keep_alive(true);
  // Headers and body go out in separate writes; with Nagle's algorithm every command
  // would wait out chromedriver's delayed ACK (40 ms).
  http_->set_tcp_nodelay(true);
}

Browser::~Browser() {
  // Closing the session lets chromedriver end Chromium cleanly; the kill below covers the
  // cases where it cannot (a hung browser, a dead driver).
  if (!session_id_.empty()) {
    (void)Call("DELETE", "/session/" + session_id_, nullptr, kDeleteTimeout);
  }
  http_.reset();
  watchdog_.reset();
  KillProcesses();
  std::error_code ec;
  fs::remove_all(chromium_dir_, ec);
}

void Browser::KillProcesses() {
  // Chromium's processes descend from chromedriver, except its crash handlers, which
  // re-parent themselves to init but name chromium_dir_ in their arguments. A killed
  // parent's children are re-parented too, so first freeze every target (a stopped process
  // cannot fork), re-reading the process table until nothing new appears, then kill them.
  const pid_t driver = driver_->Running() ? driver_->pid() : 0;
  std::set<pid_t> frozen;
  for (int round = 0; round < 20; ++round) {
    std::set<pid_t> targets = OurProcesses(driver, chromium_dir_);
    bool grew = false;
    for (pid_t pid : targets) {
      if (frozen.insert(pid).second) {
        ::kill(pid, SIGSTOP);
        grew = true;
      }
    }
    if (!grew) break;
  }
  if (driver != 0) ::kill(-driver, SIGKILL);  // Process made chromedriver a group leader
  for (pid_t pid : frozen) ::kill(pid, SIGKILL);
  driver_.reset();  // reaps chromedriver
}

absl::StatusOr<nlohmann::json> Browser::Call(const std::string& method, const std::string& path,
                                             const nlohmann::json& body, absl::Duration timeout) {
  const auto micros = std::chrono::microseconds(
      absl::ToInt64Microseconds(std::max(timeout, absl::Milliseconds(1))));
  http_->set_read_timeout(micros);
  http_->set_write_timeout(micros);
  httplib::Result res =
      method == "GET" ? http_->Get(path)
      : method == "DELETE"
          ? http_->Delete(path)
          : http_->Post(path, body.is_null() ? "{}" : body.dump(), "application/json");
  const std::string what = absl::StrCat(method, " ", path);
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("webdriver ", what, ": chromedriver on 127.0.0.1:", port_,
                     " gave no answer within ", absl::FormatDuration(timeout), " (",
                     httplib::to_string(res.error()), "); log ", log_path_));
  }
  nlohmann::json reply = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object() || !reply.contains("value")) {
    return absl::InternalError(
        absl::StrCat("webdriver ", what, ": HTTP ", res->status,
                     " with a body that is not a WebDriver reply: ", res->body.substr(0, 300)));
  }
  nlohmann::json value = std::move(reply["value"]);
  if (res->status != 200) {
    std::string error = "unknown error";
    std::string message = res->body.substr(0, 300);
    if (value.is_object() && value.contains("error") && value["error"].is_string()) {
      error = value["error"].get<std::string>();
      message = value.contains("message") && value["message"].is_string()
                    ? TrimMessage(value["message"].get<std::string>())
                    : "";
    }
    return absl::Status(CodeFor(error),
                        absl::StrCat("webdriver ", what, ": ", error, ": ", message));
  }
  return value;
}

absl::StatusOr<nlohmann::json> Browser::SessionCall(const std::string& method,
                                                    const std::string& path,
                                                    const nlohmann::json& body) {
  return Call(method, absl::StrCat("/session/", session_id_, path), body, kCommandTimeout);
}

absl::StatusOr<std::string> Browser::SessionString(const std::string& path) {
  ASSIGN_OR_RETURN(nlohmann::json value, SessionCall("GET", path));
  return AsString(value, path);
}

absl::Status Browser::SetViewport(int width, int height) {
  // --window-size sizes the whole window, and even headless Chromium keeps room for its
  // toolbar in it; grow the window by that much so the page gets width x height.
  ASSIGN_OR_RETURN(nlohmann::json frame, Execute("return [window.outerWidth - window.innerWidth,"
                                                 " window.outerHeight - window.innerHeight];"));
  if (!frame.is_array() || frame.size() != 2 || !frame[0].is_number_integer() ||
      !frame[1].is_number_integer()) {
    return absl::InternalError(
        absl::StrCat("webdriver: cannot measure the window frame: ", frame.dump()));
  }
  if (frame[0] == 0 && frame[1] == 0) return absl::OkStatus();
  return SessionCall(
             "POST", "/window/rect",
             {{"width", width + frame[0].get<int>()}, {"height", height + frame[1].get<int>()}})
      .status();
}

absl::Status Browser::Navigate(const std::string& url) {
  return SessionCall("POST", "/url", {{"url", url}}).status();
}

absl::StatusOr<std::string> Browser::CurrentUrl() { return SessionString("/url"); }

absl::StatusOr<std::string> Browser::Title() { return SessionString("/title"); }

absl::StatusOr<std::string> Browser::PageSource() { return SessionString("/source"); }

absl::StatusOr<std::vector<std::string>> Browser::FindAll(const std::string& css) {
  ASSIGN_OR_RETURN(nlohmann::json value,
                   SessionCall("POST", "/elements", {{"using", "css selector"}, {"value", css}}));
  if (!value.is_array()) {
    return absl::InternalError(
        absl::StrCat("webdriver find ", css, ": not a list: ", value.dump()));
  }
  std::vector<std::string> ids;
  for (const nlohmann::json& ref : value) {
    if (!ref.is_object() || !ref.contains(kElementKey) || !ref[kElementKey].is_string()) {
      return absl::InternalError(
          absl::StrCat("webdriver find ", css, ": not an element reference: ", ref.dump()));
    }
    ids.push_back(ref[kElementKey].get<std::string>());
  }
  return ids;
}

absl::StatusOr<std::vector<std::string>> Browser::WaitFor(const std::string& css,
                                                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<std::string> ids, FindAll(css));
    if (!ids.empty()) return ids;
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::StatusOr<std::string> url = CurrentUrl();
  return absl::DeadlineExceededError(absl::StrCat("no element matched `", css, "` within ",
                                                  absl::FormatDuration(timeout), "; page ",
                                                  url.ok() ? *url : url.status().ToString()));
}

absl::StatusOr<std::string> Browser::Text(const std::string& element) {
  return SessionString(absl::StrCat("/element/", element, "/text"));
}

absl::StatusOr<std::string> Browser::Attribute(const std::string& element,
                                               const std::string& name) {
  ASSIGN_OR_RETURN(nlohmann::json value,
                   SessionCall("GET", absl::StrCat("/element/", element, "/attribute/", name)));
  if (value.is_null()) {
    return absl::NotFoundError(absl::StrCat("element has no attribute `", name, "`"));
  }
  return AsString(value, absl::StrCat("attribute ", name));
}

absl::Status Browser::Type(const std::string& element, const std::string& text) {
  return SessionCall("POST", absl::StrCat("/element/", element, "/value"), {{"text", text}})
      .status();
}

absl::Status Browser::Click(const std::string& element) {
  return SessionCall("POST", absl::StrCat("/element/", element, "/click"), nlohmann::json::object())
      .status();
}

absl::StatusOr<nlohmann::json> Browser::Execute(const std::string& script, nlohmann::json args) {
  return SessionCall("POST", "/execute/sync", {{"script", script}, {"args", std::move(args)}});
}

nlohmann::json Browser::ElementArg(const std::string& element) { return {{kElementKey, element}}; }

absl::Status Browser::Screenshot(const std::string& png_path) {
  ASSIGN_OR_RETURN(nlohmann::json value, SessionCall("GET", "/screenshot"));
  ASSIGN_OR_RETURN(std::string base64, AsString(value, "screenshot"));
  std::string png;
  if (!absl::Base64Unescape(base64, &png)) {
    return absl::InternalError("webdriver screenshot: the reply is not base64");
  }
  std::ofstream out(png_path, std::ios::binary | std::ios::trunc);
  out.write(png.data(), static_cast<std::streamsize>(png.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write the screenshot ", png_path));
  return absl::OkStatus();
}

}  // namespace forge::testing
