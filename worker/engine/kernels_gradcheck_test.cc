// Each layer's backward against central finite differences of its forward, in double.
// Loss = sum(out ⊙ R) for a fixed random R, so dLoss/dout = R. A gradient passes when
// |analytic - numeric| <= kAtol + kRtol · |numeric| for every element; the tests print the
// worst ratio |analytic - numeric| / (kAtol + kRtol · |numeric|) seen.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/attention.h"
#include "worker/engine/cross_entropy.h"
#include "worker/engine/fast_math.h"
#include "worker/engine/gelu.h"
#include "worker/engine/layernorm.h"
#include "worker/engine/matmul.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {
namespace {

// Central differences with h = 1e-5 on O(1) values: truncation ~1e-10, rounding ~1e-11.
constexpr double kStep = 1e-5;
constexpr double kRtol = 1e-6;
constexpr double kAtol = 1e-8;

using Vec = std::vector<double>;

Vec Random(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Vec v(n);
  for (double& x : v) x = normal(gen);
  return v;
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks `analytic` against finite differences of `loss` with respect to `*x`.
void ExpectGradient(const char* what, Vec* x, const std::function<double()>& loss,
                    const Vec& analytic) {
  ASSERT_EQ(x->size(), analytic.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < x->size(); ++i) {
    const double saved = (*x)[i];
    (*x)[i] = saved + kStep;
    const double up = loss();
    (*x)[i] = saved - kStep;
    const double down = loss();
    (*x)[i] = saved;
    const double numeric = (up - down) / (2 * kStep);
    const double ratio = std::abs(analytic[i] - numeric) / (kAtol + kRtol * std::abs(numeric));
    worst = std::max(worst, ratio);
    EXPECT_LE(ratio, 1.0) << what << "[" << i << "]: analytic " << analytic[i] << " numeric "
                          << numeric;
  }
  std::printf("%-28s %5zu elements, worst error/tolerance %.3g\n", what, x->size(), worst);
}

class GradCheck : public ::testing::TestWithParam<int> {
 protected:
  ThreadPool pool_{GetParam()};
};

TEST_P(GradCheck, LayerNorm) {
  const int N = 5, C = 13;
  Vec x = Random(N * C, 1), w = Random(C, 2), b = Random(C, 3), r = Random(N * C, 4);
  Vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                     pool_);
    return Dot(out, r);
  };
  loss();
  // dx starts non-zero: the backward must add to it.
  Vec dx(N * C, 0.5), dw(C, 0.0), db(C, 0.0);
  LayerNormBackward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(),
                    rstd.data(), N, C, pool_);
  for (double& v : dx) v -= 0.5;
  ExpectGradient("layernorm dx", &x, loss, dx);
  ExpectGradient("layernorm dweight", &w, loss, dw);
  ExpectGradient("layernorm dbias", &b, loss, db);
}

TEST_P(GradCheck, Gelu) {
  const int n = 41;
  Vec x(n), out(n), r = Random(n, 5);
  for (int i = 0; i < n; ++i) x[i] = -5.0 + 0.25 * i;  // through the curved part and beyond
  auto loss = [&] {
    GeluForward(out.data(), x.data(), n, pool_);
    return Dot(out, r);
  };
  loss();
  EXPECT_NEAR(out[20], 0.0, 1e-15);                 // gelu(0) = 0
  EXPECT_NEAR(out[24], 0.8411919906082768, 1e-12);  // gelu(1), tanh form
  Vec dx(n);
  GeluBackward(dx.data(), x.data(), r.data(), n, pool_);
  ExpectGradient("gelu dx", &x, loss, dx);
}

void CheckAttention(int B, int T, int C, int H, ThreadPool& pool, const char* name) {
  Vec qkv = Random(B * T * 3 * C, 6), r = Random(B * T * C, 7);
  Vec y(B * T * C), att(B * H * T * T);
  auto loss = [&] {
    AttentionForward(y.data(), att.data(), qkv.data(), B, T, C, H, pool);
    return Dot(y, r);
  };
  loss();
  // Rows are causal distributions.
  for (int t = 0; t < T; ++t) {
    double sum = 0;
    for (int j = 0; j < T; ++j) sum += att[t * T + j];
    EXPECT_NEAR(sum, 1.0, 1e-12);
    if (t + 1 < T) {
      EXPECT_EQ(att[t * T + t + 1], 0.0);
    }
  }
  Vec dqkv(qkv.size()), scratch(att.size());
  AttentionBackward(dqkv.data(), scratch.data(), r.data(), qkv.data(), att.data(), B, T, C, H,
                    pool);
  ExpectGradient(name, &qkv, loss, dqkv);
}

TEST_P(GradCheck, AttentionShort) { CheckAttention(2, 5, 8, 2, pool_, "attention T=5 dqkv"); }

// T = 70 spans two 64-query blocks.
TEST_P(GradCheck, AttentionTwoBlocks) { CheckAttention(1, 70, 4, 2, pool_, "attention T=70 dqkv"); }

