// CPU kernels of affine_coupling. Compiled once per ISA (PYGEN_CPU_NS). A task is one
// chunk of one sample; its elements go through a 16-lane loop (the scale functions
// are branch-free, so it vectorizes), the lanes' log scales summing in 16
// accumulators, added up in a fixed order.
#include <algorithm>

#include "csrc/common/parallel_for.h"
#include "csrc/flows/affine_coupling.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kLanes = 16;

// One element: writes y[i], returns its log scale. Forced inline: GCC leaves a lambda
// with the soft clamp's tanh out of line (called from two loops), and the call then
// keeps the loop scalar, 15x slower than the backward.
template <class T, ScaleFn F, bool Inverse>
inline __attribute__((always_inline)) AccOf<T> forward_at(int64_t i, const T* __restrict x,
                                                          const T* __restrict shift, const T* __restrict raw,
                                                          T* __restrict y, AccOf<T> clamp,
                                                          AccOf<T> inv_clamp) {
  using C = AccOf<T>;
  const CouplingScale<C> s = coupling_scale<F, Inverse>(to_acc(raw[i]), clamp, inv_clamp);
  const C v = to_acc(x[i]), sh = to_acc(shift[i]);
  y[i] = from_acc<T>(Inverse ? (v - sh) * s.factor : v * s.factor + sh);
  return s.log_scale;
}

// One chunk of a sample: y and the chunk's sum of log scales, the lanes' partial sums
// added in a fixed order. Restrict pointers, as in the backward (no run-time alias checks).
template <class T, ScaleFn F, bool Inverse>
AccOf<T> forward_span(int64_t n, const T* __restrict x, const T* __restrict shift, const T* __restrict raw,
                      T* __restrict y, AccOf<T> clamp, AccOf<T> inv_clamp) {
  using C = AccOf<T>;
  C acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l)
      acc[l] += forward_at<T, F, Inverse>(i + l, x, shift, raw, y, clamp, inv_clamp);
  for (int l = 0; i < n; ++i, ++l) acc[l] += forward_at<T, F, Inverse>(i, x, shift, raw, y, clamp, inv_clamp);
  C sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return Inverse ? -sum : sum;
}

template <class T, ScaleFn F, bool Inverse>
void forward(const AffineCouplingParams& p) {
  using C = AccOf<T>;
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* y = static_cast<T*>(p.y);
  C* logdet = static_cast<C*>(p.logdet);
  C* partial = static_cast<C*>(p.partial);
  const int64_t chunks = affine_chunks(p.numel);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  parallel_for(0, p.batch * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks;
      const int64_t i = b * p.numel + (t % chunks) * kAffineChunk;
      const int64_t n = std::min(i + kAffineChunk, (b + 1) * p.numel) - i;
      const C sum = forward_span<T, F, Inverse>(n, x + i, shift + i, raw + i, y + i, clamp, inv_clamp);
      if (chunks == 1)
        logdet[b] = sum;
      else
        partial[t] = sum;
    }
  });
  if (chunks > 1)
    for (int64_t b = 0; b < p.batch; ++b) {
      C sum = 0;
      for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
      logdet[b] = sum;
    }
}

// One span of a sample; restrict pointers, since with seven arrays GCC gives up on
// run-time alias checks and would not vectorize. gy null: zero.
template <class T, ScaleFn F, bool Inverse, bool HasGy>
void backward_span(int64_t n, const T* __restrict gy, AccOf<T> g_l, const T* __restrict x,
                   const T* __restrict shift, const T* __restrict raw, T* __restrict gx, T* __restrict gshift,
                   T* __restrict graw, AccOf<T> clamp, AccOf<T> inv_clamp) {
  using C = AccOf<T>;
  for (int64_t i = 0; i < n; ++i) {
    const CouplingScale<C> s = coupling_scale<F, Inverse>(to_acc(raw[i]), clamp, inv_clamp);
    C g = 0;
    if constexpr (HasGy) g = to_acc(gy[i]);
    const AffineGrads<C> d = affine_coupling_grads<Inverse>(g, g_l, to_acc(x[i]), to_acc(shift[i]), s);
    gx[i] = from_acc<T>(d.x);
    gshift[i] = from_acc<T>(d.shift);
    graw[i] = from_acc<T>(d.raw);
  }
}

template <class T, ScaleFn F, bool Inverse>
void backward(const AffineCouplingBackwardParams& p) {
  using C = AccOf<T>;
  const T* gy = static_cast<const T*>(p.grad_y);
  const C* gl = static_cast<const C*>(p.grad_logdet);
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* gx = static_cast<T*>(p.grad_x);
  T* gshift = static_cast<T*>(p.grad_shift);
  T* graw = static_cast<T*>(p.grad_raw);
  const int64_t chunks = affine_chunks(p.numel);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  parallel_for(0, p.batch * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks;
      const int64_t i = b * p.numel + (t % chunks) * kAffineChunk;
      const int64_t n = std::min(i + kAffineChunk, (b + 1) * p.numel) - i;
      const C g_l = gl ? gl[b] : C(0);
      if (gy)
        backward_span<T, F, Inverse, true>(n, gy + i, g_l, x + i, shift + i, raw + i, gx + i, gshift + i,
                                           graw + i, clamp, inv_clamp);
      else
        backward_span<T, F, Inverse, false>(n, nullptr, g_l, x + i, shift + i, raw + i, gx + i, gshift + i,
                                            graw + i, clamp, inv_clamp);
    }
  });
}

}  // namespace

void affine_coupling(const AffineCouplingParams& p) {
  visit_dtype(p.dtype, [&](auto tag) {
    visit_affine_map(p.scale_fn, p.inverse,
                     [&](auto fn, auto inv) { forward<decltype(tag), fn(), inv()>(p); });
  });
}

void affine_coupling_backward(const AffineCouplingBackwardParams& p) {
  visit_dtype(p.dtype, [&](auto tag) {
    visit_affine_map(p.scale_fn, p.inverse,
                     [&](auto fn, auto inv) { backward<decltype(tag), fn(), inv()>(p); });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
