#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace forge {
namespace {

int LevelFromEnv() {
  const char* env = std::getenv("FORGE_LOG_LEVEL");
  if (env == nullptr) return static_cast<int>(LogLevel::kInfo);
  std::string v = absl::AsciiStrToLower(env);
  if (v == "debug") return 0;
  if (v == "warning") return 2;
  if (v == "error") return 3;
  return 1;
}

std::atomic<int>& MinLevel() {
  static std::atomic<int> level{LevelFromEnv()};
  return level;
}

std::mutex tag_mu;
std::string& Tag() {
  static std::string* tag = new std::string("forge");
  return *tag;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarning: return "W";
    case LogLevel::kError: return "E";
  }
  return "?";
}

}  // namespace

void SetMinLogLevel(LogLevel level) { MinLevel().store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= MinLevel().load(); }

void SetLogTag(absl::string_view tag) {
  std::lock_guard<std::mutex> lock(tag_mu);
  Tag() = std::string(tag);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  std::string tag;
  {
    std::lock_guard<std::mutex> lock(tag_mu);
    tag = Tag();
  }
  stream_ << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()) << ' '
          << LevelName(level_) << ' ' << tag << ' ' << (base ? base + 1 : file) << ':' << line
          << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string s = stream_.str();
  // One write so concurrent lines never interleave.
  ssize_t unused = ::write(STDERR_FILENO, s.data(), s.size());
  (void)unused;
}

}  // namespace forge
