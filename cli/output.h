// Rendering helpers shared by the commands: text tables, short ages, timestamps, proto JSON.
#ifndef FORGE_CLI_OUTPUT_H_
#define FORGE_CLI_OUTPUT_H_

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace forge::cli {

// `-o table` (for people; the default) or `-o json` (for scripts).
enum class OutputFormat { kTable, kJson };

// A text table: a header row, then one row per AddRow, columns left-aligned and two spaces
// apart. Widths count UTF-8 code points. The last column is not padded (no trailing blanks).
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // REQUIRES: cells.size() == number of headers.
  void AddRow(std::vector<std::string> cells);
  bool empty() const { return rows_.empty(); }

  // Every line ends with '\n'.
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// A short, rounded-down duration: "0s", "59s", "4m", "3h", "12d". Negative durations (clock
// skew between hosts) print as "0s".
std::string FormatShortDuration(absl::Duration d);

// How long before `now` `t` was: FormatShortDuration(now - t); "-" when `t` is unset (zero).
std::string FormatAge(const google::protobuf::Timestamp& t, absl::Time now);

// "3s ago"; "never" when `t` is unset.
std::string FormatAgo(const google::protobuf::Timestamp& t, absl::Time now);

// "2026-01-02 03:04:05 UTC (3m ago)"; "-" when `t` is unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& t, absl::Time now);

// A byte count for people, in binary units with three significant digits: "812 B",
// "1.50 KiB", "18.2 MiB", "3.07 GiB".
std::string FormatBytes(int64_t bytes);

// A count for people: "812", "18.2k", "3.40M", "1.20G".
std::string FormatCount(double n);

// `text` on one line (newlines and tabs become spaces), cut to `max_chars` code points with
// "..." at the end when longer.
std::string OneLine(absl::string_view text, size_t max_chars);

// The name of enum `value` without `prefix` ("JOB_STATE_QUEUED", prefix "JOB_STATE_" ->
// "QUEUED"); the number when the value is unknown to this build (a newer coordinator).
std::string EnumLabel(const google::protobuf::EnumDescriptor* type, int value,
                      absl::string_view prefix);

// `message` as pretty-printed proto JSON with the proto field names (snake_case) and every
// field shown, defaults included, so scripts find stable keys. Ends with '\n'.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

// Writes `message` to `out`: ToJson(message) for kJson, `table()` for kTable.
absl::Status WriteOutput(std::ostream& out, OutputFormat format,
                         const google::protobuf::Message& message,
                         absl::FunctionRef<std::string()> table);

}  // namespace forge::cli

#endif  // FORGE_CLI_OUTPUT_H_
