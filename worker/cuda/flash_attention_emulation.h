// The flash-attention bodies (flash_attention_body.h) on the CUDA emulation's fibers
// (cuda_emulation.h): FiberCtx is the execution context, and RunFlash runs a body over a grid
// with shared memory that starts as NaNs in every block, as garbage would on a GPU, so a read
// of anything the body did not write shows. mma.sync is computed from the PTX ISA's fragment
// layout for m16n8k16 (the table in flash_attention_body.h): each lane publishes its
// registers in its warp's slots, the warp syncs, each lane computes its own four outputs from
// the lanes that hold their rows and columns, and the warp syncs again. cp.async copies land
// only at the wait that covers them (FiberCtx::copy16_async). Host compilation only.
#ifndef FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_
#define FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <utility>
#include <vector>

#include "worker/cuda/cuda_emulation.h"
#include "worker/cuda/flash_attention_body.h"

namespace forge::cuda::flash {

// One lane's operand registers, as published for its warp's mma.
struct MmaSlot {
  uint32_t a[4];
  uint32_t b[2];
  const bf16* row;  // ldmatrix: the row address this lane gives
};

class FiberCtx {
 public:
  FiberCtx(char* smem, size_t smem_bytes, MmaSlot* slots)
      : smem_(smem), smem_bytes_(smem_bytes), slots_(slots) {}
  int tid() const { return static_cast<int>(emu::g_thread_idx.x); }
  int block_x() const { return static_cast<int>(emu::g_block_idx.x); }
  int block_y() const { return static_cast<int>(emu::g_block_idx.y); }
  int grid_x() const { return static_cast<int>(emu::g_grid_dim.x); }
  void sync() { emu::SyncThreads(); }
  float shfl_xor(float v, int mask) { return emu::ShflXor(0xffffffffu, v, mask); }
  char* smem() { return smem_; }

  // cp.async as late as the PTX ISA allows: a copy lands only when a cp.async.wait_group
  // that covers its group runs in the issuing thread (wait_group 1: every committed group
  // but the latest; copies not yet committed are not waited for), and until then its
  // destination holds NaNs. So a read of a tile before its wait, a missing commit (the empty
  // group the last tile needs), or a copy over a tile another warp still reads (no sync
  // before it) gives NaNs in the results. The source is read at issue (inputs do not change
  // during a kernel).
  void copy16_async(bf16* smem_dst, const bf16* global_src, bool valid) {
    PendingCopy c{smem_dst, {}};
    if (valid) std::memcpy(c.bytes, global_src, 16);
    std::memset(static_cast<void*>(smem_dst), 0xff, 16);
    uncommitted_.push_back(c);
  }
  void async_commit() {
    committed_.push_back(std::move(uncommitted_));
    uncommitted_.clear();
  }
  void async_wait_prior() {
    while (committed_.size() > 1) {
      for (const PendingCopy& c : committed_.front()) {
        std::memcpy(static_cast<void*>(c.dst), c.bytes, 16);
      }
      committed_.pop_front();
    }
  }

  // ldmatrix.x4 from the PTX ISA's description: lanes 8i..8i+7 give matrix i's row addresses
  // (16-byte aligned, in the block's shared memory); lane l receives elements (l / 4,
  // 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of each matrix.
  void ldmatrix_x4(uint32_t (&r)[4], const bf16* row) {
    const int lane = tid() % 32;
    MmaSlot* warp = PublishRow(row);
    const int from = lane / 4, col = 2 * (lane % 4);
    for (int i = 0; i < 4; ++i) {
      r[i] = Pack(warp[8 * i + from].row[col], warp[8 * i + from].row[col + 1]);
    }
    emu::SyncWarp();
  }

  // ldmatrix.x4.trans: the same addresses; lane l receives elements (2 (l % 4), l / 4) and
  // (2 (l % 4) + 1, l / 4).
  void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* row) {
    const int lane = tid() % 32;
    MmaSlot* warp = PublishRow(row);
    const int pair = 2 * (lane % 4), col = lane / 4;
    for (int i = 0; i < 4; ++i) {
      r[i] = Pack(warp[8 * i + pair].row[col], warp[8 * i + pair + 1].row[col]);
    }
    emu::SyncWarp();
  }

  void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    const int lane = tid() % 32;
    MmaSlot* warp = slots_ + (tid() / 32) * 32;
    std::memcpy(warp[lane].a, a, sizeof(a));
    std::memcpy(warp[lane].b, b, sizeof(b));
    emu::SyncWarp();
    const int g = lane / 4, c = 2 * (lane % 4);
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = c + i % 2;
      float acc = d[i];
      for (int k = 0; k < 16; ++k) acc += A(warp, row, k) * B(warp, k, col);
      d[i] = acc;
    }
    emu::SyncWarp();  // every lane has read the slots before any overwrites them
  }

 private:
  // Checks this lane's ldmatrix row address, publishes it in its warp's slots, and syncs the
  // warp so that every lane's is there; returns the warp's slots.
  MmaSlot* PublishRow(const bf16* row) {
    const int lane = tid() % 32;
    const char* p = reinterpret_cast<const char*>(row);
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
      std::fprintf(stderr, "ldmatrix: lane %d's row address is not 16-byte aligned\n", lane);
      std::abort();
    }
    if (p < smem_ || p + 16 > smem_ + smem_bytes_) {
      std::fprintf(stderr, "ldmatrix: lane %d's row address is not in shared memory\n", lane);
      std::abort();
    }
    MmaSlot* warp = slots_ + (tid() / 32) * 32;
    warp[lane].row = row;
    emu::SyncWarp();
    return warp;
  }

  static float Half(uint32_t reg, int which) {
    const uint32_t bits = (which == 0 ? reg & 0xffffu : reg >> 16) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  // A(row, k): lane (row % 8)·4 + (k % 8)/2, register (row >= 8) + 2 (k >= 8), half k % 2.
  static float A(const MmaSlot* warp, int row, int k) {
    return Half(warp[(row % 8) * 4 + (k % 8) / 2].a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  }
  // B(k, n): lane n·4 + (k % 8)/2, register k >= 8, half k % 2.
  static float B(const MmaSlot* warp, int k, int n) {
    return Half(warp[n * 4 + (k % 8) / 2].b[k >= 8 ? 1 : 0], k % 2);
  }

  struct PendingCopy {
    bf16* dst;
    unsigned char bytes[16];  // zeros for a zero-filling copy
  };

  char* smem_;
  size_t smem_bytes_;
  MmaSlot* slots_;
  std::vector<PendingCopy> uncommitted_;
  std::deque<std::vector<PendingCopy>> committed_;  // oldest first
};

// Runs body(ctx) for every thread of a (grid_x, grid_y) grid of kThreads-thread blocks.
template <typename Body>
void RunFlash(int grid_x, int grid_y, size_t smem_bytes, const Body& body) {
  std::vector<char> smem(smem_bytes + 128);
  std::vector<MmaSlot> slots(kThreads);
  char* base =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(smem.data()) + 127) / 128 * 128);
  emu::RunGrid(dim3(grid_x, grid_y), dim3(kThreads), [&] {
    FiberCtx ctx(base, smem_bytes, slots.data());
    if (ctx.tid() == 0) std::memset(base, 0xff, smem_bytes);  // NaNs, every block
    ctx.sync();
    body(ctx);
  });
}

}  // namespace forge::cuda::flash

#endif  // FORGE_WORKER_CUDA_FLASH_ATTENTION_EMULATION_H_
