// CPU kernel of solver_update. Compiled once per ISA (PYGEN_CPU_NS names the
// namespace). Work goes in tiles of 16 Philox blocks, aligned to the flat index so the
// noise matches pygen.ops.randn; each stage of a tile is a plain lane loop the compiler
// vectorizes, with the loop-invariant choices (guidance, thresholding, history count)
// taken outside it.
#include <algorithm>

#include "csrc/common/distributions.h"
#include "csrc/common/parallel_for.h"
#include "csrc/common/philox_cpu.h"
#include "csrc/solvers/solver_update.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kTileBlocks = 16;

template <class T>
void update(const SolverUpdateParams& p) {
  using C = AccOf<T>;
  constexpr int V = Normal<C>::kPerBlock;
  constexpr int kTile = kTileBlocks * V;
  const int64_t total = p.batch * p.numel;
  const int64_t ntiles = (total + kTile - 1) / kTile;
  const int ncoef = kSolverCoefHistory + p.n_hist;
  const T* x = static_cast<const T*>(p.x);
  const T* out = static_cast<const T*>(p.out);
  const T* uncond = static_cast<const T*>(p.uncond);
  T* pred_out = static_cast<T*>(p.pred);
  T* y_out = static_cast<T*>(p.y);
  parallel_for(0, ntiles, 256, [&](int64_t t0, int64_t t1) {
    uint32_t w[4][kTileBlocks];
    C noise[kTile], pred[kTile], acc[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t first = t * kTile;
      if (p.noise) {
        philox_tile(p.seed, p.offset + uint64_t(t) * kTileBlocks, w);
        for (int l = 0; l < kTileBlocks; ++l)
          Normal<C>::apply({{w[0][l], w[1][l], w[2][l], w[3][l]}}, noise + l * V);
      }
      // A tile may straddle samples: one segment per sample, coefficients per segment.
      for (int64_t i0 = first, end = std::min(first + kTile, total); i0 < end;) {
        const int64_t b = i0 / p.numel;
        const int64_t i1 = std::min(end, (b + 1) * p.numel);
        const int n = int(i1 - i0);
        const int o = int(i0 - first);
        const double* cf = p.coef + b * ncoef;
        if (out) {
          if (p.thresh) {
            const C s = C(p.thresh[b]);  // divided, not multiplied by 1 / s: as on CUDA
            for (int j = 0; j < n; ++j) pred[j] = std::min(std::max(to_acc(out[i0 + j]), -s), s) / s;
          } else {
            const C cx = C(cf[kCoefCx]), co = C(cf[kCoefCo]);
            if (uncond) {
              const C gw = C(cf[kCoefW]);
              for (int j = 0; j < n; ++j) {
                const C u = to_acc(uncond[i0 + j]);
                pred[j] = cx * to_acc(x[i0 + j]) + co * (u + gw * (to_acc(out[i0 + j]) - u));
              }
            } else {
              for (int j = 0; j < n; ++j) pred[j] = cx * to_acc(x[i0 + j]) + co * to_acc(out[i0 + j]);
            }
          }
          if (pred_out)
            for (int j = 0; j < n; ++j) pred_out[i0 + j] = from_acc<T>(pred[j]);
        }
        if (y_out) {
          const C a = C(cf[kCoefA]);
          if (out) {
            const C bp = C(cf[kCoefBp]);
            for (int j = 0; j < n; ++j) acc[j] = a * to_acc(x[i0 + j]) + bp * pred[j];
          } else {
            for (int j = 0; j < n; ++j) acc[j] = a * to_acc(x[i0 + j]);
          }
          for (int h = 0; h < p.n_hist; ++h) {
            const T* hj = static_cast<const T*>(p.hist[h]);
            const C bh = C(cf[kSolverCoefHistory + h]);
            for (int j = 0; j < n; ++j) acc[j] += bh * to_acc(hj[i0 + j]);
          }
          if (p.noise) {
            const C c = C(cf[kCoefC]);
            for (int j = 0; j < n; ++j) acc[j] += c * noise[o + j];
          }
          for (int j = 0; j < n; ++j) y_out[i0 + j] = from_acc<T>(acc[j]);
        }
        i0 = i1;
      }
    }
  });
}

}  // namespace

void solver_update(const SolverUpdateParams& p) {
  visit_dtype(p.dtype, [&](auto tag) { update<decltype(tag)>(p); });
}

}  // namespace pygen::PYGEN_CPU_NS
