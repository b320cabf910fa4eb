// FORGE_LAUNCH(kernel, grid, block, shared_bytes, stream, args...): a kernel launch, written
// so that the same source compiles for the GPU (kernel<<<grid, block, shared_bytes,
// stream>>>(args...)) and, with FORGE_CUDA_EMULATION, for CPU threads (cuda_emulation.h), where
// the kernel tests run on machines without a GPU. A kernel named with a comma (two template
// arguments) goes in parentheses: FORGE_LAUNCH((Kernel<T, 4>), ...).
#ifndef FORGE_WORKER_CUDA_LAUNCH_H_
#define FORGE_WORKER_CUDA_LAUNCH_H_

#ifdef FORGE_CUDA_EMULATION
#include "worker/cuda/cuda_emulation.h"
#else
#define FORGE_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<grid, block, shared_bytes, stream>>>(__VA_ARGS__)
#endif

#endif  // FORGE_WORKER_CUDA_LAUNCH_H_
