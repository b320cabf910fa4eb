// Each CUDA kernel (and the cuBLASLt dense layer) against the CPU engine on fresh random
// inputs. fp32 kernels must match within 1e-5 relative (plus a small absolute floor for values
// near zero); bf16 kernels, whose inputs and outputs are rounded to 8 bits of mantissa, within
// 1e-2. Also: every kernel gives the same bits when run twice. Skips without a CUDA device.
//
// Built twice: forge_cuda_kernels_test runs the kernels on the GPU (label gpu), and
// forge_cuda_kernels_emulation_test runs the same kernels and launchers on CPU threads
// (cuda_emulation.h; label unit), so their logic is checked in CI too. The cuBLASLt test is
// GPU-only.
#include "worker/cuda/kernels.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/cuda_util.h"
#include "worker/cuda/gemm.h"
#include "worker/cuda/test_util.h"
#include "worker/engine/adamw.h"
#include "worker/engine/attention.h"
#include "worker/engine/cross_entropy.h"
#include "worker/engine/gelu.h"
#include "worker/engine/gemm_layout.h"
#include "worker/engine/grad_clip.h"
#include "worker/engine/layernorm.h"
#include "worker/engine/matmul.h"
#include "worker/engine/thread_pool.h"

namespace forge::cuda {
namespace {

using testing::AfterPadding;
using testing::Dev;
using testing::DevInts;
using testing::ExpectClose;
using testing::ExpectCloseInNorm;
using testing::ExpectSameBits;
using testing::Random;
using testing::Rounded;
using testing::UnpadRows;
using testing::Vec;

#define REQUIRE_CUDA_DEVICE()                                                         \
  do {                                                                                \
    if (!testing::HaveDevice()) GTEST_SKIP() << "no CUDA device answers: skipped"; \
  } while (0)

template <typename T>
constexpr float Tolerance() {
  return std::is_same_v<T, float> ? 1e-5f : 1e-2f;
}

void Sync() { ASSERT_EQ(testing::Synchronize(), cudaSuccess); }

template <typename T>
class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override { REQUIRE_CUDA_DEVICE(); }
  engine::ThreadPool pool_{1};
};

using Types = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(KernelTest, Types);

// Widths that the backward takes in one kernel: 64 (one chunk of 32 packs, partly filled),
// 328 (2 or 3 chunks, the last partly filled) and the widest, 128 packs (4 full chunks);
// 1032, too wide for that (129 packs), which takes the input-gradient kernel and the column
// reduction, spanning several column tiles, the last partly; and 90, which takes the
// element-wise loops. 197 rows: seven parts of 32 rows and one of 5, where three warps of the
// one kernel have no row.
TYPED_TEST(KernelTest, LayerNormForwardAndBackward) {
  using T = TypeParam;
  const int N = 197;
  constexpr int kWidestInOneKernel = 128 * (16 / static_cast<int>(sizeof(T)));
  for (const int C : {64, 328, kWidestInOneKernel, 1032, 90}) {
    SCOPED_TRACE(::testing::Message() << "C=" << C);
    const Vec x = Rounded<T>(Random(N * C, 1, 2.0f)), dy = Rounded<T>(Random(N * C, 2));
    const Vec w = Random(C, 3), b = Random(C, 4), dinp0 = Rounded<T>(Random(N * C, 5));
    Vec out(N * C), mean(N), rstd(N);
    engine::LayerNormForward<float>(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                    b.data(), N, C, this->pool_);
    Vec dinp = dinp0, dw(C, 0.5f), db(C, -0.5f);
    engine::LayerNormBackward<float>(dinp.data(), dw.data(), db.data(), dy.data(), x.data(),
                                     w.data(), mean.data(), rstd.data(), N, C, this->pool_);

    Dev<T> gx(x), gout(N * C), gdy(dy), gdinp(dinp0);
    Dev<float> gw(w), gb(b), gmean(N), grstd(N), gdw(Vec(C, 0.5f)), gdb(Vec(C, -0.5f));
    Dev<float> scratch(ColumnReduceScratchFloats(N, C));
    ASSERT_EQ(LayerNormForward<T>(gout.get(), gmean.get(), grstd.get(), gx.get(), gw.get(),
                                  gb.get(), N, C, nullptr),
              cudaSuccess);
    ASSERT_EQ(LayerNormBackward<T>(gdinp.get(), gdw.get(), gdb.get(), scratch.get(), gdy.get(),
                                   gx.get(), gw.get(), gmean.get(), grstd.get(), N, C, nullptr),
              cudaSuccess);
    Sync();
    const float tol = Tolerance<T>();
    ExpectClose(gout.Download(), out, tol, "out");
    ExpectClose(gmean.Download(), mean, 1e-5f, "mean");
    ExpectClose(grstd.Download(), rstd, 1e-5f, "rstd");
    ExpectClose(gdinp.Download(), dinp, tol, "dinp");
    ExpectClose(gdw.Download(), dw, 1e-4f, "dweight");  // fp32 sums of 197 rows
    ExpectClose(gdb.Download(), db, 1e-4f, "dbias");
  }
}

// The gradient norm over more floats than one pass of its grid reads (512 blocks of 256
// threads, 8 floats each), against a sum in double here; clipped and not.
TEST(OptimizerKernelTest, GradNormOverMoreThanOnePassOfTheGrid) {
  REQUIRE_CUDA_DEVICE();
  const size_t n = (size_t{512} * 256 * 8) + 4099;
  const Vec grads = Random(n, 24, 2.0f);
  double sum = 0;
  for (const float g : grads) sum += double{g} * g;
  const double want = std::sqrt(sum) * 0.5;
  Dev<float> gg(grads), norm(2);
  Dev<double> scratch(GradNormScratchDoubles(n));
  for (const float max_norm : {0.0f, 10.0f}) {
    ASSERT_EQ(GradNorm(norm.get(), scratch.get(), gg.get(), n, 0.5f, max_norm, nullptr),
              cudaSuccess);
    Sync();
    const Vec got = norm.Download();
    EXPECT_NEAR(got[0], want, 1e-6 * want);
    EXPECT_NEAR(got[1], max_norm > 0 ? 0.5 * max_norm / want : 0.5, 1e-6) << max_norm;
  }
}

// The bias gradient (column sums, added to what is there) over widths that span column tiles
// in packs (304) and element by element (42), and rows that end inside a row part.
TYPED_TEST(KernelTest, BiasGradient) {
  using T = TypeParam;
  const int N = 600;  // 19 row parts of 32, the last partial: more than the finishing lanes
  for (const int C : {304, 42}) {
    SCOPED_TRACE(::testing::Message() << "C=" << C);
    const Vec dy = Rounded<T>(Random(size_t{1} * N * C, 14));
    Vec want(C);
    for (int c = 0; c < C; ++c) {
      double acc = 1.0;  // the gradient already there
      for (int n = 0; n < N; ++n) acc += dy[size_t{1} * n * C + c];
      want[c] = static_cast<float>(acc);
    }
    Dev<T> gdy(dy);
    Dev<float> gdbias(Vec(C, 1.0f)), scratch(ColumnReduceScratchFloats(N, C));
    ASSERT_EQ(BiasGrad<T>(gdbias.get(), scratch.get(), gdy.get(), N, C, nullptr), cudaSuccess);
    Sync();
    ExpectClose(gdbias.Download(), want, 1e-5f, "dbias");
  }
}

// 10007 entries: a 7-entry tail; from a 16-byte boundary (the packs) and one entry past it
// (the element-wise loop).
TYPED_TEST(KernelTest, GeluForwardAndBackward) {
  using T = TypeParam;
  const size_t n = 10007;
  const Vec x = Rounded<T>(Random(n, 6, 3.0f)), dy = Rounded<T>(Random(n, 7));
  Vec out(n), dinp(n);
  engine::GeluForward<float>(out.data(), x.data(), n, this->pool_);
  engine::GeluBackward<float>(dinp.data(), x.data(), dy.data(), n, this->pool_);
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset);
    auto at = [&](const Vec& v) { return AfterPadding(offset, v); };
    Dev<T> gx(at(x)), gout(Vec(n + offset, 5.0f)), gdy(at(dy));
    ASSERT_EQ(GeluForward<T>(gout.get() + offset, gx.get() + offset, n, nullptr), cudaSuccess);
    ASSERT_EQ(
        GeluBackward<T>(gdy.get() + offset, gx.get() + offset, gdy.get() + offset, n, nullptr),
        cudaSuccess);  // in place
    Sync();
    ExpectClose(gout.Download(), at(out), Tolerance<T>(), "gelu");
    // The engine's tanh is an approximation (about 2e-7 absolute, fast_math.h), which the
    // derivative's 1 + t and 1 - t^2 magnify where x is large; kernels use tanhf.
    ExpectClose(gdy.Download(), at(dinp), Tolerance<T>(), "gelu backward",
                std::is_same_v<T, float> ? 5e-6f : 0.0f);
  }
}

