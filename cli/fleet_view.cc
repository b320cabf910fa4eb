#include "cli/fleet_view.h"

#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/output.h"
#include "common/spec_names.h"

namespace forge::cli {
namespace {

constexpr size_t kMaxNoteColumn = 60;

}  // namespace

std::string WorkerStateName(forge::v1::WorkerState state) {
  return EnumLabel(forge::v1::WorkerState_descriptor(), state, "WORKER_STATE_");
}

std::string TokenKindName(forge::v1::TokenKind kind) {
  return absl::AsciiStrToLower(EnumLabel(forge::v1::TokenKind_descriptor(), kind, "TOKEN_KIND_"));
}

std::string DeviceSummary(const forge::v1::Worker& worker) {
  // Ordered by the enum's number so "cpu" comes before "cuda" whatever the device order.
  std::map<int, int> counts;
  for (const auto& d : worker.devices()) ++counts[d.kind()];
  std::vector<std::string> parts;
  for (const auto& [kind, n] : counts) {
    parts.push_back(absl::StrCat(n, " ", DeviceKindName(static_cast<forge::v1::DeviceKind>(kind))));
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

std::string WorkersTable(const forge::v1::ListWorkersResponse& response, absl::Time now) {
  Table table({"ID", "HOST", "STATE", "DEVICES", "RANKS", "LAST-HEARTBEAT"});
  for (const auto& w : response.workers()) {
    table.AddRow({w.id(), w.hostname(), WorkerStateName(w.state()), DeviceSummary(w),
                  absl::StrCat(w.ranks_size()), FormatAgo(w.last_heartbeat(), now)});
  }
  return table.Render();
}

std::string TenantsTable(const forge::v1::ListTenantsResponse& response, absl::Time now) {
  Table table({"NAME", "AGE"});
  for (const auto& t : response.tenants()) {
    table.AddRow({t.name(), FormatAge(t.create_time(), now)});
  }
  return table.Render();
}

std::string TokensTable(const forge::v1::ListTokensResponse& response, absl::Time now) {
  Table table({"ID", "KIND", "TENANT", "STATE", "AGE", "NOTE"});
  for (const auto& t : response.tokens()) {
    table.AddRow({t.token_id(), TokenKindName(t.kind()), t.tenant().empty() ? "-" : t.tenant(),
                  t.revoked() ? "revoked" : "active", FormatAge(t.create_time(), now),
                  OneLine(t.note(), kMaxNoteColumn)});
  }
  return table.Render();
}

}  // namespace forge::cli
