// One split of a prepared dataset (common/dataset.h) seen as a DocumentSource for the sampler.
#ifndef FORGE_WORKER_ENGINE_DATASET_SOURCE_H_
#define FORGE_WORKER_ENGINE_DATASET_SOURCE_H_

#include <memory>
#include <vector>

#include "common/dataset.h"
#include "worker/engine/document_source.h"

namespace forge::engine {

// Thread-safe for reads (the Dataset is immutable after Open).
class DatasetSplitSource final : public DocumentSource {
 public:
  DatasetSplitSource(std::shared_ptr<const Dataset> data, Split split)
      : data_(std::move(data)), docs_(data_->Documents(split)) {}
  int64_t num_documents() const override { return static_cast<int64_t>(docs_.size()); }
  absl::Span<const uint16_t> document(int64_t i) const override {
    return data_->Document(docs_[static_cast<size_t>(i)]);
  }

 private:
  std::shared_ptr<const Dataset> data_;
  const std::vector<int64_t>& docs_;  // owned by *data_
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_DATASET_SOURCE_H_
