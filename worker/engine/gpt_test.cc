#include "worker/engine/gpt.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "worker/engine/adamw.h"
#include "worker/engine/grad_clip.h"

namespace forge::engine {
namespace {

const ModelShape kGradCheckShape = {
    .layers = 2, .heads = 2, .width = 16, .context = 8, .vocab = 11};

std::vector<int32_t> RandomTokens(size_t n, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& t : v) t = dist(gen);
  return v;
}

template <typename T>
Gpt<T> MakeModel(const ModelShape& shape, int B, int Tq, ThreadPool* pool, uint64_t seed) {
  absl::StatusOr<Gpt<T>> model = Gpt<T>::Create(shape, B, Tq, pool);
  EXPECT_TRUE(model.ok()) << model.status();
  model->InitRandom(seed);
  return *std::move(model);
}

TEST(GptLayout, NamesOrderAndCountFollowHuggingFace) {
  for (const char* preset : {"tiny", "gpt2-124m-shape"}) {
    const ModelShape shape = *PresetShape(preset);
    const std::vector<ParamInfo> layout = GptParameterLayout(shape);
    ASSERT_EQ(layout.size(), 2u + 12u * shape.layers + 2u);
    size_t next = 0;
    for (const ParamInfo& p : layout) {
      EXPECT_EQ(p.offset, next) << p.name;
      EXPECT_EQ(p.count, static_cast<size_t>(std::accumulate(p.shape.begin(), p.shape.end(),
                                                             int64_t{1}, std::multiplies<>())));
      next += p.count;
    }
    EXPECT_EQ(static_cast<int64_t>(next), ParameterCount(shape)) << preset;
  }
  const std::vector<ParamInfo> layout = GptParameterLayout(kGradCheckShape);
  EXPECT_EQ(layout[0].name, "wte.weight");
  EXPECT_EQ(layout[0].shape, (std::vector<int64_t>{11, 16}));
  EXPECT_EQ(layout[1].name, "wpe.weight");
  EXPECT_EQ(layout[1].shape, (std::vector<int64_t>{8, 16}));
  const char* layer_names[] = {"ln_1.weight",      "ln_1.bias",          "attn.c_attn.weight",
                               "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                               "ln_2.weight",      "ln_2.bias",          "mlp.c_fc.weight",
                               "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(layout[14 + i].name, std::string("h.1.") + layer_names[i]);
  }
  EXPECT_EQ(layout[4].shape, (std::vector<int64_t>{16, 48}));   // c_attn [in, out]
  EXPECT_EQ(layout[12].shape, (std::vector<int64_t>{64, 16}));  // mlp.c_proj [in, out]
  EXPECT_EQ(layout[26].name, "ln_f.weight");
  EXPECT_EQ(layout[27].name, "ln_f.bias");
}

TEST(GptInit, GptTwoStatisticsAndSameBitsForSameSeed) {
  ThreadPool pool(1);
  const ModelShape shape = *PresetShape("tiny");
  Gpt<float> a = MakeModel<float>(shape, 1, 8, &pool, 7);
  Gpt<float> b = MakeModel<float>(shape, 1, 8, &pool, 7);
  Gpt<float> c = MakeModel<float>(shape, 1, 8, &pool, 8);
  EXPECT_EQ(std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.params(), c.params(), a.num_params() * sizeof(float)), 0);
  for (const ParamInfo& p : a.Parameters()) {
    double sum = 0, sq = 0;
    for (size_t i = 0; i < p.count; ++i) {
      sum += a.params()[p.offset + i];
      sq += double{a.params()[p.offset + i]} * a.params()[p.offset + i];
    }
    const double mean = sum / p.count, rms = std::sqrt(sq / p.count);
    if (p.name.ends_with(".bias")) {
      EXPECT_EQ(rms, 0.0) << p.name;
    } else if (p.name.find("ln_") != std::string::npos) {
      EXPECT_EQ(mean, 1.0) << p.name;
      EXPECT_EQ(rms, 1.0) << p.name;
    } else {
      // >= 65,536 samples each: the sample std is within 2% of the target.
      const double want = p.name.ends_with("c_proj.weight") ? 0.02 / std::sqrt(8.0) : 0.02;
      EXPECT_NEAR(rms, want, 0.02 * want) << p.name;
      EXPECT_NEAR(mean, 0.0, 0.02 * want) << p.name;
    }
  }
}

