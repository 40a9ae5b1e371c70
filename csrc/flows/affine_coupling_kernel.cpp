// CPU kernels of affine_coupling (and its layer form). Compiled once per ISA
// (PYGEN_CPU_NS). A task is one chunk of one sample's transformed elements, or of its
// copied (passive) ones; transformed elements go through a 16-lane loop (the scale
// functions are branch-free, so it vectorizes), the lanes' log scales summing in 16
// accumulators, added up in a fixed order.
#include <algorithm>
#include <utility>

#include "csrc/common/parallel_for.h"
#include "csrc/flows/affine_coupling.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kLanes = 16;
constexpr int64_t kSerialElements = 32768;

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

// One contiguous run of a chunk (within one channel of the conditioner's output): y,
// its log scales added into the lanes' accumulators. Restrict pointers, as in the
// backward (no run-time alias checks).
template <class T, ScaleFn F, bool Inverse>
void forward_span(int64_t n, const T* __restrict x, const T* __restrict shift, const T* __restrict raw,
                  T* __restrict y, AccOf<T> clamp, AccOf<T> inv_clamp, AccOf<T> (&acc)[kLanes]) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l)
      acc[l] += forward_at<T, F, Inverse>(i + l, x, shift, raw, y, clamp, inv_clamp);
  for (int l = 0; i < n; ++i, ++l) acc[l] += forward_at<T, F, Inverse>(i, x, shift, raw, y, clamp, inv_clamp);
}

// Calls f(i, n) for the runs [i, i + n) of active elements [begin, end) of a sample that
// lie in one channel (contiguous in x and in the conditioner's output alike).
template <class Fn>
void for_each_run(const AffineGeometry& g, int64_t begin, int64_t end, Fn&& f) {
  for (int64_t i = begin; i < end;) {
    const int64_t n = std::min(end, (i / g.inner + 1) * g.inner) - i;
    f(i, n);
    i += n;
  }
}

// The passive elements [begin, end) of one sample: src (sample-relative, x's layout)
// copied to dst, or the value `fill` everywhere for a null src. At most two runs,
// before and after the active channels.
template <class T>
void copy_passive(const AffineGeometry& g, int64_t begin, int64_t end, const T* src, T fill, T* dst) {
  const int64_t split = std::clamp(g.active_begin * g.inner, begin, end);
  for (auto [j0, j1] : {std::pair{begin, split}, std::pair{split, end}}) {
    if (j0 == j1) continue;
    const int64_t o = g.passive_offset(0, j0);
    if (src)
      std::copy(src + o, src + o + (j1 - j0), dst + o);
    else
      std::fill(dst + o, dst + o + (j1 - j0), fill);
  }
}

// Tasks, sample by sample: sample b's active chunks, then its passive chunks. Calls
// active(b, chunk, begin, end) and passive(b, begin, end) with per-sample element
// ranges. In this order each thread's range of tasks holds an equal share of the
// transform and of the copies (all active tasks first left the copies to the last
// thread, and the transform's exps and most of the bytes to the first) and walks
// memory in order.
template <class A, class P>
void for_each_chunk(const AffineGeometry& g, A&& active, P&& passive) {
  const int64_t chunks = affine_chunks(g.numel());
  const int64_t pchunks = g.passive_numel() ? affine_chunks(g.passive_numel()) : 0;
  const int64_t per_sample = chunks + pchunks;
  // Small calls run on the calling thread, as PyTorch's elementwise ops do below 32k
  // elements: a coupling layer's map at 1k-16k elements costs less than waking a thread.
  const int64_t per_task = std::max<int64_t>(1, (g.numel() + g.passive_numel()) / per_sample);
  parallel_for(0, g.batch * per_sample, std::max<int64_t>(1, kSerialElements / per_task),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const int64_t b = t / per_sample, k = t % per_sample;
                   if (k < chunks) {
                     const int64_t begin = k * kAffineChunk;
                     active(b, k, begin, std::min(begin + kAffineChunk, g.numel()));
                   } else {
                     const int64_t begin = (k - chunks) * kAffineChunk;
                     passive(b, begin, std::min(begin + kAffineChunk, g.passive_numel()));
                   }
                 }
               });
}

