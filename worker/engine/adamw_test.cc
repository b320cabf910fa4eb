#include "worker/engine/adamw.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/grad_clip.h"

namespace forge::engine {
namespace {

// Reference AdamW in double for one element.
struct Reference {
  double p, m = 0, v = 0;
  void Step(double g, double lr, int t, double wd) {
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
    p -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p);
  }
};

// A 2-D weight (decayed) then a bias (not decayed), three steps with changing gradients,
// against the double reference within 1e-6 relative.
TEST(AdamW, MatchesReferenceAndDecaysOnlyMatrices) {
  const std::vector<ParamInfo> layout = {{"w", {2, 2}, 0, 4}, {"b", {3}, 4, 3}};
  AdamW opt(layout, AdamWOptions{.weight_decay = 0.1f});
  ASSERT_EQ(opt.num_params(), 7u);
  ThreadPool pool(2);
  std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.0f, 0.5f, -1.0f, 2.0f};
  std::vector<Reference> ref;
  for (float x : p) ref.push_back({x});
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g(7);
    for (int i = 0; i < 7; ++i) g[i] = 0.1f * (i - 3) * t + 0.05f;
    opt.Step(p.data(), g.data(), 0.01f, pool);
    for (int i = 0; i < 7; ++i) ref[i].Step(g[i], 0.01, t, i < 4 ? 0.1 : 0.0);
  }
  EXPECT_EQ(opt.step(), 3);
  for (int i = 0; i < 7; ++i) {
    EXPECT_NEAR(p[i], ref[i].p, 1e-6 * std::abs(ref[i].p) + 1e-7) << i;
    EXPECT_NEAR(opt.m()[i], ref[i].m, 1e-6 * std::abs(ref[i].m) + 1e-9) << i;
    EXPECT_NEAR(opt.v()[i], ref[i].v, 1e-6 * std::abs(ref[i].v) + 1e-9) << i;
  }
}

// At step 1 the bias-corrected update is g / |g|: each parameter moves by lr against its
// gradient's sign whatever the gradient's size; with zero gradient only decay moves it.
TEST(AdamW, FirstStepMovesByLearningRate) {
  const std::vector<ParamInfo> layout = {{"w", {1, 3}, 0, 3}, {"b", {1}, 3, 1}};
  AdamW opt(layout, AdamWOptions{.weight_decay = 0.5f});
  ThreadPool pool(1);
  std::vector<float> p = {1.0f, 1.0f, 1.0f, 1.0f};
  const std::vector<float> g = {1e-3f, -100.0f, 0.0f, 0.0f};
  opt.Step(p.data(), g.data(), 0.1f, pool);
  EXPECT_NEAR(p[0], 1.0f - 0.1f * (1.0f + 0.5f), 1e-5);
  EXPECT_NEAR(p[1], 1.0f - 0.1f * (-1.0f + 0.5f), 1e-5);
  EXPECT_NEAR(p[2], 1.0f - 0.1f * 0.5f, 1e-6);
  EXPECT_EQ(p[3], 1.0f);  // bias: no gradient, no decay
}

TEST(GradClip, ClipsToMaxNormAndReportsTheNormBefore) {
  ThreadPool pool(2);
  std::vector<float> g(200000);
  double sq = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = static_cast<float>(std::sin(0.001 * i));
    sq += double{g[i]} * g[i];
  }
  const double norm = std::sqrt(sq);
  EXPECT_NEAR(GlobalNorm(g.data(), g.size(), pool), norm, 1e-9 * norm);
  std::vector<float> unclipped = g;
  EXPECT_NEAR(ClipGradNorm(unclipped.data(), g.size(), 2 * norm, pool), norm, 1e-9 * norm);
  EXPECT_EQ(unclipped, g);  // under the limit: untouched
  EXPECT_NEAR(ClipGradNorm(unclipped.data(), g.size(), 0.0, pool), norm, 1e-9 * norm);
  EXPECT_EQ(unclipped, g);  // 0 = off
  EXPECT_NEAR(ClipGradNorm(g.data(), g.size(), 1.0, pool), norm, 1e-9 * norm);
  EXPECT_NEAR(GlobalNorm(g.data(), g.size(), pool), 1.0, 1e-6);
}

}  // namespace
}  // namespace forge::engine
