// CPU kernels of mix_logistic_cdf. Compiled once per ISA (PYGEN_CPU_NS). Elements go in
// tiles of 16 lanes whose parameters are transposed to [component][lane], so every loop
// over components runs the branch-free math of coupling_math.h across the 16 lanes
// (vectorized) whatever K is; the inverse iterates a tile until all its lanes converged.
#include <algorithm>
#include <vector>

#include "csrc/common/parallel_for.h"
#include "csrc/flows/mix_logistic.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int L = 16;  // lanes of a tile

template <class C>
class Tile {
 public:
  explicit Tile(int64_t k) : k_(k), buf_(size_t(8 * k * L)) {}

  C* log_w() { return buf_.data(); }
  C* mean() { return buf_.data() + k_ * L; }
  C* log_scale() { return buf_.data() + 2 * k_ * L; }
  C* inv_scale() { return buf_.data() + 3 * k_ * L; }
  C* weight() { return buf_.data() + 4 * k_ * L; }                   // softmax(logits)
  C* grad(int which) { return buf_.data() + (5 + which) * k_ * L; }  // backward scratch
  C max_log_scale[L];
  bool finite[L];  // the lane's parameters are all finite

  // Elements [i0, i0 + n) (lanes past n repeat the last one); false on a non-finite
  // parameter.
  template <class T>
  bool load(const T* logits, const T* means, const T* log_scales, int64_t i0, int n) {
    C *lw = log_w(), *mu = mean(), *ls = log_scale(), *is = inv_scale();
    // Local flags: the member array could alias the buffer for all the compiler knows.
    bool fin[L];
    for (int j = 0; j < L; ++j) fin[j] = true;
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j) {
        const int64_t src = (i0 + std::min(j, n - 1)) * k_ + c;
        const C l = to_acc(logits[src]), m = to_acc(means[src]), s = to_acc(log_scales[src]);
        fin[j] &= finite_c(l) & finite_c(m) & finite_c(s);
        lw[c * L + j] = l, mu[c * L + j] = m, ls[c * L + j] = s;
        is[c * L + j] = exp_c(-s);
      }
    C mx[L], sum[L];
    for (int j = 0; j < L; ++j) mx[j] = C(-INFINITY), sum[j] = 0, max_log_scale[j] = C(-INFINITY);
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j) {
        lse_push(mx[j], sum[j], lw[c * L + j]);
        max_log_scale[j] = max_c(max_log_scale[j], ls[c * L + j]);
      }
    for (int j = 0; j < L; ++j) mx[j] = lse_value(mx[j], sum[j]);
    C* w = weight();
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j) {
        lw[c * L + j] -= mx[j];  // log softmax
        w[c * L + j] = exp_c(lw[c * L + j]);
      }
    bool ok = true;
    for (int j = 0; j < L; ++j) finite[j] = fin[j], ok &= fin[j];
    return ok;
  }

  // log F, log(1 - F) and log f at x[lane]: the linear-space sums, and the log-space
  // ones where a lane's sums come near underflow.
  void eval(const C* x, C* log_F, C* log_G, C* log_f) {
    const C *mu = mean(), *is = inv_scale(), *w = weight();
    C F[L], G[L], f[L];
    for (int j = 0; j < L; ++j) F[j] = G[j] = f[j] = 0;
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j)
        mix_linear_push(F[j], G[j], f[j], x[j], mu[c * L + j], is[c * L + j], w[c * L + j]);
    bool all_ok = true;
    for (int j = 0; j < L; ++j) {
      all_ok &= mix_linear_ok(F[j], G[j], f[j]);
      log_F[j] = log_c(F[j]), log_G[j] = log_c(G[j]), log_f[j] = log_c(f[j]);
    }
    if (!all_ok) eval_log_space(x, F, G, f, log_F, log_G, log_f);
  }

  // The log-space sums, for the lanes whose linear sums (F, G, f) are not usable.
  void eval_log_space(const C* x, const C* F, const C* G, const C* f, C* log_F, C* log_G, C* log_f) {
    const C *lw = log_w(), *mu = mean(), *ls = log_scale(), *is = inv_scale();
    C mF[L], sF[L], mG[L], sG[L], mf[L], sf[L];
    for (int j = 0; j < L; ++j) mF[j] = mG[j] = mf[j] = C(-INFINITY), sF[j] = sG[j] = sf[j] = 0;
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j) {
        const LogisticTerm<C> t = logistic_term(x[j], mu[c * L + j], is[c * L + j]);
        const C a = lw[c * L + j] + t.log_sig;
        lse_push(mF[j], sF[j], a);
        lse_push(mG[j], sG[j], lw[c * L + j] + t.log_sig_neg);
        lse_push(mf[j], sf[j], a + t.log_sig_neg - ls[c * L + j]);
      }
    for (int j = 0; j < L; ++j) {
      const bool ok = mix_linear_ok(F[j], G[j], f[j]);
      log_F[j] = sel(ok, log_F[j], lse_value(mF[j], sF[j]));
      log_G[j] = sel(ok, log_G[j], lse_value(mG[j], sG[j]));
      log_f[j] = sel(ok, log_f[j], lse_value(mf[j], sf[j]));
    }
  }

  // The inverse: x[lane] with logit F(x) = y[lane].
  void solve(const C* y, C tol, int max_iters, C* x) {
    const C *lw = log_w(), *mu = mean(), *ls = log_scale();
    C lo[L], hi[L], step[L], lF[L], lG[L], lf[L];
    bool done[L];
    for (int j = 0; j < L; ++j) lo[j] = C(INFINITY), hi[j] = C(-INFINITY), x[j] = 0;
    for (int64_t c = 0; c < k_; ++c)
      for (int j = 0; j < L; ++j) {
        const C root = mu[c * L + j] + y[j] * exp_c(ls[c * L + j]);  // component c's own root
        lo[j] = min_c(lo[j], root), hi[j] = max_c(hi[j], root);
        x[j] += exp_c(lw[c * L + j]) * root;
      }
    for (int j = 0; j < L; ++j) {
      done[j] = !finite_c(y[j]);  // +-inf maps to +-inf, NaN to NaN
      x[j] = done[j] ? y[j] : min_c(max_c(x[j], lo[j]), hi[j]);
      step[j] = hi[j] - lo[j];
    }
    for (int it = 0; it < max_iters; ++it) {
      if (std::all_of(done, done + L, [](bool d) { return d; })) break;
      eval(x, lF, lG, lf);
      for (int j = 0; j < L; ++j) {
        NewtonState<C> s{lo[j], hi[j], x[j], step[j], done[j]};
        s.update(lF[j] - lG[j] - y[j], exp_c(lf[j] - lF[j] - lG[j]), tol);
        lo[j] = s.lo, hi[j] = s.hi, x[j] = s.x, step[j] = s.step, done[j] = s.done;
      }
    }
    for (int j = 0; j < L; ++j) x[j] = done[j] ? x[j] : lo[j] + C(0.5) * (hi[j] - lo[j]);
  }

 private:
  int64_t k_;
  std::vector<C> buf_;
};

