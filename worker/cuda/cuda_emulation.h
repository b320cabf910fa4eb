// CUDA kernels on the CPU, for testing kernel logic where no GPU is present (CI): with
// FORGE_CUDA_EMULATION defined, kernels.cu compiles as plain C++ (kernels_emulated.cc) and its
// launches (launch.h) run every block of the grid in turn, each CUDA thread of a block as a
// cooperative fiber (ucontext) on the calling thread:
//   __syncthreads      every live thread of the block must arrive before any goes on (a
//                      thread that returns drops out, as exited threads do on the GPU)
//   __shfl_xor_sync    an exchange through the warp's slots between two warp barriers
//   __shared__         a static: one copy per kernel instantiation, shared by the block's
//                      threads (blocks run one at a time)
//   threadIdx etc.     the running fiber's; 1-D blocks (what the kernels use)
// A barrier that some threads never reach (divergent __syncthreads) aborts with a message
// instead of hanging. Memory is host memory: the pointers a test passes are host pointers.
// Schedule: the lowest-numbered runnable thread always runs (RunBlock), so lower warps run
// ahead of higher ones up to each __syncthreads, which exposes a missing one between warps.
// What this cannot show: timing, coalescing, hardware limits (registers, shared memory), and
// other interleavings (a thread is only switched out at a barrier); the GPU tests (label
// gpu) run the same code on a device.
//
// Include only in host compilation, after the CUDA headers: it defines macros named like
// CUDA's builtins.
#ifndef FORGE_WORKER_CUDA_CUDA_EMULATION_H_
#define FORGE_WORKER_CUDA_CUDA_EMULATION_H_

#ifdef __CUDACC__
#error "cuda_emulation.h is for host compilation only"
#endif

#include <cuda_runtime_api.h>  // dim3, cudaError_t
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

namespace forge::cuda::emu {

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  unsigned tid = 0;
  bool done = false;
  int waiting = 0;  // 0: runnable; 1: at the block barrier; 2: at its warp's barrier
};

struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned current = 0;
  unsigned lowest = 0;  // no fiber below this index is runnable (the scheduler's scan start)
  unsigned live = 0, block_arrived = 0;
  std::vector<unsigned> warp_live, warp_arrived;
  std::vector<double> exchange;  // 32 slots per warp
};

inline Block* g_block = nullptr;  // the block being run (one at a time)
inline dim3 g_thread_idx, g_block_idx, g_block_dim, g_grid_dim;
inline constexpr size_t kStackBytes = 256 << 10;

// Releases the barrier `kind` (of warp `warp` for kind 2) when every live participant arrived.
inline void MaybeRelease(int kind, unsigned warp) {
  Block& b = *g_block;
  if (kind == 1 && b.block_arrived == b.live && b.live > 0) {
    for (Fiber& f : b.fibers) {
      if (f.waiting == 1) f.waiting = 0;
    }
    b.block_arrived = 0;
    b.lowest = 0;
  }
  if (kind == 2 && b.warp_arrived[warp] == b.warp_live[warp] && b.warp_live[warp] > 0) {
    for (Fiber& f : b.fibers) {
      if (f.waiting == 2 && f.tid / 32 == warp) f.waiting = 0;
    }
    b.warp_arrived[warp] = 0;
    b.lowest = std::min(b.lowest, warp * 32);
  }
}

inline void Arrive(int kind) {
  Block& b = *g_block;
  Fiber& me = b.fibers[b.current];
  const unsigned warp = me.tid / 32;
  me.waiting = kind;
  if (kind == 1) ++b.block_arrived;
  if (kind == 2) ++b.warp_arrived[warp];
  MaybeRelease(kind, warp);
  if (me.waiting != 0) swapcontext(&me.context, &b.scheduler);  // until released
}

inline void SyncThreads() { Arrive(1); }
inline void SyncWarp() { Arrive(2); }

template <typename T>
T ShflXor(unsigned /*mask*/, T v, int lane_mask) {
  const unsigned tid = g_thread_idx.x, w = tid / 32, lane = tid % 32;
  double* slots = g_block->exchange.data() + w * 32;
  slots[lane] = static_cast<double>(v);
  Arrive(2);
  const T got = static_cast<T>(slots[lane ^ static_cast<unsigned>(lane_mask)]);
  Arrive(2);
  return got;
}

