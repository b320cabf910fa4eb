// The flash attention's shape rules (flash_attention.h), shared by the GPU build and the
// emulated one.
#include "worker/cuda/flash_attention.h"
#include "worker/cuda/flash_attention_body.h"

namespace forge::cuda {

bool FlashAttentionHeadSizeSupported(int head_size) {
  return head_size == 16 || head_size == 32 || head_size == 64 || head_size == 128;
}

size_t FlashAttentionSmemBytes(int head_size) {
  auto most = [](size_t a, size_t b) { return a > b ? a : b; };
  switch (head_size) {
    case 16:
      return most(flash::ForwardSmem<16>::kBytes, flash::BackwardSmem<16>::kBytes);
    case 32:
      return most(flash::ForwardSmem<32>::kBytes, flash::BackwardSmem<32>::kBytes);
    case 64:
      return most(flash::ForwardSmem<64>::kBytes, flash::BackwardSmem<64>::kBytes);
    case 128:
      return most(flash::ForwardSmem<128>::kBytes, flash::BackwardSmem<128>::kBytes);
    default:
      return 0;
  }
}

}  // namespace forge::cuda
