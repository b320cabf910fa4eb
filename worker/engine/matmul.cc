#include "worker/engine/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

namespace forge::engine {
namespace {

// Tile edges: rows of 512 and columns split evenly into pieces of at most 1024 (multiples of
// 16). The tiles depend on the shapes alone, never on the thread count, so the bits do not
// either. Each tile is one sgemm call, which packs its whole slice of the other operand again:
// with 128-row tiles that repacking cost the tiny preset ~5 % of its step at 1 thread (a
// trainer rank's setting) and at 2 (forge-bench-train: 3,879 -> 4,067 and 7,358 -> 7,749
// tokens/s, medians of 3 and 5 runs). A 1024-token batch still gives 2 row tiles per matmul.
//
// A forward of 512 rows or fewer would then be one tile, run on one thread however many there
// are, so its columns are split into kMinTasks pieces where they are at least 128 wide each
// (the backward's dW and dinp tiles are two tasks already). Measured with forge-bench-train:
//   gpt2-124m-shape, 4 x 64 (256 rows), 2 threads: 159-163 -> 172-174 tokens/s; 1 thread: same
//   tiny, 4 x 128 (512 rows), 2 threads: 5,837-5,890 -> 7,045-7,084
//   tiny, 4 x 128, 1 thread (a rank's setting): 4,133-4,184 -> 4,081-4,112 (~1.5 % slower: the
//     input is packed once per piece); tiny 8 x 128 is unchanged (two row tiles already)
// Pieces of at least 256 halved both the gain and the cost.
constexpr int kTileRows = 512;
constexpr int kMaxTileCols = 1024;
constexpr int kMinTileCols = 128;
constexpr int kMinTasks = 2;

struct Span1D {
  int begin, size;
};

std::vector<Span1D> SplitRows(int n) {
  std::vector<Span1D> out;
  for (int i = 0; i < n; i += kTileRows) out.push_back({i, std::min(kTileRows, n - i)});
  return out;
}

// Columns in at least `min_pieces` pieces where n allows pieces of kMinTileCols: equal widths
// rounded up to 16, the last one narrower.
std::vector<Span1D> SplitCols(int n, int min_pieces = 1) {
  const int pieces = std::max((n + kMaxTileCols - 1) / kMaxTileCols,
                              std::min(min_pieces, std::max(1, n / kMinTileCols)));
  const int width = ((n + pieces - 1) / pieces + 15) / 16 * 16;
  std::vector<Span1D> out;
  for (int i = 0; i < n; i += width) out.push_back({i, std::min(width, n - i)});
  return out;
}

}  // namespace

void UseSingleThreadedBlas() { openblas_set_num_threads(1); }

template <>
void Gemm<float>(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void Gemm<double>(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a,
                  int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void MatmulForward(T* out, const T* inp, const T* weight, WeightLayout layout, const T* bias,
                   const T* residual, int M, int K, int N, ThreadPool& pool) {
  const std::vector<Span1D> rows = SplitRows(M);
  const std::vector<Span1D> cols = SplitCols(N, rows.size() == 1 ? kMinTasks : 1);
  const bool in_out = layout == WeightLayout::kInOut;
  pool.ParallelFor(rows.size() * cols.size(), [&](int64_t task) {
    const Span1D r = rows[task / cols.size()], c = cols[task % cols.size()];
    T* o = out + static_cast<size_t>(r.begin) * N + c.begin;
    // Start the tile from bias and residual so the GEMM adds onto them in place (beta = 1):
    // one pass over the output instead of three.
    const bool seeded = bias != nullptr || residual != nullptr;
    if (seeded) {
      for (int i = 0; i < r.size; ++i) {
        T* row = o + static_cast<size_t>(i) * N;
        const T* res =
            residual ? residual + (static_cast<size_t>(r.begin) + i) * N + c.begin : nullptr;
        for (int j = 0; j < c.size; ++j) {
          row[j] = (bias ? bias[c.begin + j] : T(0)) + (res ? res[j] : T(0));
        }
      }
    }
    const T* w = in_out ? weight + c.begin : weight + static_cast<size_t>(c.begin) * K;
    Gemm<T>(false, !in_out, r.size, c.size, K, T(1), inp + static_cast<size_t>(r.begin) * K, K, w,
            in_out ? N : K, seeded ? T(1) : T(0), o, N);
  });
}

template <typename T>
void MatmulBackward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                    WeightLayout layout, int M, int K, int N, ThreadPool& pool) {
  const bool in_out = layout == WeightLayout::kInOut;
  // dweight tiles come first (each reduces over all M rows: the biggest tasks), then dinp.
  // dW is [K,N] (kInOut) or [N,K] (kOutIn); either way its tile grid is rows x cols of it.
  const int w_rows = in_out ? K : N, w_cols = in_out ? N : K;
  const std::vector<Span1D> wr = SplitRows(w_rows), wc = SplitCols(w_cols);
  const std::vector<Span1D> ir = SplitRows(M), ic = SplitCols(K);
  const int64_t w_tasks = wr.size() * wc.size();
  const int64_t i_tasks = dinp ? ir.size() * ic.size() : 0;
  pool.ParallelFor(w_tasks + i_tasks, [&](int64_t task) {
    if (task < w_tasks) {
      const Span1D r = wr[task / wc.size()], c = wc[task % wc.size()];
      T* dw = dweight + static_cast<size_t>(r.begin) * w_cols + c.begin;
      if (in_out) {  // dW[K,N] += inp^T · dout
        Gemm<T>(true, false, r.size, c.size, M, T(1), inp + r.begin, K, dout + c.begin, N, T(1), dw,
                N);
      } else {  // dW[N,K] += dout^T · inp
        Gemm<T>(true, false, r.size, c.size, M, T(1), dout + r.begin, N, inp + c.begin, K, T(1), dw,
                K);
      }
      // The tiles in the first row of the grid also own dbias for their output columns.
      if (dbias != nullptr && in_out && r.begin == 0) {
        std::vector<T> sum(c.size, T(0));
        for (int m = 0; m < M; ++m) {
          const T* row = dout + static_cast<size_t>(m) * N + c.begin;
          for (int j = 0; j < c.size; ++j) sum[j] += row[j];
        }
        for (int j = 0; j < c.size; ++j) dbias[c.begin + j] += sum[j];
      }
      return;
    }
    task -= w_tasks;
    const Span1D r = ir[task / ic.size()], c = ic[task % ic.size()];
    T* di = dinp + static_cast<size_t>(r.begin) * K + c.begin;
    const T* dout_rows = dout + static_cast<size_t>(r.begin) * N;
    if (in_out) {  // dinp = dout · W^T, W = [K,N]
      Gemm<T>(false, true, r.size, c.size, N, T(1), dout_rows, N,
              weight + static_cast<size_t>(c.begin) * N, N, T(0), di, K);
    } else {  // dinp = dout · W, W = [N,K]
      Gemm<T>(false, false, r.size, c.size, N, T(1), dout_rows, N, weight + c.begin, K, T(0), di,
              K);
    }
  });
}

template void MatmulForward<float>(float*, const float*, const float*, WeightLayout, const float*,
                                   const float*, int, int, int, ThreadPool&);
template void MatmulForward<double>(double*, const double*, const double*, WeightLayout,
                                    const double*, const double*, int, int, int, ThreadPool&);
template void MatmulBackward<float>(float*, float*, float*, const float*, const float*,
                                    const float*, WeightLayout, int, int, int, ThreadPool&);
template void MatmulBackward<double>(double*, double*, double*, const double*, const double*,
                                     const double*, WeightLayout, int, int, int, ThreadPool&);

}  // namespace forge::engine