template <typename F>
struct Entry {
  static void Run(unsigned lo, unsigned hi) {
    const F* body = reinterpret_cast<const F*>((uintptr_t{hi} << 32) | uintptr_t{lo});
    (*body)();
    Block& b = *g_block;
    Fiber& me = b.fibers[b.current];
    me.done = true;
    --b.live;
    --b.warp_live[me.tid / 32];
    MaybeRelease(1, 0);
    MaybeRelease(2, me.tid / 32);
    // Returning resumes uc_link: the scheduler.
  }
};

// Runs one block: every thread a fiber. The scheduler always resumes the lowest-numbered
// runnable fiber, so warp 0 runs ahead of the others as far as the barriers let it (until a
// __syncthreads), then warp 1, and so on: the most skewed legal schedule, under which a
// missing __syncthreads between warps shows as a wrong result (a round robin keeps warps in
// step and hides it).
inline void RunBlock(Block& b, unsigned threads, void (*entry)(), uintptr_t body) {
  const unsigned warps = (threads + 31) / 32;
  b.live = threads;
  b.block_arrived = 0;
  b.warp_live.assign(warps, 0);
  b.warp_arrived.assign(warps, 0);
  ucontext_t base;
  getcontext(&base);  // once per block: makecontext only needs an initialised context
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[t];
    f.tid = t;
    f.done = false;
    f.waiting = 0;
    ++b.warp_live[t / 32];
    f.context = base;
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, entry, 2, static_cast<unsigned>(body & 0xffffffffu),
                static_cast<unsigned>(body >> 32));
  }
  b.lowest = 0;
  for (;;) {
    unsigned t = b.lowest;
    while (t < threads && (b.fibers[t].done || b.fibers[t].waiting != 0)) ++t;
    if (t < threads) {
      b.lowest = t;  // lowered again by a release (MaybeRelease) while the fiber runs
      b.current = t;
      g_thread_idx = dim3(t, 0, 0);
      swapcontext(&b.scheduler, &b.fibers[t].context);
      continue;
    }
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done = all_done && f.done;
    if (all_done) return;
    {
      std::fprintf(stderr,
                   "cuda emulation: block (%u, %u, %u) is stuck: a barrier that not every live "
                   "thread reaches (divergent __syncthreads or shuffle)\n",
                   g_block_idx.x, g_block_idx.y, g_block_idx.z);
      std::abort();
    }
  }
}

// Runs body() as every thread of every block of the grid.
template <typename F>
void RunGrid(dim3 grid, dim3 block, const F& body) {
  const unsigned threads = block.x * block.y * block.z;
  Block b;
  b.fibers.resize(threads);
  for (Fiber& f : b.fibers) f.stack.reset(new char[kStackBytes]);
  b.exchange.assign((threads + 31) / 32 * 32, 0.0);
  Block* const outer = g_block;
  g_block = &b;
  g_block_dim = block;
  g_grid_dim = grid;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        g_block_idx = dim3(x, y, z);
        RunBlock(b, threads, reinterpret_cast<void (*)()>(&Entry<F>::Run),
                 reinterpret_cast<uintptr_t>(&body));
      }
    }
  }
  g_block = outer;
}

// The launch: returns a callable that takes the kernel's arguments.
template <typename... P>
auto Launch(dim3 grid, dim3 block, void (*kernel)(P...)) {
  return [grid, block, kernel](auto&&... args) { RunGrid(grid, block, [&] { kernel(args...); }); };
}

}  // namespace forge::cuda::emu

// The CUDA headers define some of these for host compilers (as attributes): replace them.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx ::forge::cuda::emu::g_thread_idx
#define blockIdx ::forge::cuda::emu::g_block_idx
#define blockDim ::forge::cuda::emu::g_block_dim
#define gridDim ::forge::cuda::emu::g_grid_dim
#define __syncthreads() ::forge::cuda::emu::SyncThreads()
#define __shfl_xor_sync(mask, v, lane_mask) ::forge::cuda::emu::ShflXor(mask, v, lane_mask)
#define FORGE_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  ::forge::cuda::emu::Launch(dim3(grid), dim3(block), kernel)(__VA_ARGS__)

using std::max;
using std::min;

#endif  // FORGE_WORKER_CUDA_CUDA_EMULATION_H_