TEST(GptApi, RejectsBadShapesArgumentsAndOrder) {
  ThreadPool pool(1);
  ModelShape bad = kGradCheckShape;
  bad.heads = 3;
  EXPECT_EQ(Gpt<float>::Create(bad, 1, 8, &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Gpt<float>::Create(kGradCheckShape, 1, 9, &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
  Gpt<float> model = MakeModel<float>(kGradCheckShape, 2, 8, &pool, 1);
  EXPECT_EQ(model.Backward().code(), absl::StatusCode::kFailedPrecondition);
  std::vector<int32_t> tokens(24, 1), targets(24, 2);
  EXPECT_EQ(model.Forward(tokens.data(), targets.data(), 3, 8).status().code(),
            absl::StatusCode::kInvalidArgument);  // batch 3 > max 2
  tokens[5] = 11;
  EXPECT_EQ(model.Forward(tokens.data(), targets.data(), 2, 8).status().code(),
            absl::StatusCode::kInvalidArgument);  // token == vocab
  tokens[5] = 1;
  targets[3] = 11;
  EXPECT_EQ(model.Forward(tokens.data(), targets.data(), 2, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  targets[3] = 2;
  ASSERT_TRUE(model.Forward(tokens.data(), nullptr, 2, 8).ok());
  EXPECT_EQ(model.Backward().code(), absl::StatusCode::kFailedPrecondition);
}

// Untrained, the model is close to uniform: loss ≈ ln(V). Ignored targets drop out of the
// mean, and logits do not depend on whether targets were given.
TEST(GptForward, LossIsMeanOverCountedTokens) {
  ThreadPool pool(2);
  const ModelShape shape = {.layers = 2, .heads = 4, .width = 64, .context = 32, .vocab = 50};
  Gpt<float> model = MakeModel<float>(shape, 2, 32, &pool, 3);
  std::vector<int32_t> tokens = RandomTokens(64, 50, 1), targets = RandomTokens(64, 50, 2);
  for (int i = 0; i < 64; i += 3) targets[i] = -1;
  ASSERT_TRUE(model.Forward(tokens.data(), nullptr, 2, 32).ok());
  std::vector<float> logits(model.logits(), model.logits() + 64 * 50);
  const float loss = *model.Forward(tokens.data(), targets.data(), 2, 32);
  EXPECT_EQ(std::memcmp(logits.data(), model.logits(), logits.size() * sizeof(float)), 0);
  double sum = 0;
  int count = 0;
  for (int i = 0; i < 64; ++i) {
    if (targets[i] < 0) {
      EXPECT_EQ(model.losses()[i], 0.0f);
    } else {
      sum += model.losses()[i];
      ++count;
    }
  }
  EXPECT_NEAR(loss, sum / count, 1e-6);
  EXPECT_NEAR(loss, std::log(50.0), 0.05);
}

// The whole model's gradient in double against central differences, every parameter.
TEST(GptGradient, MatchesFiniteDifferences) {
  ThreadPool pool(2);
  const int B = 2, Tq = 8;
  Gpt<double> model = MakeModel<double>(kGradCheckShape, B, Tq, &pool, 5);
  // Weights 5x GPT-2's init and random biases and LayerNorm parameters, so every path carries
  // a gradient well above the finite-difference noise.
  std::mt19937 gen(6);
  std::normal_distribution<double> normal(0.0, 0.1);
  for (const ParamInfo& p : model.Parameters()) {
    for (size_t i = p.offset; i < p.offset + p.count; ++i) {
      model.params()[i] = IsDecayed(p) ? 5.0 * model.params()[i] : model.params()[i] + normal(gen);
    }
  }
  std::vector<int32_t> tokens = RandomTokens(B * Tq, 11, 3), targets = RandomTokens(B * Tq, 11, 4);
  targets[5] = -1;
  ASSERT_TRUE(model.Forward(tokens.data(), targets.data(), B, Tq).ok());
  ASSERT_TRUE(model.Backward().ok());
  const std::vector<double> analytic(model.grads(), model.grads() + model.num_params());
  constexpr double kStep = 1e-5, kRtol = 1e-6, kAtol = 1e-8;
  double worst = 0;
  for (size_t i = 0; i < model.num_params(); ++i) {
    const double saved = model.params()[i];
    model.params()[i] = saved + kStep;
    const double up = *model.Forward(tokens.data(), targets.data(), B, Tq);
    model.params()[i] = saved - kStep;
    const double down = *model.Forward(tokens.data(), targets.data(), B, Tq);
    model.params()[i] = saved;
    const double numeric = (up - down) / (2 * kStep);
    const double ratio = std::abs(analytic[i] - numeric) / (kAtol + kRtol * std::abs(numeric));
    worst = std::max(worst, ratio);
    ASSERT_LE(ratio, 1.0) << "parameter element " << i << ": analytic " << analytic[i]
                          << " numeric " << numeric;
  }
  std::printf("model gradient: %zu parameters, worst error/tolerance %.3g (rtol %g, atol %g)\n",
              model.num_params(), worst, kRtol, kAtol);
}

// Backward adds into grads: two backward passes of one batch give exactly twice one.
TEST(GptGradient, BackwardAccumulates) {
  ThreadPool pool(2);
  Gpt<float> model = MakeModel<float>(kGradCheckShape, 2, 8, &pool, 5);
  std::vector<int32_t> tokens = RandomTokens(16, 11, 3), targets = RandomTokens(16, 11, 4);
  ASSERT_TRUE(model.Forward(tokens.data(), targets.data(), 2, 8).ok());
  ASSERT_TRUE(model.Backward().ok());
  const std::vector<float> once(model.grads(), model.grads() + model.num_params());
  ASSERT_TRUE(model.Forward(tokens.data(), targets.data(), 2, 8).ok());
  ASSERT_TRUE(model.Backward().ok());
  // Twice, up to rounding: an element that gets several terms per pass (wte, wpe, blocked
  // BLAS sums) adds them in a different grouping the second time. Tolerance 2e-6 relative
  // plus 1e-9; overwriting instead of adding would be off by 100%.
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(model.grads()[i], 2 * once[i], 2e-6 * std::abs(once[i]) + 1e-9) << i;
  }
  model.ZeroGrad();
  for (size_t i = 0; i < once.size(); ++i) ASSERT_EQ(model.grads()[i], 0.0f) << i;
}

// The float model computes the double model's function: same seed, same values up to
// rounding. Tolerances: logits 1e-5 absolute (they are O(1)), loss 1e-6 relative, gradient
// 1e-5 relative in L2 norm.
TEST(GptFloat, MatchesDouble) {
  ThreadPool pool(2);
  const ModelShape shape = {.layers = 2, .heads = 4, .width = 64, .context = 80, .vocab = 300};
  const int B = 2, Tq = 80;
  Gpt<float> f = MakeModel<float>(shape, B, Tq, &pool, 9);
  Gpt<double> d = MakeModel<double>(shape, B, Tq, &pool, 9);
  std::vector<int32_t> tokens = RandomTokens(B * Tq, 300, 5),
                       targets = RandomTokens(B * Tq, 300, 6);
  const float lf = *f.Forward(tokens.data(), targets.data(), B, Tq);
  const double ld = *d.Forward(tokens.data(), targets.data(), B, Tq);
  double max_logit_err = 0;
  for (int i = 0; i < B * Tq * 300; ++i) {
    max_logit_err = std::max(max_logit_err, std::abs(f.logits()[i] - d.logits()[i]));
  }
  ASSERT_TRUE(f.Backward().ok());
  ASSERT_TRUE(d.Backward().ok());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < d.num_params(); ++i) {
    diff += (f.grads()[i] - d.grads()[i]) * (f.grads()[i] - d.grads()[i]);
    norm += d.grads()[i] * d.grads()[i];
  }
  const double grad_err = std::sqrt(diff / norm);
  std::printf("float vs double: max logit error %.3g, loss rel error %.3g, grad rel error %.3g\n",
              max_logit_err, std::abs(lf - ld) / ld, grad_err);
  EXPECT_LT(max_logit_err, 1e-5);
  EXPECT_LT(std::abs(lf - ld) / ld, 1e-6);
  EXPECT_LT(grad_err, 1e-5);
}

// One optimizer step as a trainer does it: forward, backward, clip, AdamW.
float TrainStep(Gpt<float>& model, AdamW& opt, ThreadPool& pool, const int32_t* tokens,
                const int32_t* targets, int B, int Tq, float lr) {
  model.ZeroGrad();
  const float loss = *model.Forward(tokens, targets, B, Tq);
  EXPECT_TRUE(model.Backward().ok());
  ClipGradNorm(model.grads(), model.num_params(), 1.0, pool);
  opt.Step(model.params(), model.grads(), lr, pool);
  return loss;
}

// Same seed and data, 1, 2 or 3 threads: the same parameter bytes after training. The shape
// makes every kernel split its work: 300 tokens (3 row tiles), T = 150 (3 attention blocks),
// vocab 1100 (2 column tiles of the output head).
TEST(GptDeterminism, SameBitsAtAnyThreadCount) {
  const ModelShape shape = {.layers = 2, .heads = 4, .width = 64, .context = 150, .vocab = 1100};
  // 600 rows: two row tiles of the matmuls (512 + 88), and vocab 1100 two column pieces.
  const int B = 4, Tq = 150, kSteps = 3;
  std::vector<std::vector<float>> finals;
  std::vector<std::vector<float>> losses;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    Gpt<float> model = MakeModel<float>(shape, B, Tq, &pool, 11);
    AdamW opt(model.Parameters(), AdamWOptions{});
    losses.emplace_back();
    for (int step = 0; step < kSteps; ++step) {
      std::vector<int32_t> tokens = RandomTokens(B * Tq, 1100, 100 + step);
      std::vector<int32_t> targets = RandomTokens(B * Tq, 1100, 200 + step);
      losses.back().push_back(
          TrainStep(model, opt, pool, tokens.data(), targets.data(), B, Tq, 1e-3f));
    }
    finals.emplace_back(model.params(), model.params() + model.num_params());
  }
  for (size_t i = 1; i < finals.size(); ++i) {
    EXPECT_EQ(losses[i], losses[0]) << "threads run " << i;
    EXPECT_EQ(std::memcmp(finals[i].data(), finals[0].data(), finals[0].size() * sizeof(float)), 0)
        << "parameters differ between 1 thread and run " << i;
  }
}

// A small model memorises a short text: the loss on it falls below 0.1 nats within 150
// steps (it is about 5.5 = ln 256 at the start).
TEST(GptTraining, OverfitsAFixedText) {
  const std::string text =
      "Forge trains small language models. The coordinator schedules jobs, the workers run "
      "them, and every checkpoint is a directory with a manifest written last. Same seed, "
      "same data: the same weights, bit for bit.";
  const ModelShape shape = {.layers = 2, .heads = 4, .width = 64, .context = 64, .vocab = 256};
  const int B = 4, Tq = 64;
  ThreadPool pool(2);
  Gpt<float> model = MakeModel<float>(shape, B, Tq, &pool, 1);
  AdamW opt(model.Parameters(), AdamWOptions{.weight_decay = 0.0f});
  std::vector<int32_t> tokens(B * Tq), targets(B * Tq);
  for (int b = 0; b < B; ++b) {  // four windows that together cover the text
    const int start = b * (static_cast<int>(text.size()) - Tq - 1) / (B - 1);
    for (int t = 0; t < Tq; ++t) {
      tokens[b * Tq + t] = static_cast<unsigned char>(text[start + t]);
      targets[b * Tq + t] = static_cast<unsigned char>(text[start + t + 1]);
    }
  }
  float loss = 0;
  int step = 0;
  for (; step < 150; ++step) {
    loss = TrainStep(model, opt, pool, tokens.data(), targets.data(), B, Tq, 3e-3f);
    if (step == 0) {
      EXPECT_NEAR(loss, std::log(256.0), 0.1);
    }
    if (loss < 0.1f) break;
  }
  std::printf("overfit: loss %.4f after %d steps\n", loss, step + 1);
  EXPECT_LT(loss, 0.1f);
}

}  // namespace
}  // namespace forge::engine
