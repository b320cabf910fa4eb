// The CUDA backend's tensor-core attention mapping (gemm_layout.h: six batched column-major
// products per sequence), run through column-major cblas_sgemm with the softmax steps done
// here exactly as the CUDA kernels do them, and compared with the CPU engine's attention on
// random shapes. A swapped operand, transpose, leading dimension or head stride fails it.
#include <cblas.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "worker/engine/attention.h"
#include "worker/engine/gemm_layout.h"
#include "worker/engine/thread_pool.h"

namespace forge::engine {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// One sequence's operands, as the backend lays them out (the q | k | v thirds of qkv
// are reached through offsets 0, C and 2C of the same buffer).
struct Sequence {
  const float* qkv;
  const float* y;
  const float* dy;
  float* dqkv;
  float* out_y;
  float *s, *p, *dp, *ds;  // [H, T, T] scratch
  int C;
  float* Of(AttentionOperand o) const {
    float* q = const_cast<float*>(qkv);
    switch (o) {
      case AttentionOperand::kQ:
        return q;
      case AttentionOperand::kK:
        return q + C;
      case AttentionOperand::kV:
        return q + 2 * C;
      case AttentionOperand::kY:
        return out_y;
      case AttentionOperand::kDy:
        return const_cast<float*>(dy);
      case AttentionOperand::kS:
        return s;
      case AttentionOperand::kP:
        return p;
      case AttentionOperand::kDp:
        return dp;
      case AttentionOperand::kDs:
        return ds;
      case AttentionOperand::kDq:
        return dqkv;
      case AttentionOperand::kDk:
        return dqkv + C;
      case AttentionOperand::kDv:
        return dqkv + 2 * C;
    }
    return nullptr;
  }
};

// The batched product as cuBLASLt runs it: `batch` column-major GEMMs at strided offsets.
void RunBatched(const AttentionGemm& g, const Sequence& seq) {
  const GemmCall& c = g.call;
  for (int p = 0; p < c.batch; ++p) {
    cblas_sgemm(CblasColMajor, c.trans_a ? CblasTrans : CblasNoTrans,
                c.trans_b ? CblasTrans : CblasNoTrans, c.m, c.n, c.k, 1.0f,
                seq.Of(g.a) + p * c.stride_a, c.lda, seq.Of(g.b) + p * c.stride_b, c.ldb, 0.0f,
                seq.Of(g.out) + p * c.stride_c, c.ldc);
  }
}

void ExpectNear(const Vec& got, const Vec& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-4f * (1.0f + std::abs(want[i]))) << what << " element " << i;
  }
}

struct Shape {
  int B, T, C, H;
};