struct AttentionShape {
  int B, T, C, H;
};

TYPED_TEST(KernelTest, AttentionForwardAndBackward) {
  using T = TypeParam;
  // Lengths that are not multiples of the tiles; head sizes 64 and 32.
  for (const AttentionShape& s : {AttentionShape{2, 77, 128, 2}, AttentionShape{1, 130, 128, 4},
                                  AttentionShape{3, 5, 64, 1}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C
                                      << " H=" << s.H);
    const size_t n3 = size_t{1} * s.B * s.T * 3 * s.C, n = size_t{1} * s.B * s.T * s.C;
    const Vec qkv = Rounded<T>(Random(n3, 8)), dy = Rounded<T>(Random(n, 9));
    Vec y(n), att(size_t{1} * s.B * s.H * s.T * s.T), dqkv(n3), scratch(att.size());
    engine::AttentionForward<float>(y.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.H,
                                    this->pool_);
    engine::AttentionBackward<float>(dqkv.data(), scratch.data(), dy.data(), qkv.data(),
                                     att.data(), s.B, s.T, s.C, s.H, this->pool_);
    Dev<T> gqkv(qkv), gy(n), gdy(dy), gdqkv(n3);
    Dev<float> lse(size_t{1} * s.B * s.H * s.T), delta(size_t{1} * s.B * s.H * s.T);
    ASSERT_EQ(AttentionForward<T>(gy.get(), lse.get(), gqkv.get(), s.B, s.T, s.C, s.H, nullptr),
              cudaSuccess);
    // The backward reads y; give it the CPU's (rounded to T), so dqkv is compared on equal
    // inputs.
    Dev<T> cpu_y(Rounded<T>(y));
    ASSERT_EQ(AttentionBackward<T>(gdqkv.get(), delta.get(), gdy.get(), gqkv.get(), cpu_y.get(),
                                   lse.get(), s.B, s.T, s.C, s.H, nullptr),
              cudaSuccess);
    Sync();
    ExpectClose(gy.Download(), y, Tolerance<T>(), "y");
    // dS = P (dP - delta) cancels where dP is close to delta (delta comes from y, rounded to
    // T): a few elements are off by far more than the tensor is, so the gradient is judged in
    // norm, with a bound on its worst element (test_util.h).
    if (std::is_same_v<T, float>) {
      ExpectCloseInNorm(gdqkv.Download(), dqkv, 1e-5, 1e-3, "dqkv");
    } else {
      ExpectCloseInNorm(gdqkv.Download(), dqkv, 1e-2, 0.3, "dqkv");
    }
  }
  // More (sequence, head) pairs than the grid's y dimension holds are refused before anything
  // is launched or read.
  EXPECT_EQ(AttentionForward<T>(nullptr, nullptr, nullptr, 65536, 8, 64, 1, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(AttentionBackward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4096, 8,
                                 1024, 16, nullptr),
            cudaErrorInvalidValue);
}

// The GEMM attention's softmax steps (attention_gemm.h) on padded rows of scores, against
// the same maths in double here: the forward's probabilities and log-sum-exp, the backward's
// recomputed probabilities and score gradients; the padding is left alone.
TYPED_TEST(KernelTest, AttentionSoftmaxStepsOnPaddedRows) {
  using T = TypeParam;
  const int H = 3, Tq = 37, ld = 40;  // rows 40 apart: 3 padding columns
  const float scale = 0.125f;
  const size_t n = size_t{1} * H * Tq * ld;
  const Vec scores = Random(n, 21, 4.0f), dprobs = Random(n, 22), delta = Random(H * Tq, 23);
  Vec want_p(n, 0.0f), want_ds(n, 0.0f), want_lse(H * Tq);
  for (int r = 0; r < H * Tq; ++r) {
    const int i = r % Tq;
    double m = -INFINITY, sum = 0;
    for (int j = 0; j <= i; ++j) m = std::max(m, double{scores[size_t{1} * r * ld + j]} * scale);
    for (int j = 0; j <= i; ++j) sum += std::exp(double{scores[size_t{1} * r * ld + j]} * scale - m);
    want_lse[r] = static_cast<float>(m + std::log(sum));
    for (int j = 0; j <= i; ++j) {
      const size_t e = size_t{1} * r * ld + j;
      const double p = std::exp(double{scores[e]} * scale - want_lse[r]);
      want_p[e] = static_cast<float>(p);
      want_ds[e] = static_cast<float>(p * (double{dprobs[e]} - delta[r]) * scale);
    }
  }
  const Vec sentinel(n, 7.0f);
  Dev<float> gs(scores), gdp(dprobs), gdelta(delta), glse(H * Tq);
  Dev<T> gp(sentinel), gds(sentinel);
  ASSERT_EQ(AttentionSoftmax<T>(gp.get(), glse.get(), gs.get(), H * Tq, Tq, ld, scale, nullptr),
            cudaSuccess);
  Sync();
  ExpectClose(glse.Download(), want_lse, 1e-5f, "lse");
  ExpectClose(UnpadRows(gp.Download(), H * Tq, Tq, ld, 7.0f),
              UnpadRows(want_p, H * Tq, Tq, ld, 0.0f), Tolerance<T>(), "probabilities");
  ASSERT_EQ(AttentionSoftmaxBackward<T>(gp.get(), gds.get(), gs.get(), gdp.get(), glse.get(),
                                        gdelta.get(), H * Tq, Tq, ld, scale, nullptr),
            cudaSuccess);
  Sync();
  ExpectClose(UnpadRows(gds.Download(), H * Tq, Tq, ld, 7.0f),
              UnpadRows(want_ds, H * Tq, Tq, ld, 0.0f), Tolerance<T>(), "score gradients");
}

// Rows of N x V logits at each pitch in `pitches` against the CPU engine: the losses alone,
// then losses and gradients into another buffer and in place; through CrossEntropy (its choice
// of kernel) and, with `and_streaming`, the streaming kernel whatever the row.
template <typename T>
void CheckCrossEntropy(int N, int V, std::initializer_list<int> pitches, uint32_t seed,
                       bool and_streaming, engine::ThreadPool& pool) {
  constexpr float kPad = 0x1p100f;  // exact in bf16; would swamp the row max, were it read
  Vec logits = Rounded<T>(Random(size_t{1} * N * V, seed, 3.0f));
  std::vector<int32_t> targets(N);
  for (int n = 0; n < N; ++n) targets[n] = n % 5 == 4 ? -1 : (n * 7919) % V;  // some ignored
  targets[1] = V - 1;  // the last entry of a row (in the tail)
  targets[2] = 8;      // the first entry of a thread's chunk
  // Masked entries: a -inf logit adds nothing, and must not make the row NaN (the first
  // entry a thread sees, and a later one).
  logits[size_t{3} * V] = -INFINITY;
  logits[size_t{3} * V + 2300] = -INFINITY;
  const float scale = 1.0f / 30;
  Vec losses(N), dlogits(logits.size());
  engine::CrossEntropyForward<float>(losses.data(), logits.data(), targets.data(), N, V, pool);
  engine::CrossEntropyBackward<float>(dlogits.data(), logits.data(), targets.data(), scale, N, V,
                                      pool);
  using Fn =
      cudaError_t (*)(float*, T*, const T*, const int32_t*, float, int, int, int, cudaStream_t);
  for (const auto& [name, ce] :
       {std::pair<const char*, Fn>{"CrossEntropy", &CrossEntropy<T>},
        std::pair<const char*, Fn>{"streaming", &CrossEntropyStreaming<T>}}) {
    if (ce != &CrossEntropy<T> && !and_streaming) continue;
    for (const int ld : pitches) {
      SCOPED_TRACE(::testing::Message() << name << ", V " << V << ", pitch " << ld);
      Vec pitched(size_t{1} * N * ld, kPad);
      for (int n = 0; n < N; ++n) {
        std::copy_n(logits.begin() + size_t{1} * n * V, V, pitched.begin() + size_t{1} * n * ld);
      }
      Dev<T> glogits(pitched);
      ASSERT_EQ(reinterpret_cast<uintptr_t>(glogits.get()) % 16, 0u) << "an aligned row start";
      Dev<float> glosses(N);
      DevInts gt(targets);
      ASSERT_EQ(ce(glosses.get(), nullptr, glogits.get(), gt.get(), scale, N, V, V - 1, nullptr),
                cudaErrorInvalidValue)
          << "a pitch shorter than a row";
      ASSERT_EQ(ce(glosses.get(), nullptr, glogits.get(), gt.get(), scale, N, V, ld, nullptr),
                cudaSuccess);
      Sync();
      ExpectClose(glosses.Download(), losses, 1e-5f, "losses (forward only)");
      // Into a separate buffer, then in place.
      Dev<T> gout(Vec(pitched.size(), kPad));
      ASSERT_EQ(ce(glosses.get(), gout.get(), glogits.get(), gt.get(), scale, N, V, ld, nullptr),
                cudaSuccess);
      Sync();
      ExpectClose(UnpadRows(gout.Download(), N, V, ld, kPad), dlogits, Tolerance<T>(),
                  "dlogits (separate)");
      ASSERT_EQ(ce(glosses.get(), glogits.get(), glogits.get(), gt.get(), scale, N, V, ld, nullptr),
                cudaSuccess);
      Sync();
      ExpectClose(glosses.Download(), losses, 1e-5f, "losses");
      ExpectClose(UnpadRows(glogits.Download(), N, V, ld, kPad), dlogits, Tolerance<T>(),
                  "dlogits");
    }
  }
}

// The three kernels behind CrossEntropy. An odd vocabulary in padded rows: the padding is
// neither read nor written. 2501 entries: at pitch 2504 (a multiple of 16 bytes, as the
// backend's logits) the row is held in registers (a block of 64 threads for bf16, 96 for fp32,
// each holding up to 8 packs) with a 5-entry straddling pack; at pitch 2502 the streaming
// kernel's entry-by-entry loop, over more than one pass of its 256 threads. Then the longest
// row held (8 packs for each of 1024 threads, less 3 entries) and the shortest not, which
// CrossEntropy gives the streaming kernel's 16-byte loads. The first two shapes also run on
// the streaming kernel directly (for the last, CrossEntropy already does).
TYPED_TEST(KernelTest, CrossEntropyLossAndGradient) {
  using T = TypeParam;
  CheckCrossEntropy<T>(37, 2501, {2504, 2502}, 10, /*and_streaming=*/true, this->pool_);
  constexpr int kHeldMax = 1024 * 8 * (16 / sizeof(T));
  CheckCrossEntropy<T>(5, kHeldMax - 3, {kHeldMax}, 11, /*and_streaming=*/true, this->pool_);
  CheckCrossEntropy<T>(5, kHeldMax + 7, {kHeldMax + 8}, 12, /*and_streaming=*/false, this->pool_);
}

// A NaN logit makes its row's loss NaN (so a diverged run shows it), in the held kernel and
// the streaming one, also when every entry one thread owns is NaN: row 0's
// entries 8..15 are a whole thread's (the second of 32 threads holding 8 bf16, or the third
// and fourth holding 4 floats) in both kernels, and a thread whose entries are all NaN has no
// finite maximum. Row 1 is untouched.
TYPED_TEST(KernelTest, CrossEntropyNaNLogitsGiveANaNLoss) {
  using T = TypeParam;
  const int N = 2, V = 16;
  Vec logits = Rounded<T>(Random(size_t{1} * N * V, 13, 3.0f));
  for (int c = 8; c < 16; ++c) logits[c] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<int32_t> targets = {0, 5};
  Vec losses(N);
  engine::CrossEntropyForward<float>(losses.data(), logits.data() + V, targets.data() + 1, 1, V,
                                     this->pool_);  // row 1 only
  // Pitch 16: the held kernel, or the streaming one's 16-byte loads when forced; 18: the
  // streaming one's entry-by-entry loop.
  for (const auto& [ld, streaming] :
       {std::pair{16, false}, std::pair{16, true}, std::pair{18, false}}) {
    SCOPED_TRACE(::testing::Message() << "pitch " << ld << (streaming ? ", streaming" : ""));
    Vec pitched(size_t{1} * N * ld, 0.0f);
    for (int n = 0; n < N; ++n) {
      std::copy_n(logits.begin() + size_t{1} * n * V, V, pitched.begin() + size_t{1} * n * ld);
    }
    Dev<T> glogits(pitched);
    Dev<float> glosses(N);
    DevInts gt(targets);
    ASSERT_EQ((streaming ? CrossEntropyStreaming<T> : CrossEntropy<T>)(glosses.get(), glogits.get(),
                                                                       glogits.get(), gt.get(),
                                                                       1.0f, N, V, ld, nullptr),
              cudaSuccess);
    Sync();
    const Vec got = glosses.Download();
    EXPECT_TRUE(std::isnan(got[0])) << "row 0's loss is " << got[0];
    EXPECT_NEAR(got[1], losses[0], 1e-5f * std::abs(losses[0]));
    const Vec d = glogits.Download();
    for (int c = 0; c < V; ++c) EXPECT_TRUE(std::isnan(d[c])) << "row 0's gradient at " << c;
  }
}

// delta = the rowwise dot product of dy and y over each head, for head sizes that take the
// 16-byte loads (16: two bf16 packs, four fp32 ones) and one that does not (10), and for rows
// that do not start on 16 bytes (the element-wise loop).
TYPED_TEST(KernelTest, AttentionDelta) {
  using T = TypeParam;
  for (const AttentionShape& s : {AttentionShape{2, 37, 48, 3}, AttentionShape{3, 11, 20, 2}}) {
    for (const int offset : {0, 1}) {
      SCOPED_TRACE(::testing::Message() << "C=" << s.C << " H=" << s.H << " offset " << offset);
      const size_t n = size_t{1} * s.B * s.T * s.C, rows = size_t{1} * s.B * s.H * s.T;
      const Vec dy = Rounded<T>(Random(n + offset, 40)), y = Rounded<T>(Random(n + offset, 41));
      const int hs = s.C / s.H;
      Vec want(rows);
      for (size_t r = 0; r < rows; ++r) {
        const size_t i = r % s.T, bh = r / s.T, b = bh / s.H, h = bh % s.H;
        const size_t off = (b * s.T + i) * s.C + h * hs + offset;
        double acc = 0;
        for (int d = 0; d < hs; ++d) acc += double{dy[off + d]} * y[off + d];
        want[r] = static_cast<float>(acc);
      }
      Dev<T> gdy(dy), gy(y);
      Dev<float> gdelta(Vec(rows, 7.0f));
      ASSERT_EQ(AttentionDelta<T>(gdelta.get(), gdy.get() + offset, gy.get() + offset, s.B, s.T,
                                  s.C, s.H, nullptr),
                cudaSuccess);
      Sync();
      ExpectClose(gdelta.Download(), want, 1e-5f, "delta");
    }
  }
}

// Widths 40 (the embedding in 16-byte packs) and 42 (element by element).
TYPED_TEST(KernelTest, EmbeddingsAndBiasGradient) {
  using T = TypeParam;
  const int B = 3, Tq = 17, V = 11;
  for (const int C : {40, 42}) {
    SCOPED_TRACE(::testing::Message() << "C=" << C);
    std::vector<int32_t> tokens(B * Tq);
    for (int i = 0; i < B * Tq; ++i) tokens[i] = (i * 5) % V;  // repeated tokens
    const Vec wte = Random(size_t{1} * V * C, 11), wpe = Random(size_t{1} * Tq * C, 12);
    const Vec dx = Rounded<T>(Random(size_t{1} * B * Tq * C, 13));
    Vec out(dx.size()), dwte(wte.size(), 0.25f), dwpe(wpe.size(), 0.0f), dbias(C, 1.0f);
    for (int n = 0; n < B * Tq; ++n) {
      for (int c = 0; c < C; ++c) {
        out[n * C + c] = wte[tokens[n] * C + c] + wpe[(n % Tq) * C + c];
        dwte[tokens[n] * C + c] += dx[n * C + c];
        dwpe[(n % Tq) * C + c] += dx[n * C + c];
        dbias[c] += dx[n * C + c];
      }
    }
    // Buckets as the backend builds them.
    std::vector<int32_t> order(B * Tq), start, bucket;
    for (int i = 0; i < B * Tq; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
    for (int p = 0; p < B * Tq; ++p) {
      if (p == 0 || tokens[order[p]] != tokens[order[p - 1]]) {
        start.push_back(p);
        bucket.push_back(tokens[order[p]]);
      }
    }
    start.push_back(B * Tq);
    DevInts gtok(tokens), gorder(order), gstart(start), gbucket(bucket);
    Dev<float> gwte(wte), gwpe(wpe), gdwte(Vec(wte.size(), 0.25f)), gdwpe(Vec(wpe.size(), 0.0f));
    Dev<float> gdbias(Vec(C, 1.0f)), scratch(ColumnReduceScratchFloats(B * Tq, C));
    Dev<T> gout(out.size()), gdx(dx);
    ASSERT_EQ(
        EmbeddingForward<T>(gout.get(), gtok.get(), gwte.get(), gwpe.get(), B, Tq, C, nullptr),
        cudaSuccess);
    ASSERT_EQ(EmbeddingBackwardWte<T>(gdwte.get(), gdx.get(), gorder.get(), gstart.get(),
                                      gbucket.get(), static_cast<int>(bucket.size()), C, nullptr),
              cudaSuccess);
    ASSERT_EQ(EmbeddingBackwardWpe<T>(gdwpe.get(), gdx.get(), B, Tq, C, nullptr), cudaSuccess);
    ASSERT_EQ(BiasGrad<T>(gdbias.get(), scratch.get(), gdx.get(), B * Tq, C, nullptr), cudaSuccess);
    Sync();
    ExpectClose(gout.Download(), out, Tolerance<T>(), "embedding");
    ExpectClose(gdwte.Download(), dwte, 1e-5f, "dwte");
    ExpectClose(gdwpe.Download(), dwpe, 1e-5f, "dwpe");
    ExpectClose(gdbias.Download(), dbias, 1e-5f, "dbias");
  }
}

#ifndef FORGE_CUDA_EMULATION  // cuBLASLt has no CPU emulation
TYPED_TEST(KernelTest, DenseLayerOnCublasLt) {
  using T = TypeParam;
  const cudaDataType_t type = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
  absl::StatusOr<std::unique_ptr<Matmul>> mm = Matmul::Create();
  ASSERT_TRUE(mm.ok()) << mm.status();
  for (engine::WeightLayout layout : {engine::WeightLayout::kInOut, engine::WeightLayout::kOutIn}) {
    const int M = 70, K = 48, N = 88;
    const bool in_out = layout == engine::WeightLayout::kInOut;
    const Vec inp = Rounded<T>(Random(size_t{1} * M * K, 14)),
              w = Rounded<T>(Random(size_t{1} * K * N, 15, 0.2f)),
              bias = Rounded<T>(Random(N, 16)), res = Rounded<T>(Random(size_t{1} * M * N, 17)),
              dout = Rounded<T>(Random(size_t{1} * M * N, 18));
    Vec out(size_t{1} * M * N), dinp(size_t{1} * M * K), dw(w.size(), 0.5f);
    engine::MatmulForward<float>(out.data(), inp.data(), w.data(), layout,
                                 in_out ? bias.data() : nullptr, in_out ? res.data() : nullptr, M,
                                 K, N, this->pool_);
    engine::MatmulBackward<float>(dinp.data(), dw.data(), nullptr, dout.data(), inp.data(),
                                  w.data(), layout, M, K, N, this->pool_);
    Dev<T> gin(inp), gw(w), gbias(bias), gres(res), gout(out.size()), gdout(dout),
        gdinp(dinp.size());
    Dev<float> gdw(Vec(w.size(), 0.5f));
    GemmOperands f;
    f.a = gw.get();
    f.b = gin.get();
    f.d = gout.get();
    if (in_out) {
      f.bias = gbias.get();
      f.c = gres.get();
      f.beta = 1.0f;
    }
    ASSERT_TRUE((*mm)->Run(engine::ForwardGemm(layout, M, K, N), type, type, f, nullptr).ok());
    GemmOperands bi;
    bi.a = gw.get();
    bi.b = gdout.get();
    bi.d = gdinp.get();
    ASSERT_TRUE((*mm)->Run(engine::InputGradGemm(layout, M, K, N), type, type, bi, nullptr).ok());
    const engine::GemmCall wg = engine::WeightGradGemm(layout, M, K, N);
    GemmOperands bw;
    bw.a = wg.a == engine::GemmOperand::kInput ? static_cast<const void*>(gin.get()) : gdout.get();
    bw.b = wg.b == engine::GemmOperand::kInput ? static_cast<const void*>(gin.get()) : gdout.get();
    bw.c = gdw.get();
    bw.d = gdw.get();
    bw.beta = 1.0f;
    ASSERT_TRUE((*mm)->Run(wg, type, CUDA_R_32F, bw, nullptr).ok());
    Sync();
    ExpectClose(gout.Download(), out, Tolerance<T>(), "dense forward");
    ExpectClose(gdinp.Download(), dinp, Tolerance<T>(), "dense input gradient");
    ExpectClose(gdw.Download(), dw, Tolerance<T>(), "dense weight gradient");
  }
}

#endif

TEST(OptimizerKernelTest, GradNormClipAndAdamWMatchTheCpu) {
  REQUIRE_CUDA_DEVICE();
  engine::ThreadPool pool(1);
  const size_t n = 300001;
  const Vec grads = Random(n, 20, 3.0f), params0 = Random(n, 21), m0 = Random(n, 22, 0.1f);
  Vec v0 = Random(n, 23, 0.1f);
  for (float& x : v0) x = x * x;
  // CPU: scale by 1/4, clip to norm 1, one AdamW step at t = 3 with decay.
  Vec g = grads;
  engine::ScaleGrads(g.data(), n, 0.25f, pool);
  const double cpu_norm = engine::ClipGradNorm(g.data(), n, 1.0, pool);
  engine::ParamInfo info{"w", {static_cast<int64_t>(n)}, 0, n};
  info.shape = {1, static_cast<int64_t>(n)};  // 2-D: decayed
  engine::AdamWOptions o;
  engine::AdamW adam({info}, o);
  std::copy(m0.begin(), m0.end(), adam.m());
  std::copy(v0.begin(), v0.end(), adam.v());
  adam.set_step(2);
  Vec params = params0;
  adam.Step(params.data(), g.data(), 1e-3f, pool);

  // Arrays from 16-byte boundaries (the 16-byte packs; 300001 leaves a 1-entry tail), and one
  // entry past them (the element-wise loops).
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset);
    auto at = [&](const Vec& v) { return AfterPadding(offset, v); };
    auto from = [&](const Vec& x) { return Vec(x.begin() + offset, x.end()); };
    Dev<float> gg(at(grads)), gp(at(params0)), gm(at(m0)), gv(at(v0)), norm(2);
    Dev<bf16> lowp(n + offset);
    Dev<double> scratch(GradNormScratchDoubles(n));
    ASSERT_EQ(GradNorm(norm.get(), scratch.get(), gg.get() + offset, n, 0.25f, 1.0f, nullptr),
              cudaSuccess);
    const float c1 = 1.0f / (1.0f - static_cast<float>(std::pow(0.9, 3.0)));
    const float c2 = 1.0f / (1.0f - static_cast<float>(std::pow(0.95, 3.0)));
    ASSERT_EQ(AdamWUpdate<bf16>(gp.get() + offset, lowp.get() + offset, gg.get() + offset,
                                gm.get() + offset, gv.get() + offset, n, norm.get() + 1, 1e-3f,
                                o.beta1, o.beta2, o.eps, o.weight_decay, c1, c2, nullptr),
              cudaSuccess);
    Sync();
    const Vec got_norm = norm.Download();
    EXPECT_NEAR(got_norm[0], cpu_norm, 1e-5 * cpu_norm);
    ExpectClose(gp.Download(), at(params), 1e-5f, "params (and the padding untouched)");
    ExpectClose(gg.Download(), at(g), 1e-5f, "gradients, scaled and clipped in place");
    ExpectClose(gm.Download(), at(Vec(adam.m(), adam.m() + n)), 1e-5f, "m");
    ExpectClose(gv.Download(), at(Vec(adam.v(), adam.v() + n)), 1e-5f, "v");
    ExpectClose(from(lowp.Download()), params, 1e-2f, "bf16 copy");
  }
}