template <class T, ScaleFn F, bool Inverse>
void forward(const AffineCouplingParams& p) {
  using C = AccOf<T>;
  const AffineGeometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* y = static_cast<T*>(p.y);
  C* logdet = static_cast<C*>(p.logdet);
  C* partial = static_cast<C*>(p.partial);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  const int64_t chunks = affine_chunks(g.numel());
  for_each_chunk(
      g,
      [&](int64_t b, int64_t chunk, int64_t begin, int64_t end) {
        C acc[kLanes] = {};
        for_each_run(g, begin, end, [&](int64_t i, int64_t n) {
          const int64_t xo = g.active_offset(b, i), po = g.param_offset(b, i);
          forward_span<T, F, Inverse>(n, x + xo, shift + po, raw + po, y + xo, clamp, inv_clamp, acc);
        });
        C sum = 0;
        for (int l = 0; l < kLanes; ++l) sum += acc[l];
        (begin == 0 && end == g.numel() ? logdet[b] : partial[b * chunks + chunk]) = Inverse ? -sum : sum;
      },
      [&](int64_t b, int64_t begin, int64_t end) {
        const int64_t o = b * g.sample_numel();
        copy_passive(g, begin, end, x + o, from_acc<T>(C(0)), y + o);
      });
  if (chunks > 1)
    for (int64_t b = 0; b < g.batch; ++b) {
      C sum = 0;
      for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
      logdet[b] = sum;
    }
}

// One run of a sample; restrict pointers, since with seven arrays GCC gives up on
// run-time alias checks and would not vectorize. GyVec false: grad_y is g_y for every
// element (a broadcast gradient, or zero).
template <class T, ScaleFn F, bool Inverse, bool GyVec>
void backward_span(int64_t n, const T* __restrict gy, AccOf<T> g_y, AccOf<T> g_l, const T* __restrict x,
                   const T* __restrict shift, const T* __restrict raw, T* __restrict gx, T* __restrict gshift,
                   T* __restrict graw, AccOf<T> clamp, AccOf<T> inv_clamp) {
  using C = AccOf<T>;
  for (int64_t i = 0; i < n; ++i) {
    const CouplingScale<C> s = coupling_scale<F, Inverse>(to_acc(raw[i]), clamp, inv_clamp);
    C g = g_y;
    if constexpr (GyVec) g = to_acc(gy[i]);
    const AffineGrads<C> d = affine_coupling_grads<Inverse>(g, g_l, to_acc(x[i]), to_acc(shift[i]), s);
    gx[i] = from_acc<T>(d.x);
    gshift[i] = from_acc<T>(d.shift);
    graw[i] = from_acc<T>(d.raw);
  }
}

template <class T, ScaleFn F, bool Inverse>
void backward(const AffineCouplingBackwardParams& p) {
  using C = AccOf<T>;
  const AffineGeometry& g = p.g;
  const T* gy = static_cast<const T*>(p.grad_y);
  const C* gl = static_cast<const C*>(p.grad_logdet);
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* gx = static_cast<T*>(p.grad_x);
  T* gshift = static_cast<T*>(p.grad_shift);
  T* graw = static_cast<T*>(p.grad_raw);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  const bool gy_vec = gy && !p.grad_y_broadcast;
  // Sample b's grad_y (x's per-sample layout), or its one value.
  auto gy_sample = [&](int64_t b) { return gy + b * p.grad_y_batch_stride; };
  auto gy_value = [&](int64_t b) { return gy ? gy_sample(b)[0] : from_acc<T>(C(0)); };
  for_each_chunk(
      g,
      [&](int64_t b, int64_t, int64_t begin, int64_t end) {
        const C g_l = gl ? gl[b * p.grad_logdet_stride] : C(0);
        const int64_t so = b * g.sample_numel();
        for_each_run(g, begin, end, [&](int64_t i, int64_t n) {
          const int64_t xo = g.active_offset(b, i), po = g.param_offset(b, i);
          if (gy_vec)
            backward_span<T, F, Inverse, true>(n, gy_sample(b) + (xo - so), C(0), g_l, x + xo, shift + po,
                                               raw + po, gx + xo, gshift + po, graw + po, clamp, inv_clamp);
          else
            backward_span<T, F, Inverse, false>(n, nullptr, to_acc(gy_value(b)), g_l, x + xo, shift + po,
                                                raw + po, gx + xo, gshift + po, graw + po, clamp, inv_clamp);
        });
      },
      [&](int64_t b, int64_t begin, int64_t end) {
        copy_passive(g, begin, end, gy_vec ? gy_sample(b) : nullptr, gy_value(b), gx + b * g.sample_numel());
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
