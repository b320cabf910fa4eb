// The model catalog: base models by stage and promotion channels, per tenant.
//
//   model "acme-base" ── pre-training  ─▶ checkpoint c-1a..
//                     ── mid-training  ─▶ checkpoint c-7f..
//                     ── post-training ─▶ checkpoint c-93..
//   channel "acme-prod" ─▶ the checkpoint last promoted to it (its guard passed)
//
// A job's `base: {model: M, stage: S}` resolves here to a checkpoint id at submission (the
// job keeps the id, so rebinding the model later does not change a queued job). Checkpoints a
// model or channel names are never deleted by retention (Referenced).
//
// Rows are committed to the Store before a call returns; the catalog is loaded at start-up.
// Thread safety: thread-safe.
#ifndef FORGE_COORDINATOR_MODEL_CATALOG_H_
#define FORGE_COORDINATOR_MODEL_CATALOG_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "coordinator/storage_gateway.h"
#include "coordinator/store.h"
#include "forge/v1/training.pb.h"

namespace forge::coordinator {

class ModelCatalog {
 public:
  static absl::StatusOr<std::unique_ptr<ModelCatalog>> Open(Store* store, StorageGateway* storage,
                                                            Clock* clock = nullptr);

  // Binds (name, stage) of `tenant` to a committed checkpoint of the tenant. stage
  // UNSPECIFIED takes the stage the checkpoint recorded. INVALID_ARGUMENT naming the field for
  // a bad name or note, NOT_FOUND for an unknown checkpoint.
  absl::StatusOr<forge::v1::ModelEntry> Register(const std::string& tenant,
                                                 const forge::v1::RegisterModelRequest& request);
  // NOT_FOUND naming the model and the stages it has.
  absl::StatusOr<forge::v1::ModelEntry> Resolve(const std::string& tenant, const std::string& name,
                                                forge::v1::Stage stage) const;
  std::vector<forge::v1::ModelEntry> ListModels(const std::string& tenant) const;

  // Promotion in two halves, for a caller that commits the row in its own batch (a job's
  // success and its promotion together): the row that makes `entry.checkpoint` the one
  // `entry.channel` serves (promotions counted up), then, once it is durable, ApplyPromotion.
  absl::StatusOr<ChannelRecord> PreparePromotion(const std::string& tenant,
                                                 forge::v1::ChannelEntry entry) const;
  void ApplyPromotion(const ChannelRecord& record);
  // NOT_FOUND when nothing was promoted to the channel yet.
  absl::StatusOr<forge::v1::ChannelEntry> Channel(const std::string& tenant,
                                                  const std::string& channel) const;
  std::vector<forge::v1::ChannelEntry> ListChannels(const std::string& tenant) const;

  // Whether a model or channel of any tenant names the checkpoint.
  bool Referenced(const std::string& checkpoint_id) const;

 private:
  using ModelKey = std::tuple<std::string, std::string, int>;  // (tenant, name, stage)
  using ChannelKey = std::pair<std::string, std::string>;      // (tenant, channel)

  ModelCatalog(Store* store, StorageGateway* storage, Clock* clock)
      : store_(store), storage_(storage), clock_(clock) {}

  Store* const store_;
  StorageGateway* const storage_;
  Clock* const clock_;
  mutable absl::Mutex mu_;
  std::map<ModelKey, forge::v1::ModelEntry> models_ ABSL_GUARDED_BY(mu_);
  std::map<ChannelKey, forge::v1::ChannelEntry> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_MODEL_CATALOG_H_
