// CPU kernels of rq_spline and its backward. Compiled once per ISA (PYGEN_CPU_NS names
// the namespace): a parallel loop over elements, each one spline of csrc/common/spline.h,
// with the softmax exponentials of its rows kept in a per-task scratch buffer.
#include <algorithm>
#include <vector>

#include "csrc/common/parallel_for.h"
#include "csrc/common/spline.h"
#include "csrc/flows/rq_spline.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

// Elements per task: a few thousand parameter values.
int64_t grain(int bins) { return std::max<int64_t>(1, 8192 / bins); }

template <class T>
void forward(const RqSplineParams& p) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const C bound = C(in.tail_bound);
  const T* x = static_cast<const T*>(in.x);
  const T* uw = static_cast<const T*>(in.widths);
  const T* uh = static_cast<const T*>(in.heights);
  const T* ud = static_cast<const T*>(in.derivatives);
  T* y = static_cast<T*>(p.y);
  T* lad = static_cast<T*>(p.logabsdet);
  parallel_for(0, in.n, grain(K), [&](int64_t i0, int64_t i1) {
    int bad = 0;
    std::vector<C> scratch(2 * K);
    for (int64_t i = i0; i < i1; ++i) {
      const T* w = uw + i * in.widths_stride;
      const T* h = uh + i * in.heights_stride;
      const T* d = ud + i * in.derivatives_stride;
      if (p.bad) bad |= rq_row_bad(w, h, d, K);
      C out, l;
      rq_spline_element(w, h, d, K, bound, in.inverse, to_acc(x[i]), &out, &l, scratch.data());
      y[i] = from_acc<T>(out);
      lad[i] = from_acc<T>(l);
    }
    if (bad) __atomic_fetch_or(p.bad, bad, __ATOMIC_RELAXED);
  });
}

template <class T>
void backward(const RqSplineBackwardParams& p) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const C bound = C(in.tail_bound);
  const T* x = static_cast<const T*>(in.x);
  const T* uw = static_cast<const T*>(in.widths);
  const T* uh = static_cast<const T*>(in.heights);
  const T* ud = static_cast<const T*>(in.derivatives);
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* gl = static_cast<const T*>(p.grad_logabsdet);
  T* gx = static_cast<T*>(p.grad_x);
  T* gw = static_cast<T*>(p.grad_widths);
  T* gh = static_cast<T*>(p.grad_heights);
  T* gd = static_cast<T*>(p.grad_derivatives);
  parallel_for(0, in.n, grain(K), [&](int64_t i0, int64_t i1) {
    std::vector<C> scratch(2 * K);
    for (int64_t i = i0; i < i1; ++i) {
      const C g_out = gy ? to_acc(gy[i]) : C(0);
      const C g_lad = gl ? to_acc(gl[i]) : C(0);
      gx[i] = from_acc<T>(rq_spline_element_backward(
          uw + i * in.widths_stride, uh + i * in.heights_stride, ud + i * in.derivatives_stride, K, bound,
          in.inverse, to_acc(x[i]), g_out, g_lad, gw + i * K, gh + i * K, gd + i * (K - 1), scratch.data()));
    }
  });
}

}  // namespace

void rq_spline(const RqSplineParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) { forward<decltype(tag)>(p); });
}

void rq_spline_backward(const RqSplineBackwardParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace pygen::PYGEN_CPU_NS