// AdamW over decay spans in one launch (per kMaxDecaySpansPerLaunch spans) against the same
// update launched span by span: the same bits. Spans of odd sizes (chunks straddle their
// ends), an empty one, and, second, more spans than one launch carries.
TEST(OptimizerKernelTest, AdamWOverDecaySpansMatchesOneLaunchPerSpan) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  std::vector<std::vector<DecaySpan>> cases = {
      {{0, 0.1f}, {5, 0.0f}, {5, 0.3f}, {300, 0.0f}, {317, 0.1f}, {1024, 0.0f}, {2999, 0.2f}}};
  std::vector<DecaySpan> many;
  for (size_t begin = 0; begin < 4000; begin += 1 + rng() % 17) {
    many.push_back({begin, many.size() % 2 == 0 ? 0.1f : 0.0f});
  }
  ASSERT_GT(many.size(), size_t{kMaxDecaySpansPerLaunch});
  cases.push_back(many);
  for (size_t which = 0; which < cases.size(); ++which) {
    SCOPED_TRACE(::testing::Message() << "case " << which);
    const std::vector<DecaySpan>& spans = cases[which];
    const size_t n = which == 0 ? 3001 : 4000;
    const Vec p0 = Random(n, 50), g0 = Random(n, 51, 1e-2f), m0 = Random(n, 52, 1e-3f);
    Vec v0 = Random(n, 53, 1e-2f);
    for (float& x : v0) x = x * x;
    Dev<float> factor(Vec{0.5f});
    Dev<float> ap(p0), ag(g0), am(m0), av(v0), bp(p0), bg(g0), bm(m0), bv(v0);
    Dev<bf16> alow(n), blow(n);
    ASSERT_EQ(AdamWUpdateSpans<bf16>(ap.get(), alow.get(), ag.get(), am.get(), av.get(), n,
                                     spans.data(), static_cast<int>(spans.size()), factor.get(),
                                     1e-2f, 0.9f, 0.95f, 1e-8f, 3.69f, 7.01f, nullptr),
              cudaSuccess);
    for (size_t r = 0; r < spans.size(); ++r) {
      const size_t begin = spans[r].begin, end = r + 1 < spans.size() ? spans[r + 1].begin : n;
      ASSERT_EQ(
          AdamWUpdate<bf16>(bp.get() + begin, blow.get() + begin, bg.get() + begin,
                            bm.get() + begin, bv.get() + begin, end - begin, factor.get(), 1e-2f,
                            0.9f, 0.95f, 1e-8f, spans[r].weight_decay, 3.69f, 7.01f, nullptr),
          cudaSuccess);
    }
    Sync();
    ExpectSameBits(ap.Download(), bp.Download(), "params");
    ExpectSameBits(ag.Download(), bg.Download(), "gradients");
    ExpectSameBits(am.Download(), bm.Download(), "m");
    ExpectSameBits(av.Download(), bv.Download(), "v");
    ExpectSameBits(alow.Download(), blow.Download(), "bf16 copy");
    // The decay reached the parameters: they differ from an update without it.
    Dev<float> cp(p0), cg(g0), cm(m0), cv(v0);
    ASSERT_EQ(AdamWUpdate<bf16>(cp.get(), nullptr, cg.get(), cm.get(), cv.get(), n, factor.get(),
                                1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, 3.69f, 7.01f, nullptr),
              cudaSuccess);
    Sync();
    const Vec without = cp.Download(), with = ap.Download();
    EXPECT_NE(without, with);
  }
  // Spans that do not start at 0, go backwards or past the end are refused.
  Dev<float> x(Vec(10, 1.0f)), factor(Vec{1.0f});
  for (const std::vector<DecaySpan>& bad :
       {std::vector<DecaySpan>{{1, 0.1f}}, std::vector<DecaySpan>{{0, 0.1f}, {6, 0.0f}, {4, 0.1f}},
        std::vector<DecaySpan>{{0, 0.1f}, {11, 0.0f}}, std::vector<DecaySpan>{}}) {
    EXPECT_EQ(AdamWUpdateSpans<bf16>(x.get(), nullptr, x.get(), x.get(), x.get(), 10, bad.data(),
                                     static_cast<int>(bad.size()), factor.get(), 1e-3f, 0.9f, 0.95f,
                                     1e-8f, 1.0f, 1.0f, nullptr),
              cudaErrorInvalidValue)
        << bad.size() << " spans";
  }
  EXPECT_EQ(x.Download(), Vec(10, 1.0f)) << "a refused update changes nothing";
}