// Grain of parallel_for in tiles: about 64 K-component evaluations per task.
int64_t tile_grain(int64_t k) { return std::max<int64_t>(1, 64 / std::max<int64_t>(k, 1)); }

template <class T>
void forward(const MixLogisticParams& p) {
  using C = AccOf<T>;
  const T* in = static_cast<const T*>(p.x);
  const T *logits = static_cast<const T*>(p.logits), *means = static_cast<const T*>(p.means),
          *log_scales = static_cast<const T*>(p.log_scales);
  T* out = static_cast<T*>(p.y);
  C* logdet = static_cast<C*>(p.logdet);
  const int64_t tiles = (p.n + L - 1) / L;
  parallel_for(0, tiles, tile_grain(p.k), [&](int64_t t0, int64_t t1) {
    Tile<C> tile(p.k);
    C v[L], r[L], lF[L], lG[L], lf[L];
    bool ok = true;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * L;
      const int n = int(std::min<int64_t>(L, p.n - i0));
      ok &= tile.load(logits, means, log_scales, i0, n);
      for (int j = 0; j < L; ++j) v[j] = to_acc(in[i0 + std::min(j, n - 1)]);
      if (p.inverse) {
        tile.solve(v, C(p.tol), p.max_iters, r);
        tile.eval(r, lF, lG, lf);
        for (int j = 0; j < n; ++j) {
          // x = +-inf (y = +-inf): the limit of -logdet, max_k log_scale_k.
          const C ld = finite_c(r[j]) ? lF[j] + lG[j] - lf[j] : (r[j] == r[j] ? tile.max_log_scale[j] : r[j]);
          // Non-finite parameters (unvalidated calls): NaN, whatever the solve gave.
          out[i0 + j] = from_acc<T>(tile.finite[j] ? r[j] : C(NAN));
          logdet[i0 + j] = tile.finite[j] ? ld : C(NAN);
        }
      } else {
        tile.eval(v, lF, lG, lf);
        for (int j = 0; j < n; ++j) {
          const bool fin = finite_c(v[j]);
          const C o = fin ? lF[j] - lG[j] : v[j];
          const C ld = fin ? lf[j] - lF[j] - lG[j] : (v[j] == v[j] ? -tile.max_log_scale[j] : v[j]);
          out[i0 + j] = from_acc<T>(tile.finite[j] ? o : C(NAN));
          logdet[i0 + j] = tile.finite[j] ? ld : C(NAN);
        }
      }
    }
    if (!ok && p.status) __atomic_store_n(p.status, int32_t(kMixNonFinite), __ATOMIC_RELAXED);
  });
}