TEST_P(GradCheck, CrossEntropy) {
  const int N = 4, V = 7;
  const std::vector<int32_t> targets = {3, -1, 0, 6};
  Vec logits = Random(N * V, 8, 2.0), losses(N);
  const double scale = 1.0 / 3.0;  // three counted tokens
  auto loss = [&] {
    CrossEntropyForward(losses.data(), logits.data(), targets.data(), N, V, pool_);
    return (losses[0] + losses[1] + losses[2] + losses[3]) * scale;
  };
  loss();
  EXPECT_EQ(losses[1], 0.0);
  double lse = 0;
  for (int j = 0; j < V; ++j) lse += std::exp(logits[j]);
  EXPECT_NEAR(losses[0], std::log(lse) - logits[3], 1e-12);
  Vec d(N * V);
  CrossEntropyBackward(d.data(), logits.data(), targets.data(), scale, N, V, pool_);
  ExpectGradient("cross-entropy dlogits", &logits, loss, d);
}

void CheckMatmul(int M, int K, int N, WeightLayout layout, bool with_bias, ThreadPool& pool,
                 const std::string& name) {
  Vec x = Random(M * K, 9), w = Random(K * N, 10), b = Random(N, 11), res = Random(M * N, 12);
  Vec r = Random(M * N, 13), out(M * N);
  const bool in_out = layout == WeightLayout::kInOut;
  auto loss = [&] {
    MatmulForward(out.data(), x.data(), w.data(), layout, with_bias ? b.data() : nullptr,
                  with_bias ? res.data() : nullptr, M, K, N, pool);
    return Dot(out, r);
  };
  loss();
  // One element by hand.
  double expect = with_bias ? b[N - 1] + res[(M - 1) * N + N - 1] : 0.0;
  for (int k = 0; k < K; ++k) {
    expect += x[(M - 1) * K + k] * (in_out ? w[k * N + N - 1] : w[(N - 1) * K + k]);
  }
  EXPECT_NEAR(out[(M - 1) * N + N - 1], expect, 1e-12);
  Vec dx(M * K), dw(K * N, 0.0), db(N, 0.0);
  MatmulBackward(dx.data(), dw.data(), with_bias ? db.data() : nullptr, r.data(), x.data(),
                 w.data(), layout, M, K, N, pool);
  ExpectGradient((name + " dx").c_str(), &x, loss, dx);
  ExpectGradient((name + " dweight").c_str(), &w, loss, dw);
  if (with_bias) {
    ExpectGradient((name + " dbias").c_str(), &b, loss, db);
    ExpectGradient((name + " dresidual").c_str(), &res, loss, r);
  }
}

// M = 130 spans two 128-row tiles.
TEST_P(GradCheck, MatmulBiasResidual) {
  CheckMatmul(130, 5, 7, WeightLayout::kInOut, true, pool_, "matmul+bias");
}

// N = 1030 splits into two column tiles; the tied-embedding layout.
TEST_P(GradCheck, MatmulOutInWide) {
  CheckMatmul(3, 3, 1030, WeightLayout::kOutIn, false, pool_, "matmul out-in");
}

INSTANTIATE_TEST_SUITE_P(Threads, GradCheck, ::testing::Values(1, 2));

// The float kernels use their own exp and tanh: within 2e-7 relative (exp) and 2e-7 absolute
// (tanh) of the C library's over the range the kernels see.
TEST(FastMath, ExpAndTanhMatchLibm) {
  double worst_exp = 0, worst_tanh = 0;
  for (float x = -80.0f; x <= 80.0f; x += 0.001953125f) {
    worst_exp = std::max(worst_exp, std::abs(Exp(x) - std::exp(double{x})) / std::exp(double{x}));
    worst_tanh = std::max(worst_tanh, std::abs(Tanh(x) - std::tanh(double{x})));
  }
  std::printf("fast exp max rel error %.3g, fast tanh max abs error %.3g\n", worst_exp, worst_tanh);
  EXPECT_LT(worst_exp, 2e-7);
  EXPECT_LT(worst_tanh, 2e-7);
  EXPECT_EQ(Exp(-1000.0f), std::exp(-87.0f));  // clamped, not zero or denormal
  EXPECT_EQ(Tanh(50.0f), 1.0f);
  EXPECT_EQ(Tanh(-50.0f), -1.0f);
}

// The float GELU runs 8 lanes at a time in a loop compiled for AVX2 and for the baseline
// (gelu.cc); its bits must be those of one value at a time (the scalar path, one SSE lane),
// whichever clone this CPU runs, or the weights would depend on the machine.
TEST(FastMath, GeluLanesGiveTheBitsOfOneValueAtATime) {
  std::printf("this CPU runs the %s clone\n", __builtin_cpu_supports("avx2") ? "AVX2" : "baseline");
  const size_t n = 1003;  // 125 vectors of 8 and a tail of 3
  std::mt19937 gen(12);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(n), dout(n), out(n), dx(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = normal(gen);
    dout[i] = normal(gen);
  }
  ThreadPool pool(1);
  GeluForward(out.data(), x.data(), n, pool);
  GeluBackward(dx.data(), x.data(), dout.data(), n, pool);
  for (size_t i = 0; i < n; ++i) {
    float one = 0, done = 0;
    GeluForward(&one, &x[i], 1, pool);
    GeluBackward(&done, &x[i], &dout[i], 1, pool);
    ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(one)) << "x = " << x[i];
    ASSERT_EQ(std::bit_cast<uint32_t>(dx[i]), std::bit_cast<uint32_t>(done)) << "x = " << x[i];
  }
}

}  // namespace
}  // namespace forge::engine
