// The flash-attention bodies (flash_attention_body.h) on the CUDA emulation's fibers
// (cuda_emulation.h): FiberCtx is the execution context, with 16 x 16 tiles for the WMMA
// fragments (every lane holds the whole tile, as the fragments' documented semantics allow;
// lane 0 stores, and the bodies sync the warp before any lane reads), and RunFlash runs a
// body over a grid with shared memory that starts as NaNs in every block, as garbage would on
// a GPU, so a read of anything the body did not write shows. Host compilation only.
#ifndef FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_
#define FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_

#include <cstring>
#include <vector>

#include "worker/cuda/cuda_emulation.h"
#include "worker/cuda/flash_attention_body.h"

namespace forge::cuda::flash {

struct Tile {
  float v[256];  // 16 x 16, [row][col] of the logical matrix (A: m x k, B: k x n, Acc: m x n)
};

class FiberCtx {
 public:
  using FragA = Tile;
  using FragBCol = Tile;
  using FragBRow = Tile;
  using Acc = Tile;

  explicit FiberCtx(char* smem) : smem_(smem) {}
  int tid() const { return static_cast<int>(emu::g_thread_idx.x); }
  int block_x() const { return static_cast<int>(emu::g_block_idx.x); }
  int block_y() const { return static_cast<int>(emu::g_block_idx.y); }
  int grid_x() const { return static_cast<int>(emu::g_grid_dim.x); }
  void sync() { emu::SyncThreads(); }
  void syncwarp() { emu::SyncWarp(); }
  float shfl_xor(float v, int mask) { return emu::ShflXor(0xffffffffu, v, mask); }
  char* smem() { return smem_; }

  void fill(Acc& a, float x) {
    for (float& e : a.v) e = x;
  }
  void load_a(FragA& f, const bf16* p, int ld) {
    for (int m = 0; m < 16; ++m) {
      for (int k = 0; k < 16; ++k) f.v[m * 16 + k] = __bfloat162float(p[m * ld + k]);
    }
  }
  void load_b_col(FragBCol& f, const bf16* p, int ld) {  // element (k, n) at p[n * ld + k]
    for (int k = 0; k < 16; ++k) {
      for (int n = 0; n < 16; ++n) f.v[k * 16 + n] = __bfloat162float(p[n * ld + k]);
    }
  }
  void load_b_row(FragBRow& f, const bf16* p, int ld) {  // element (k, n) at p[k * ld + n]
    for (int k = 0; k < 16; ++k) {
      for (int n = 0; n < 16; ++n) f.v[k * 16 + n] = __bfloat162float(p[k * ld + n]);
    }
  }
  void load_acc(Acc& f, const float* p, int ld) {
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) f.v[m * 16 + n] = p[m * ld + n];
    }
  }
  void mma(Acc& d, const Tile& a, const Tile& b) {
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) {
        float acc = d.v[m * 16 + n];
        for (int k = 0; k < 16; ++k) acc += a.v[m * 16 + k] * b.v[k * 16 + n];
        d.v[m * 16 + n] = acc;
      }
    }
  }
  void store(float* p, const Acc& f, int ld) {
    if (tid() % 32 != 0) return;
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) p[m * ld + n] = f.v[m * 16 + n];
    }
  }

 private:
  char* smem_;
};

// Runs body(ctx) for every thread of a (grid_x, grid_y) grid of kThreads-thread blocks.
template <typename Body>
void RunFlash(int grid_x, int grid_y, size_t smem_bytes, const Body& body) {
  std::vector<char> smem(smem_bytes + 128);
  char* base =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(smem.data()) + 127) / 128 * 128);
  emu::RunGrid(dim3(grid_x, grid_y), dim3(kThreads), [&] {
    FiberCtx ctx(base);
    if (ctx.tid() == 0) std::memset(base, 0xff, smem_bytes);  // NaNs, every block
    ctx.sync();
    body(ctx);
  });
}

}  // namespace forge::cuda::flash

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_