template <class T>
void backward(const MixLogisticBackwardParams& p) {
  using C = AccOf<T>;
  const T* gy_in = static_cast<const T*>(p.grad_y);
  const C* gl_in = static_cast<const C*>(p.grad_logdet);
  const T* xs = static_cast<const T*>(p.x);
  const T *logits = static_cast<const T*>(p.logits), *means = static_cast<const T*>(p.means),
          *log_scales = static_cast<const T*>(p.log_scales);
  T* grad_in = static_cast<T*>(p.grad_in);
  T* grad_out[3] = {static_cast<T*>(p.grad_logits), static_cast<T*>(p.grad_means),
                    static_cast<T*>(p.grad_log_scales)};
  const int64_t tiles = (p.n + L - 1) / L, k = p.k;
  parallel_for(0, tiles, tile_grain(k), [&](int64_t t0, int64_t t1) {
    Tile<C> tile(k);
    C x[L], gy[L], gl[L], lF[L], lG[L], lf[L], d[L], D[L], dldx[L], dy[L], dl[L];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * L;
      const int n = int(std::min<int64_t>(L, p.n - i0));
      tile.load(logits, means, log_scales, i0, n);
      for (int j = 0; j < L; ++j) {
        const int64_t i = i0 + std::min(j, n - 1);
        x[j] = to_acc(xs[i]);
        gy[j] = gy_in ? to_acc(gy_in[i]) : C(0);
        gl[j] = gl_in ? gl_in[i] : C(0);
      }
      tile.eval(x, lF, lG, lf);
      for (int j = 0; j < L; ++j) {
        const MixEval<C> ev{lF[j], lG[j], lf[j]};
        d[j] = exp_c(ev.logdet());
        D[j] = exp_c(lf[j] - lF[j]) - exp_c(lf[j] - lG[j]);
        dldx[j] = -D[j];
      }
      const C *lw = tile.log_w(), *mu = tile.mean(), *ls = tile.log_scale(), *is = tile.inv_scale();
      auto component = [&](int64_t c, int j, C up_y, C up_l) {
        const MixEval<C> ev{lF[j], lG[j], lf[j]};
        return mix_component_grad(x[j], mu[c * L + j], is[c * L + j], lw[c * L + j], ls[c * L + j], ev, d[j],
                                  D[j], up_y, up_l);
      };
      if (p.inverse) {
        // Upstream gradients of x and of -logdet(x) act on x's implicit function.
        for (int64_t c = 0; c < k; ++c)
          for (int j = 0; j < L; ++j) dldx[j] += component(c, j, 0, 0).dl_dx_part;
        for (int j = 0; j < L; ++j) {
          const C cx = (gy[j] - gl[j] * dldx[j]) / d[j];
          dy[j] = -cx, dl[j] = -gl[j];
        }
        for (int j = 0; j < n; ++j) grad_in[i0 + j] = from_acc<T>(finite_c(x[j]) ? -dy[j] : C(0));
      } else {
        for (int j = 0; j < L; ++j) dy[j] = gy[j], dl[j] = gl[j];
      }
      C *g0 = tile.grad(0), *g1 = tile.grad(1), *g2 = tile.grad(2);
      for (int64_t c = 0; c < k; ++c)
        for (int j = 0; j < L; ++j) {
          const MixComponentGrad<C> g = component(c, j, dy[j], dl[j]);
          const bool fin = finite_c(x[j]);
          g0[c * L + j] = sel(fin, g.logit, C(0));
          g1[c * L + j] = sel(fin, g.mean, C(0));
          g2[c * L + j] = sel(fin, g.log_scale, C(0));
          dldx[j] += g.dl_dx_part;
        }
      if (!p.inverse)
        for (int j = 0; j < n; ++j)
          grad_in[i0 + j] = from_acc<T>(finite_c(x[j]) ? gy[j] * d[j] + gl[j] * dldx[j] : C(0));
      for (int w = 0; w < 3; ++w)
        for (int j = 0; j < n; ++j)
          for (int64_t c = 0; c < k; ++c)
            grad_out[w][(i0 + j) * k + c] = from_acc<T>(tile.grad(w)[c * L + j]);
    }
  });
}

}  // namespace

void mix_logistic_cdf(const MixLogisticParams& p) {
  visit_dtype(p.dtype, [&](auto tag) { forward<decltype(tag)>(p); });
}

void mix_logistic_cdf_backward(const MixLogisticBackwardParams& p) {
  visit_dtype(p.dtype, [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace pygen::PYGEN_CPU_NS
