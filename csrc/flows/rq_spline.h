// Params and CPU entry points of rq_spline, the elementwise rational-quadratic spline of
// Neural Spline Flows (the math is csrc/common/spline.h), and of its backward.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/spline.h"

namespace pygen {

// The inputs both directions read: x [n] (contiguous) and one parameter row per element,
// widths and heights [n, bins], derivatives [n, bins - 1], each with a contiguous last
// dim and `*_stride` elements between rows (the slices of one network output need no
// copy). All of the one dtype.
struct RqSplineInputs {
  DType dtype;
  int64_t n;
  int bins;
  double tail_bound;
  bool inverse;
  const void* x;
  const void* widths;
  const void* heights;
  const void* derivatives;
  int64_t widths_stride, heights_stride, derivatives_stride;
};

struct RqSplineParams {
  RqSplineInputs in;
  void* y;          // [n]
  void* logabsdet;  // [n]
  // Non-null: ORed with the RqBad bits (csrc/common/spline.h) of the parameter tensors
  // holding a non-finite value. Host memory on CPU, device memory on CUDA.
  int* bad;
};

struct RqSplineBackwardParams {
  RqSplineInputs in;
  const void* grad_y;          // [n]; null: zeros
  const void* grad_logabsdet;  // [n]; null: zeros
  void* grad_x;                // [n]
  void* grad_widths;           // [n, bins]
  void* grad_heights;          // [n, bins]
  void* grad_derivatives;      // [n, bins - 1]
  // Elements between the gradient rows (a contiguous last dim): bins, bins and bins - 1
  // for separate tensors, 3 bins - 1 for the slices of one packed gradient.
  int64_t grad_widths_stride, grad_heights_stride, grad_derivatives_stride;
};

// Element i of rq_spline: writes y[i] and logabsdet[i], and returns the RqBad bits of its
// parameter rows when the op validates (p.bad set). The CPU and CUDA kernels are loops
// over these; `scratch` holds 2 * bins values, or is null (the CUDA kernel recomputes).
template <class T>
PYGEN_HD int rq_spline_at(const RqSplineParams& p, int64_t i, AccOf<T>* scratch) {
  const RqSplineInputs& in = p.in;
  const T* w = static_cast<const T*>(in.widths) + i * in.widths_stride;
  const T* h = static_cast<const T*>(in.heights) + i * in.heights_stride;
  const T* d = static_cast<const T*>(in.derivatives) + i * in.derivatives_stride;
  AccOf<T> out, lad;
  rq_spline_element(w, h, d, in.bins, AccOf<T>(in.tail_bound), in.inverse,
                    to_acc(static_cast<const T*>(in.x)[i]), &out, &lad, scratch);
  static_cast<T*>(p.y)[i] = from_acc<T>(out);
  static_cast<T*>(p.logabsdet)[i] = from_acc<T>(lad);
  return p.bad ? rq_row_bad(w, h, d, in.bins) : 0;
}

// Element i of the backward: grad_x[i] and the gradients of its parameter rows.
template <class T>
PYGEN_HD void rq_spline_backward_at(const RqSplineBackwardParams& p, int64_t i, AccOf<T>* scratch) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* gl = static_cast<const T*>(p.grad_logabsdet);
  static_cast<T*>(p.grad_x)[i] = from_acc<T>(rq_spline_element_backward(
      static_cast<const T*>(in.widths) + i * in.widths_stride,
      static_cast<const T*>(in.heights) + i * in.heights_stride,
      static_cast<const T*>(in.derivatives) + i * in.derivatives_stride, K, C(in.tail_bound), in.inverse,
      to_acc(static_cast<const T*>(in.x)[i]), gy ? to_acc(gy[i]) : C(0), gl ? to_acc(gl[i]) : C(0),
      static_cast<T*>(p.grad_widths) + i * p.grad_widths_stride,
      static_cast<T*>(p.grad_heights) + i * p.grad_heights_stride,
      static_cast<T*>(p.grad_derivatives) + i * p.grad_derivatives_stride, scratch));
}

void rq_spline_cpu(const RqSplineParams& p);
void rq_spline_backward_cpu(const RqSplineBackwardParams& p);

}  // namespace pygen
