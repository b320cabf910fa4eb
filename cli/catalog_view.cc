#include "cli/catalog_view.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/output.h"
#include "common/spec_names.h"

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
  Table table({"ID", "JOB", "STEP", "STAGE", "PARENT", "ATTEMPT", "SIZE", "CREATED"});
  for (const forge::v1::CheckpointInfo& c : response.checkpoints()) {
    table.AddRow({c.id(), c.job_id(), absl::StrCat(c.step()),
                  c.stage() == forge::v1::STAGE_UNSPECIFIED ? "-" : StageName(c.stage()),
                  c.parent().empty() ? "-" : c.parent(), absl::StrCat(c.attempt()),
                  FormatBytes(c.bytes()), FormatAgo(c.create_time(), now)});
  }
  return table.Render();
}

std::string ModelsTable(const forge::v1::ListModelsResponse& response, absl::Time now) {
  Table models({"MODEL", "STAGE", "CHECKPOINT", "SHAPE", "REGISTERED", "NOTE"});
  for (const forge::v1::ModelEntry& m : response.models()) {
    const forge::v1::ModelSpec& s = m.shape();
    models.AddRow({m.name(), StageName(m.stage()), m.checkpoint(),
                   absl::StrCat(s.layers(), "L x ", s.width(), " (", s.heads(), " heads, ctx ",
                                s.context(), ")"),
                   FormatAgo(m.register_time(), now), m.note().empty() ? "-" : m.note()});
  }
  std::string out = models.Render();
  if (response.channels().empty()) return out;
  Table channels({"CHANNEL", "CHECKPOINT", "JOB", "PROMOTED", "GUARD", "PROMOTIONS"});
  for (const forge::v1::ChannelEntry& c : response.channels()) {
    channels.AddRow({c.channel(), c.checkpoint(), c.job_id(), FormatAgo(c.promote_time(), now),
                     absl::StrFormat("%s %.4f vs base %.4f", c.suite(), c.loss(), c.base_loss()),
                     absl::StrCat(c.promotions())});
  }
  return absl::StrCat(out, "\n", channels.Render());
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
