#include "cli/output.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/proto_time.h"

namespace forge::cli {
namespace {

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

size_t DisplayWidth(absl::string_view s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return !IsContinuationByte(c); });
}

bool IsUnset(const google::protobuf::Timestamp& t) { return t.seconds() == 0 && t.nanos() == 0; }

}  // namespace

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  };
  measure(headers_);
  for (const auto& row : rows_) measure(row);

  std::string out;
  auto append = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - DisplayWidth(row[i]) + 2, ' ');
    }
    // An empty last cell would otherwise leave the padding of the column before it.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  };
  append(headers_);
  for (const auto& row : rows_) append(row);
  return out;
}

std::string FormatShortDuration(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 120) return absl::StrCat(s, "s");
  if (s < 120 * 60) return absl::StrCat(s / 60, "m");
  if (s < 48 * 3600) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::string FormatAge(const google::protobuf::Timestamp& t, absl::Time now) {
  if (IsUnset(t)) return "-";
  return FormatShortDuration(now - FromProtoTime(t));
}

std::string FormatAgo(const google::protobuf::Timestamp& t, absl::Time now) {
  if (IsUnset(t)) return "never";
  return absl::StrCat(FormatShortDuration(now - FromProtoTime(t)), " ago");
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t, absl::Time now) {
  if (IsUnset(t)) return "-";
  return absl::StrCat(
      absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", FromProtoTime(t), absl::UTCTimeZone()), " (",
      FormatAgo(t, now), ")");
}

namespace {

// `value` with three significant digits ("1.50", "18.2", "307").
std::string ThreeDigits(double value) {
  if (value >= 99.95) return absl::StrFormat("%.0f", value);
  if (value >= 9.995) return absl::StrFormat("%.1f", value);
  return absl::StrFormat("%.2f", value);
}

}  // namespace

std::string FormatBytes(int64_t bytes) {
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1023.95 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrCat(ThreeDigits(value), " ", kUnits[unit]);
}

std::string FormatCount(double n) {
  if (n < 999.5) return absl::StrFormat("%.0f", n < 0 ? 0.0 : n);
  constexpr const char* kSuffixes[] = {"k", "M", "G", "T"};
  int unit = -1;
  while (n >= 999.5 && unit < 3) {
    n /= 1000;
    ++unit;
  }
  return absl::StrCat(ThreeDigits(n), kSuffixes[unit]);
}

std::string OneLine(absl::string_view text, size_t max_chars) {
  std::string line;
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!IsContinuationByte(c)) {
      if (chars == max_chars) {
        // Cut at a code point boundary, leaving room for the ellipsis.
        size_t keep = line.size();
        for (int n = 0; n < 3 && keep > 0; ++n) {
          do --keep;
          while (keep > 0 && IsContinuationByte(line[keep]));
        }
        line.resize(keep);
        return line + "...";
      }
      ++chars;
    }
    line += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  return line;
}

std::string EnumLabel(const google::protobuf::EnumDescriptor* type, int value,
                      absl::string_view prefix) {
  const google::protobuf::EnumValueDescriptor* v = type->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  absl::string_view name = v->name();
  absl::ConsumePrefix(&name, prefix);
  return std::string(name);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print ", message.GetTypeName(), " as JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

absl::Status WriteOutput(std::ostream& out, OutputFormat format,
                         const google::protobuf::Message& message,
                         absl::FunctionRef<std::string()> table) {
  if (format == OutputFormat::kJson) {
    absl::StatusOr<std::string> json = ToJson(message);
    if (!json.ok()) return json.status();
    out << *json;
  } else {
    out << table();
  }
  out.flush();
  if (!out) return absl::UnknownError("cannot write the output (stdout closed?)");
  return absl::OkStatus();
}

}  // namespace forge::cli
