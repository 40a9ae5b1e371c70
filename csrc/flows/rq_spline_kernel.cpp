// CPU kernels of rq_spline and its backward. Compiled once per ISA (PYGEN_CPU_NS names
// the namespace): a parallel loop over elements, each one spline of csrc/common/spline.h,
// with the softmax exponentials of its rows kept in a per-task scratch buffer.
#include <algorithm>
#include <vector>

#include "csrc/common/parallel_for.h"
#include "csrc/flows/rq_spline.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

// Elements per task: a few thousand parameter values.
int64_t grain(int bins) { return std::max<int64_t>(1, 8192 / bins); }

template <class T>
void forward(const RqSplineParams& p) {
  parallel_for(0, p.in.n, grain(p.in.bins), [&](int64_t i0, int64_t i1) {
    int bad = 0;
    std::vector<AccOf<T>> scratch(2 * p.in.bins);
    for (int64_t i = i0; i < i1; ++i) bad |= rq_spline_at<T>(p, i, scratch.data());
    if (bad) __atomic_fetch_or(p.bad, bad, __ATOMIC_RELAXED);
  });
}

template <class T>
void backward(const RqSplineBackwardParams& p) {
  parallel_for(0, p.in.n, grain(p.in.bins), [&](int64_t i0, int64_t i1) {
    std::vector<AccOf<T>> scratch(2 * p.in.bins);
    for (int64_t i = i0; i < i1; ++i) rq_spline_backward_at<T>(p, i, scratch.data());
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
