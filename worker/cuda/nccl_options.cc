// CheckNcclOptions (nccl_communicator.h): compiled into the GPU build and the emulated one,
// so that both refuse the same options with the same words.
#include "absl/strings/str_cat.h"
#include "worker/cuda/nccl_communicator.h"

namespace forge::cuda {

absl::Status CheckNcclOptions(const NcclOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl communicator: world_size must be >= 1 (got ", options.world_size, ")"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator: rank must be in [0, ",
                                                   options.world_size, ") (got ", options.rank,
                                                   ")"));
  }
  if (options.device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl communicator: device must be >= 0 (got ", options.device, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator: timeout must be > 0 (got ",
                                                   absl::FormatDuration(options.timeout), ")"));
  }
  if (options.world_size > 1 && options.store == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl communicator: world_size ", options.world_size,
                     " > 1 needs a rendezvous store (options.store is null)"));
  }
  if (options.world_size > 1 && options.key.empty()) {
    return absl::InvalidArgumentError(
        "nccl communicator: key must be non-empty when world_size > 1");
  }
  return absl::OkStatus();
}

}  // namespace forge::cuda
