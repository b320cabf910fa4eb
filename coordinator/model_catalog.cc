#include "coordinator/model_catalog.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/names.h"
#include "common/proto_time.h"
#include "common/spec_names.h"
#include "common/status_macros.h"

namespace forge::coordinator {

constexpr size_t kMaxNoteLength = 256;

absl::StatusOr<std::unique_ptr<ModelCatalog>> ModelCatalog::Open(Store* store,
                                                                 StorageGateway* storage,
                                                                 Clock* clock) {
  auto c = std::unique_ptr<ModelCatalog>(
      new ModelCatalog(store, storage, clock != nullptr ? clock : RealClock()));
  ASSIGN_OR_RETURN(std::vector<ModelRecord> models, store->LoadModels());
  ASSIGN_OR_RETURN(std::vector<ChannelRecord> channels, store->LoadChannels());
  absl::MutexLock lock(&c->mu_);
  for (ModelRecord& m : models) {
    c->models_[{m.tenant, m.entry.name(), m.entry.stage()}] = std::move(m.entry);
  }
  for (ChannelRecord& ch : channels) {
    c->channels_[{ch.tenant, ch.entry.channel()}] = std::move(ch.entry);
  }
  return c;
}

absl::StatusOr<forge::v1::ModelEntry> ModelCatalog::Register(
    const std::string& tenant, const forge::v1::RegisterModelRequest& request) {
  RETURN_IF_ERROR(ValidateResourceName("name", request.name()));
  if (request.note().size() > kMaxNoteLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("note is ", request.note().size(), " bytes; at most ", kMaxNoteLength));
  }
  if (!forge::v1::Stage_IsValid(request.stage())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stage must be pre-training, mid-training or post-training (got ", request.stage(), ")"));
  }
  absl::StatusOr<forge::v1::CheckpointInfo> checkpoint =
      storage_->GetCheckpoint(tenant, request.checkpoint());
  if (!checkpoint.ok()) {
    return absl::NotFoundError(absl::StrCat("checkpoint: ", request.checkpoint(),
                                            " is not a committed checkpoint of tenant ", tenant,
                                            "; forge checkpoints lists them"));
  }
  forge::v1::ModelEntry entry;
  entry.set_name(request.name());
  entry.set_stage(request.stage() != forge::v1::STAGE_UNSPECIFIED ? request.stage()
                                                                   : checkpoint->stage());
  if (entry.stage() == forge::v1::STAGE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stage: checkpoint ", request.checkpoint(),
        " records no stage; give one (pre-training, mid-training or post-training)"));
  }
  entry.set_checkpoint(checkpoint->id());
  *entry.mutable_register_time() = ToProtoTime(clock_->Now());
  *entry.mutable_shape() = checkpoint->shape();
  entry.set_note(request.note());
  WriteBatch batch;
  batch.put_models.push_back({tenant, entry});
  RETURN_IF_ERROR(store_->CommitSync(std::move(batch)));
  absl::MutexLock lock(&mu_);
  models_[{tenant, entry.name(), entry.stage()}] = entry;
  return entry;
}

absl::StatusOr<forge::v1::ModelEntry> ModelCatalog::Resolve(const std::string& tenant,
                                                            const std::string& name,
                                                            forge::v1::Stage stage) const {
  absl::MutexLock lock(&mu_);
  if (auto it = models_.find({tenant, name, stage}); it != models_.end()) return it->second;
  std::vector<std::string> stages;
  for (auto it = models_.lower_bound({tenant, name, 0});
       it != models_.end() && std::get<0>(it->first) == tenant && std::get<1>(it->first) == name;
       ++it) {
    stages.push_back(StageName(it->second.stage()));
  }
  if (stages.empty()) {
    return absl::NotFoundError(absl::StrCat("base.model: tenant ", tenant, " has no model \"",
                                            name, "\"; forge models lists the catalog"));
  }
  return absl::NotFoundError(absl::StrCat("base.stage: model \"", name, "\" has no ",
                                          StageName(stage), " checkpoint; it has ",
                                          absl::StrJoin(stages, ", ")));
}

std::vector<forge::v1::ModelEntry> ModelCatalog::ListModels(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  std::vector<forge::v1::ModelEntry> out;
  for (const auto& [key, entry] : models_) {
    if (std::get<0>(key) == tenant) out.push_back(entry);
  }
  return out;
}

absl::StatusOr<ChannelRecord> ModelCatalog::PreparePromotion(
    const std::string& tenant, forge::v1::ChannelEntry entry) const {
  RETURN_IF_ERROR(ValidateResourceName("promote.channel", entry.channel()));
  RETURN_IF_ERROR(storage_->GetCheckpoint(tenant, entry.checkpoint()).status());
  *entry.mutable_promote_time() = ToProtoTime(clock_->Now());
  absl::MutexLock lock(&mu_);
  auto it = channels_.find({tenant, entry.channel()});
  entry.set_promotions(it == channels_.end() ? 1 : it->second.promotions() + 1);
  return ChannelRecord{tenant, std::move(entry)};
}

void ModelCatalog::ApplyPromotion(const ChannelRecord& record) {
  absl::MutexLock lock(&mu_);
  forge::v1::ChannelEntry& slot = channels_[{record.tenant, record.entry.channel()}];
  // Promotions commit in order of preparation; a late apply never rolls a channel back.
  if (slot.promotions() <= record.entry.promotions()) slot = record.entry;
}

absl::StatusOr<forge::v1::ChannelEntry> ModelCatalog::Channel(const std::string& tenant,
                                                              const std::string& channel) const {
  absl::MutexLock lock(&mu_);
  if (auto it = channels_.find({tenant, channel}); it != channels_.end()) return it->second;
  return absl::NotFoundError(
      absl::StrCat("channel \"", channel, "\" has no promoted checkpoint yet"));
}

std::vector<forge::v1::ChannelEntry> ModelCatalog::ListChannels(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  std::vector<forge::v1::ChannelEntry> out;
  for (const auto& [key, entry] : channels_) {
    if (key.first == tenant) out.push_back(entry);
  }
  return out;
}

bool ModelCatalog::Referenced(const std::string& checkpoint_id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [key, entry] : models_) {
    if (entry.checkpoint() == checkpoint_id) return true;
  }
  for (const auto& [key, entry] : channels_) {
    if (entry.checkpoint() == checkpoint_id) return true;
  }
  return false;
}

}  // namespace forge::coordinator
