// NcclCommunicator for the emulated backend (one emulated device, so world size 1): the
// backend only reaches these with world_size > 1, which the emulation refuses.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif

#include "worker/cuda/nccl_communicator.h"

namespace forge::cuda {

NcclCommunicator::~NcclCommunicator() = default;

absl::Status NcclCommunicator::AllReduceSumAsync(float*, size_t, cudaStream_t) {
  return absl::UnimplementedError("NCCL is not emulated: one emulated device");
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t) {
  return absl::UnimplementedError("NCCL is not emulated: one emulated device");
}

}  // namespace forge::cuda