TEST(DeterminismTest, AttentionBackwardGivesTheSameBitsTwice) {
  REQUIRE_CUDA_DEVICE();
#ifdef FORGE_CUDA_EMULATION
  GTEST_SKIP() << "the same bits twice is a property of the GPU's scheduling; the emulation "
                  "runs threads in one order";
#endif
  const int B = 2, Tq = 200, C = 256, H = 4;
  const size_t n3 = size_t{1} * B * Tq * 3 * C, n = size_t{1} * B * Tq * C;
  Dev<bf16> qkv(Random(n3, 30)), dy(Random(n, 31)), y(n), dqkv(n3);
  Dev<float> lse(size_t{1} * B * H * Tq), delta(size_t{1} * B * H * Tq);
  ASSERT_EQ(AttentionForward<bf16>(y.get(), lse.get(), qkv.get(), B, Tq, C, H, nullptr), cudaSuccess);
  Vec first;
  for (int run = 0; run < 2; ++run) {
    ASSERT_EQ(AttentionBackward<bf16>(dqkv.get(), delta.get(), dy.get(), qkv.get(), y.get(),
                                      lse.get(), B, Tq, C, H, nullptr),
              cudaSuccess);
    Sync();
    const Vec got = dqkv.Download();
    if (run == 0) {
      first = got;
    } else {
      ExpectSameBits(got, first, "second run");
    }
  }
}

}  // namespace
}  // namespace forge::cuda
