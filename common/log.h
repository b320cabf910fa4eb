// A very small logger: one line per event on stderr, with a UTC timestamp and the level.
//
//   FORGE_LOG(INFO) << "job=" << id << " state=RUNNING";
//
// Thread-safe: each line is formatted in a local buffer and written with one write(2).
// Never log a token or any other secret.
#ifndef FORGE_COMMON_LOG_H_
#define FORGE_COMMON_LOG_H_

#include <sstream>
#include "absl/strings/string_view.h"

namespace forge {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below `level` are dropped. Default kInfo; FORGE_LOG_LEVEL=debug|info|warning|error in
// the environment overrides it at first use.
void SetMinLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Sets the component tag printed on every line ("coordinator", "worker"...).
void SetLogTag(absl::string_view tag);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace forge

#define FORGE_LOG_LEVEL_DEBUG ::forge::LogLevel::kDebug
#define FORGE_LOG_LEVEL_INFO ::forge::LogLevel::kInfo
#define FORGE_LOG_LEVEL_WARNING ::forge::LogLevel::kWarning
#define FORGE_LOG_LEVEL_ERROR ::forge::LogLevel::kError

namespace forge {
// Turns the stream expression into void so FORGE_LOG can sit in a ?: (safe in unbraced ifs).
struct LogVoidify {
  void operator&(std::ostream&) {}
};
}  // namespace forge

#define FORGE_LOG(level)                                 \
  !::forge::LogEnabled(FORGE_LOG_LEVEL_##level)          \
      ? (void)0                                          \
      : ::forge::LogVoidify() &                          \
            ::forge::LogMessage(FORGE_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // FORGE_COMMON_LOG_H_
