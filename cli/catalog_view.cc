#include "cli/catalog_view.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "cli/output.h"

namespace forge::cli {

std::string DatasetsTable(const forge::v1::ListDatasetsResponse& response, absl::Time now) {
  Table table({"NAME", "DOCUMENTS", "TOKENS", "HELD-OUT", "SIZE", "CREATED"});
  for (const forge::v1::DatasetInfo& d : response.datasets()) {
    table.AddRow({d.name(), absl::StrCat(d.documents()), absl::StrCat(d.tokens()),
                  absl::StrCat(d.held_out_documents()), FormatBytes(d.bytes()),
                  FormatAgo(d.create_time(), now)});
  }
  return table.Render();
}

std::string CheckpointsTable(const forge::v1::ListCheckpointsResponse& response, absl::Time now) {
  Table table({"ID", "JOB", "STEP", "ATTEMPT", "SIZE", "CREATED"});
  for (const forge::v1::CheckpointInfo& c : response.checkpoints()) {
    table.AddRow({c.id(), c.job_id(), absl::StrCat(c.step()), absl::StrCat(c.attempt()),
                  FormatBytes(c.bytes()), FormatAgo(c.create_time(), now)});
  }
  return table.Render();
}

void SortNewestFirst(forge::v1::ListCheckpointsResponse* response) {
  auto key = [](const forge::v1::CheckpointInfo& c) {
    return std::make_tuple(c.create_time().seconds(), c.create_time().nanos(), c.step());
  };
  std::stable_sort(response->mutable_checkpoints()->begin(), response->mutable_checkpoints()->end(),
                   [&](const forge::v1::CheckpointInfo& a, const forge::v1::CheckpointInfo& b) {
                     if (key(a) != key(b)) return key(a) > key(b);
                     return a.id() < b.id();
                   });
}

}  // namespace forge::cli
