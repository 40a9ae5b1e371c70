// CUDA kernels of mix_logistic_cdf: one thread per element, looping over its K
// components (read from global memory on each pass, so K is unbounded and nothing
// spills); the math is coupling_math.h's, as on the CPU.
#include <algorithm>

#include "cuda/flows/mix_logistic.h"

namespace pygen {

namespace {

constexpr int kThreads = 128;

// One element's mixture: its component parameters and the log-softmax normalizer.
template <class T>
struct Mixture {
  using C = AccOf<T>;
  const T *logits, *means, *log_scales;
  int64_t k;
  C lse_logits, max_log_scale;
  bool finite;

  __device__ Mixture(const T* l, const T* m, const T* s, int64_t k_)
      : logits(l), means(m), log_scales(s), k(k_) {
    C mx = C(-INFINITY), sum = 0;
    max_log_scale = C(-INFINITY);
    finite = true;
    for (int64_t c = 0; c < k; ++c) {
      const C lc = to_acc(logits[c]), mc = to_acc(means[c]), sc = to_acc(log_scales[c]);
      finite = finite && finite_c(lc) && finite_c(mc) && finite_c(sc);
      lse_push(mx, sum, lc);
      max_log_scale = max_c(max_log_scale, sc);
    }
    lse_logits = lse_value(mx, sum);
  }

  __device__ C log_w(int64_t c) const { return to_acc(logits[c]) - lse_logits; }

  // The linear-space sums, or the log-space ones near underflow (coupling_math.h).
  __device__ MixEval<C> eval(C x) const {
    C F = 0, G = 0, f = 0;
    for (int64_t c = 0; c < k; ++c) {
      const C s = to_acc(log_scales[c]);
      mix_linear_push(F, G, f, x, C(to_acc(means[c])), exp_c(-s), exp_c(log_w(c)));
    }
    if (mix_linear_ok(F, G, f)) return {log_c(F), log_c(G), log_c(f)};
    MixAccum<C> acc;
    for (int64_t c = 0; c < k; ++c) {
      const C s = to_acc(log_scales[c]);
      acc.push(log_w(c), s, logistic_term(x, C(to_acc(means[c])), exp_c(-s)));
    }
    return mix_eval(acc);
  }

  __device__ MixComponentGrad<C> grad(int64_t c, C x, const MixEval<C>& ev, C d, C D, C dy, C dl) const {
    const C s = to_acc(log_scales[c]);
    return mix_component_grad(x, C(to_acc(means[c])), exp_c(-s), log_w(c), s, ev, d, D, dy, dl);
  }

  __device__ C solve(C y, C tol, int max_iters) const {
    if (!finite_c(y)) return y;  // +-inf maps to +-inf, NaN to NaN
    NewtonState<C> st{C(INFINITY), C(-INFINITY), C(0), C(0), false};
    for (int64_t c = 0; c < k; ++c) {
      const C root = to_acc(means[c]) + y * exp_c(C(to_acc(log_scales[c])));
      st.lo = min_c(st.lo, root), st.hi = max_c(st.hi, root);
      st.x += exp_c(log_w(c)) * root;
    }
    st.x = min_c(max_c(st.x, st.lo), st.hi);
    st.step = st.hi - st.lo;
    for (int it = 0; it < max_iters && !st.done; ++it) {
      const MixEval<C> ev = eval(st.x);
      st.update(ev.y() - y, exp_c(ev.logdet()), tol);
    }
    return st.done ? st.x : st.mid();
  }
};

template <class T>
__global__ void forward_kernel(MixLogisticParams p) {
  using C = AccOf<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += stride) {
    const int64_t o = i * p.k;
    const Mixture<T> mix(static_cast<const T*>(p.logits) + o, static_cast<const T*>(p.means) + o,
                         static_cast<const T*>(p.log_scales) + o, p.k);
    if (!mix.finite && p.status) atomicOr(p.status, int32_t(kMixNonFinite));
    const C v = to_acc(static_cast<const T*>(p.x)[i]);
    C out, ld;
    if (p.inverse) {
      out = mix.solve(v, C(p.tol), p.max_iters);
      ld = finite_c(out) ? -mix.eval(out).logdet() : (out == out ? mix.max_log_scale : out);
    } else if (finite_c(v)) {
      const MixEval<C> ev = mix.eval(v);
      out = ev.y(), ld = ev.logdet();
    } else {
      out = v, ld = v == v ? -mix.max_log_scale : v;  // the limits at +-inf
    }
    // Non-finite parameters (unvalidated calls): NaN, whatever the evaluation gave.
    static_cast<T*>(p.y)[i] = from_acc<T>(mix.finite ? out : C(NAN));
    static_cast<C*>(p.logdet)[i] = mix.finite ? ld : C(NAN);
  }
}

template <class T>
__global__ void backward_kernel(MixLogisticBackwardParams p) {
  using C = AccOf<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += stride) {
    const int64_t o = i * p.k;
    const Mixture<T> mix(static_cast<const T*>(p.logits) + o, static_cast<const T*>(p.means) + o,
                         static_cast<const T*>(p.log_scales) + o, p.k);
    T* g_logits = static_cast<T*>(p.grad_logits) + o;
    T* g_means = static_cast<T*>(p.grad_means) + o;
    T* g_scales = static_cast<T*>(p.grad_log_scales) + o;
    const C x = to_acc(static_cast<const T*>(p.x)[i]);
    const C gy = p.grad_y ? to_acc(static_cast<const T*>(p.grad_y)[i]) : C(0);
    const C gl = p.grad_logdet ? static_cast<const C*>(p.grad_logdet)[i] : C(0);
    T* g_in = static_cast<T*>(p.grad_in) + i;
    if (!finite_c(x)) {
      *g_in = from_acc<T>(C(0));
      for (int64_t c = 0; c < p.k; ++c) g_logits[c] = g_means[c] = g_scales[c] = from_acc<T>(C(0));
      continue;
    }
    const MixEval<C> ev = mix.eval(x);
    const C d = exp_c(ev.logdet());
    const C D = exp_c(ev.log_f - ev.log_F) - exp_c(ev.log_f - ev.log_G);
    C dldx = -D, dy = gy, dl = gl;
    if (p.inverse) {
      // Upstream gradients of x and of -logdet(x) act on x's implicit function.
      for (int64_t c = 0; c < p.k; ++c) dldx += mix.grad(c, x, ev, d, D, C(0), C(0)).dl_dx_part;
      const C cx = (gy - gl * dldx) / d;
      *g_in = from_acc<T>(cx);
      dy = -cx, dl = -gl;
    }
    for (int64_t c = 0; c < p.k; ++c) {
      const MixComponentGrad<C> g = mix.grad(c, x, ev, d, D, dy, dl);
      g_logits[c] = from_acc<T>(g.logit);
      g_means[c] = from_acc<T>(g.mean);
      g_scales[c] = from_acc<T>(g.log_scale);
      dldx += g.dl_dx_part;
    }
    if (!p.inverse) *g_in = from_acc<T>(gy * d + gl * dldx);
  }
}

int grid_for(int64_t n) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 16)));
}

}  // namespace

cudaError_t mix_logistic_cdf_cuda(const MixLogisticParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  visit_dtype(p.dtype,
              [&](auto tag) { forward_kernel<decltype(tag)><<<grid_for(p.n), kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

cudaError_t mix_logistic_cdf_backward_cuda(const MixLogisticBackwardParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  visit_dtype(p.dtype,
              [&](auto tag) { backward_kernel<decltype(tag)><<<grid_for(p.n), kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

}  // namespace pygen
