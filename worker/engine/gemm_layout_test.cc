// The CUDA backend's GEMM mapping, run through column-major cblas_sgemm and compared with the
// CPU engine's row-major dense layer on random shapes and both weight layouts.
#include "worker/engine/gemm_layout.h"

#include <cblas.h>

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "worker/engine/matmul.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {
namespace {

struct Buffers {
  std::vector<float> weight, inp, dout;
  const float* Of(GemmOperand o) const {
    return o == GemmOperand::kWeight ? weight.data()
                                     : o == GemmOperand::kInput ? inp.data() : dout.data();
  }
};

// C = op(A) op(B) + beta C, column-major, as cuBLAS would run `g`.
void RunColumnMajor(const GemmCall& g, const Buffers& b, float beta, float* c) {
  cblas_sgemm(CblasColMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, 1.0f, b.Of(g.a), g.lda,
              b.Of(g.b), g.ldb, beta, c, g.ldc);
}

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::abs(want[i]))) << what << " element " << i;
  }
}

class GemmLayoutTest : public ::testing::TestWithParam<WeightLayout> {};

TEST_P(GemmLayoutTest, MatchesTheRowMajorDenseLayer) {
  const WeightLayout layout = GetParam();
  ThreadPool pool(1);
  std::mt19937 rng(3);
  // Distinct M, K, N so a swapped dimension or leading dimension cannot pass.
  for (auto [M, K, N] : {std::tuple{5, 7, 3}, std::tuple{16, 9, 24}, std::tuple{1, 4, 11}}) {
    Buffers b{Random(size_t(K) * N, rng), Random(size_t(M) * K, rng), Random(size_t(M) * N, rng)};
    // Forward.
    std::vector<float> want(size_t(M) * N), got(size_t(M) * N, 0.0f);
    MatmulForward<float>(want.data(), b.inp.data(), b.weight.data(), layout, nullptr, nullptr, M,
                         K, N, pool);
    RunColumnMajor(ForwardGemm(layout, M, K, N), b, 0.0f, got.data());
    ExpectNear(got, want, "forward");
    // Backward: input and weight gradients (the weight gradient accumulates: beta = 1).
    std::vector<float> dinp_want(size_t(M) * K), dw_want(size_t(K) * N, 0.5f);
    MatmulBackward<float>(dinp_want.data(), dw_want.data(), nullptr, b.dout.data(), b.inp.data(),
                          b.weight.data(), layout, M, K, N, pool);
    std::vector<float> dinp_got(size_t(M) * K, 0.0f), dw_got(size_t(K) * N, 0.5f);
    RunColumnMajor(InputGradGemm(layout, M, K, N), b, 0.0f, dinp_got.data());
    RunColumnMajor(WeightGradGemm(layout, M, K, N), b, 1.0f, dw_got.data());
    ExpectNear(dinp_got, dinp_want, "input gradient");
    ExpectNear(dw_got, dw_want, "weight gradient");
  }
}

// Rows of `out` and `dout` padded to a pitch (the CUDA backend's logits): the products read
// and write the first N of each row and leave the padding alone.
TEST_P(GemmLayoutTest, PaddedOutputRowsAreReadAndWrittenAtTheirPitch) {
  const WeightLayout layout = GetParam();
  ThreadPool pool(1);
  std::mt19937 rng(5);
  constexpr float kPad = 7.0f;
  for (auto [M, K, N, ld] : {std::tuple{5, 8, 11, 16}, std::tuple{3, 4, 1, 8}}) {
    Buffers b{Random(size_t(K) * N, rng), Random(size_t(M) * K, rng), {}};
    const std::vector<float> dout = Random(size_t(M) * N, rng);
    b.dout.assign(size_t(M) * ld, kPad);
    for (int r = 0; r < M; ++r) {
      for (int c = 0; c < N; ++c) b.dout[size_t(r) * ld + c] = dout[size_t(r) * N + c];
    }
    std::vector<float> want(size_t(M) * N), got(size_t(M) * ld, kPad);
    MatmulForward<float>(want.data(), b.inp.data(), b.weight.data(), layout, nullptr, nullptr, M, K,
                         N, pool);
    RunColumnMajor(ForwardGemm(layout, M, K, N, ld), b, 0.0f, got.data());
    std::vector<float> rows(size_t(M) * N);
    for (int r = 0; r < M; ++r) {
      for (int c = 0; c < ld; ++c) {
        const float x = got[size_t(r) * ld + c];
        if (c < N) {
          rows[size_t(r) * N + c] = x;
        } else {
          ASSERT_EQ(x, kPad) << "padding of row " << r << " written";
        }
      }
    }
    ExpectNear(rows, want, "forward");
    std::vector<float> dinp_want(size_t(M) * K), dw_want(size_t(K) * N, 0.5f);
    MatmulBackward<float>(dinp_want.data(), dw_want.data(), nullptr, dout.data(), b.inp.data(),
                          b.weight.data(), layout, M, K, N, pool);
    std::vector<float> dinp_got(size_t(M) * K, 0.0f), dw_got(size_t(K) * N, 0.5f);
    RunColumnMajor(InputGradGemm(layout, M, K, N, ld), b, 0.0f, dinp_got.data());
    RunColumnMajor(WeightGradGemm(layout, M, K, N, ld), b, 1.0f, dw_got.data());
    ExpectNear(dinp_got, dinp_want, "input gradient");
    ExpectNear(dw_got, dw_want, "weight gradient");
  }
}