TEST(AttentionGemmTest, MatchesTheCpuEngineForwardAndBackward) {
  ThreadPool pool(1);
  std::mt19937 rng(11);
  // Distinct T, hs and H, so a swapped dimension or stride cannot pass.
  for (const Shape& sh :
       {Shape{2, 7, 12, 3}, Shape{1, 33, 64, 4}, Shape{3, 5, 8, 1}, Shape{2, 16, 40, 2}}) {
    const int B = sh.B, T = sh.T, C = sh.C, H = sh.H, hs = C / H;
    SCOPED_TRACE(::testing::Message() << "B=" << B << " T=" << T << " C=" << C << " H=" << H);
    const size_t N = size_t(B) * T;
    const Vec qkv = Random(N * 3 * C, rng), dy = Random(N * C, rng);
    // The engine: y, att (the probabilities) and dqkv.
    Vec want_y(N * C), att(size_t(B) * H * T * T), want_dqkv(N * 3 * C),
        scratch(size_t(B) * H * T * T);
    AttentionForward<float>(want_y.data(), att.data(), qkv.data(), B, T, C, H, pool);
    AttentionBackward<float>(want_dqkv.data(), scratch.data(), dy.data(), qkv.data(), att.data(), B,
                             T, C, H, pool);

    // The GEMM path, one sequence at a time.
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    // Score rows are ScoreLd(T) apart; the padding is never written or read.
    const int ld = ScoreLd(T);
    const size_t tt = size_t(T) * ld;
    Vec y(N * C, 0.0f), dqkv(N * 3 * C, -7.0f), probs(size_t(B) * H * T * T);
    Vec s(H * tt, -7.0f), p(H * tt, -7.0f), dp(H * tt, -7.0f), ds(H * tt, -7.0f), lse(H * T);
    for (int b = 0; b < B; ++b) {
      Sequence seq{qkv.data() + size_t(b) * T * 3 * C,
                   y.data() + size_t(b) * T * C,
                   dy.data() + size_t(b) * T * C,
                   dqkv.data() + size_t(b) * T * 3 * C,
                   y.data() + size_t(b) * T * C,
                   s.data(),
                   p.data(),
                   dp.data(),
                   ds.data(),
                   C};
      // Forward: scores, the softmax kernel's maths, output.
      RunBatched(ScoresGemm(T, C, H), seq);
      for (int r = 0; r < H * T; ++r) {
        const int i = r % T;
        const float* srow = s.data() + size_t(r) * ld;
        float m = -INFINITY;
        for (int j = 0; j <= i; ++j) m = std::max(m, scale * srow[j]);
        double l = 0;
        for (int j = 0; j <= i; ++j) l += std::exp(scale * srow[j] - m);
        lse[r] = m + static_cast<float>(std::log(l));
        for (int j = 0; j < T; ++j) {
          p[size_t(r) * ld + j] = j <= i ? std::exp(scale * srow[j] - lse[r]) : 0.0f;
          probs[(size_t(b) * H * T + r) * T + j] = p[size_t(r) * ld + j];
        }
      }
      RunBatched(OutputGemm(T, C, H), seq);
      // Backward: recomputed scores (the kernel recomputes P from them and lse), dP, dS,
      // then the three input gradients.
      std::fill(s.begin(), s.end(), -7.0f);
      RunBatched(ScoresGemm(T, C, H), seq);
      RunBatched(ProbGradGemm(T, C, H), seq);
      for (int r = 0; r < H * T; ++r) {
        const int h = r / T, i = r % T;
        float delta = 0;
        for (int d = 0; d < hs; ++d) {
          const size_t off = (size_t(b) * T + i) * C + h * hs + d;
          delta += dy[off] * y[off];
        }
        for (int j = 0; j < T; ++j) {
          const size_t e = size_t(r) * ld + j;
          const float pe = j <= i ? std::exp(scale * s[e] - lse[r]) : 0.0f;
          p[e] = pe;
          ds[e] = pe * (dp[e] - delta) * scale;
        }
      }
      RunBatched(ValueGradGemm(T, C, H), seq);
      RunBatched(QueryGradGemm(T, C, H), seq);
      RunBatched(KeyGradGemm(T, C, H), seq);
    }
    ExpectNear(probs, att, "probabilities");
    ExpectNear(y, want_y, "y");
    ExpectNear(dqkv, want_dqkv, "dqkv");
  }
}

TEST(AttentionGemmTest, ScoreRowsAreSixteenByteAligned) {
  for (int T : {1, 7, 8, 9, 77, 130, 1024}) {
    EXPECT_EQ(ScoreLd(T) % 8, 0) << T;
    EXPECT_GE(ScoreLd(T), T);
    EXPECT_LT(ScoreLd(T), T + 8);
  }
}

TEST(AttentionGemmTest, EveryProductIsOneBatchPerHead) {
  for (const AttentionGemm& g :
       {ScoresGemm(9, 12, 3), OutputGemm(9, 12, 3), ProbGradGemm(9, 12, 3), ValueGradGemm(9, 12, 3),
        QueryGradGemm(9, 12, 3), KeyGradGemm(9, 12, 3)}) {
    EXPECT_EQ(g.call.batch, 3);
    // Score-shaped operands step T·ScoreLd(T) between heads; the rest step one head (hs)
    // along a row.
    for (auto [op, stride] : {std::pair{g.a, g.call.stride_a}, std::pair{g.b, g.call.stride_b},
                              std::pair{g.out, g.call.stride_c}}) {
      const bool scores = op == AttentionOperand::kS || op == AttentionOperand::kP ||
                          op == AttentionOperand::kDp || op == AttentionOperand::kDs;
      EXPECT_EQ(stride, scores ? 9 * 16 : 4);  // rows padded from 9 to 16 elements
    }
  }
}

}  // namespace
}  // namespace forge::engine
