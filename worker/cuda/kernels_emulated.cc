// kernels.cu compiled for CPU threads (cuda_emulation.h), for kernels_emulation_test: the
// same kernels and launchers, run on host memory.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif
#include "worker/cuda/kernels.cu"  // NOLINT(build/include): the whole translation unit