// The CPU dense layer's tile grid (matmul.cc) on shapes that take each of its paths: one row
// tile with its columns split so two threads share it (256 rows), two row tiles (700), and
// more than 1024 columns. Same bits at 1, 2 and 3 threads, and within float rounding of a
// plain double loop.
TEST_P(GemmLayoutTest, TiledDenseLayerGivesTheSameBitsAtAnyThreadCount) {
  const WeightLayout layout = GetParam();
  const bool in_out = layout == WeightLayout::kInOut;
  struct Shape {
    int m, k, n;
  };
  for (const Shape sh : {Shape{256, 96, 768}, Shape{700, 64, 300}, Shape{130, 48, 1500}}) {
    const int M = sh.m, K = sh.k, N = sh.n;
    std::mt19937 rng(M + N);
    const std::vector<float> inp = Random(size_t(M) * K, rng), weight = Random(size_t(K) * N, rng);
    const std::vector<float> bias = Random(N, rng), residual = Random(size_t(M) * N, rng);
    const std::vector<float> dout = Random(size_t(M) * N, rng);
    // dw_only: the backward without an input gradient, whose dW tiles alone make the tasks.
    std::vector<std::vector<float>> outs, dinps, dws, dbs, dw_only;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<float> out(size_t(M) * N), dinp(size_t(M) * K), dw(size_t(K) * N, 0.0f);
      std::vector<float> db(N, 0.0f);
      MatmulForward<float>(out.data(), inp.data(), weight.data(), layout,
                           in_out ? bias.data() : nullptr, residual.data(), M, K, N, pool);
      MatmulBackward<float>(dinp.data(), dw.data(), in_out ? db.data() : nullptr, dout.data(),
                            inp.data(), weight.data(), layout, M, K, N, pool);
      std::vector<float> dw2(size_t(K) * N, 0.0f);
      MatmulBackward<float>(nullptr, dw2.data(), nullptr, dout.data(), inp.data(), weight.data(),
                            layout, M, K, N, pool);
      dw_only.push_back(dw2);
      outs.push_back(out);
      dinps.push_back(dinp);
      dws.push_back(dw);
      dbs.push_back(db);
    }
    for (size_t t = 1; t < outs.size(); ++t) {
      EXPECT_EQ(outs[t], outs[0]) << M << "x" << K << "x" << N << " output, run " << t;
      EXPECT_EQ(dinps[t], dinps[0]) << M << "x" << K << "x" << N << " input gradient, run " << t;
      EXPECT_EQ(dws[t], dws[0]) << M << "x" << K << "x" << N << " weight gradient, run " << t;
      EXPECT_EQ(dbs[t], dbs[0]) << M << "x" << K << "x" << N << " bias gradient, run " << t;
      EXPECT_EQ(dw_only[t], dw_only[0]) << M << "x" << K << "x" << N << " dW alone, run " << t;
    }
    ExpectNear(dw_only[0], dws[0], "weight gradient without the input gradient");
    // W[k][n] is weight[k * N + n] (kInOut) or weight[n * K + k] (kOutIn).
    auto w = [&](int k, int n) {
      return in_out ? weight[size_t(k) * N + n] : weight[size_t(n) * K + k];
    };
    std::vector<float> want(size_t(M) * N), dinp_want(size_t(M) * K);
    for (int m = 0; m < M; ++m) {
      for (int n = 0; n < N; ++n) {
        double acc = (in_out ? bias[n] : 0.0) + residual[size_t(m) * N + n];
        for (int k = 0; k < K; ++k) acc += double{inp[size_t(m) * K + k]} * w(k, n);
        want[size_t(m) * N + n] = static_cast<float>(acc);
      }
      for (int k = 0; k < K; ++k) {
        double acc = 0;
        for (int n = 0; n < N; ++n) acc += double{dout[size_t(m) * N + n]} * w(k, n);
        dinp_want[size_t(m) * K + k] = static_cast<float>(acc);
      }
    }
    ExpectNear(outs[0], want, "tiled output");
    ExpectNear(dinps[0], dinp_want, "tiled input gradient");
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, GemmLayoutTest,
                         ::testing::Values(WeightLayout::kInOut, WeightLayout::kOutIn));

}  // namespace
}  // namespace forge::engine
