// The documents of one dataset's training split, as the mixture sampler reads them.
#ifndef FORGE_WORKER_ENGINE_DOCUMENT_SOURCE_H_
#define FORGE_WORKER_ENGINE_DOCUMENT_SOURCE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace forge::engine {

// Random access to a fixed, ordered set of tokenised documents. Implementations (the dataset
// reader's adapter, in-memory sources in tests) must be immutable after construction: the same
// index always yields the same tokens, and concurrent const calls are safe.
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;

  // Number of documents; constant for the lifetime of the object.
  virtual int64_t num_documents() const = 0;

  // Tokens of document `i`. REQUIRES: 0 <= i < num_documents(). The span stays valid for the
  // lifetime of the source. A document may be empty.
  virtual absl::Span<const uint16_t> document(int64_t i) const = 0;
};

}  // namespace forge::engine

#endif  // FORGE_WORKER_ENGINE_DOCUMENT_SOURCE_H_
