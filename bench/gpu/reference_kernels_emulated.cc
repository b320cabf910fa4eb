// reference_kernels.cu compiled for CPU threads (cuda_emulation.h), for the emulated smoke run
// of forge-bench-gpu-kernels (bench/gpu/CMakeLists.txt).
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif
#include "bench/gpu/reference_kernels.cu"  // NOLINT(build/include): the whole translation unit
