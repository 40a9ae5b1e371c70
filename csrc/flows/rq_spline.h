// Params and CPU entry points of rq_spline, the elementwise rational-quadratic spline of
// Neural Spline Flows (the math is csrc/common/spline.h), and of its backward.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/spline.h"

namespace pygen {

// Where a parameter tensor [n, size] keeps value j of element i: at
// row(i) + j * param_stride, with row(i) = (i / inner) * outer_stride + (i % inner) *
// elem_stride. Rows of a matrix are inner = n, elem_stride = the row stride,
// param_stride = 1; a conv output [B, C, P, H, W] with its parameter dim moved last is
// read in place as inner = H W, outer_stride = P H W, elem_stride = 1, param_stride = H W.
struct RqLayout {
  int64_t inner, outer_stride, elem_stride, param_stride;
  PYGEN_HD int64_t row(int64_t i) const { return i / inner * outer_stride + i % inner * elem_stride; }
};

// The inputs both directions read: x [n] (contiguous) and the parameters of each
// element, widths and heights [n, bins], derivatives [n, bins - 1], each in its own
// RqLayout (the slices of one network output need no copy). All of the one dtype.
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
  RqLayout widths_layout, heights_layout, derivatives_layout;
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
  RqLayout grad_widths_layout, grad_heights_layout, grad_derivatives_layout;
};

// Element i's parameters in tensor `base` of layout `l`.
template <class T>
PYGEN_HD RqRow<T> rq_row(T* base, const RqLayout& l, int64_t i) {
  return {base + l.row(i), l.param_stride};
}

// Element i of rq_spline: writes y[i] and logabsdet[i], and returns the RqBad bits of its
// parameter rows when the op validates (p.bad set). The CPU and CUDA kernels are loops
// over these (the CPU kernels run the same steps on 16 elements at once).
template <class T>
PYGEN_HD int rq_spline_at(const RqSplineParams& p, int64_t i) {
  const RqSplineInputs& in = p.in;
  const RqRow<const T> w = rq_row(static_cast<const T*>(in.widths), in.widths_layout, i);
  const RqRow<const T> h = rq_row(static_cast<const T*>(in.heights), in.heights_layout, i);
  const RqRow<const T> d = rq_row(static_cast<const T*>(in.derivatives), in.derivatives_layout, i);
  AccOf<T> out, lad;
  rq_spline_element(w, h, d, in.bins, AccOf<T>(in.tail_bound), in.inverse,
                    to_acc(static_cast<const T*>(in.x)[i]), &out, &lad);
  static_cast<T*>(p.y)[i] = from_acc<T>(out);
  static_cast<T*>(p.logabsdet)[i] = from_acc<T>(lad);
  return p.bad ? rq_row_bad(w, h, d, in.bins) : 0;
}

// Element i of the backward: grad_x[i] and the gradients of its parameter rows.
template <class T>
PYGEN_HD void rq_spline_backward_at(const RqSplineBackwardParams& p, int64_t i) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* gl = static_cast<const T*>(p.grad_logabsdet);
  static_cast<T*>(p.grad_x)[i] = from_acc<T>(rq_spline_element_backward(
      rq_row(static_cast<const T*>(in.widths), in.widths_layout, i),
      rq_row(static_cast<const T*>(in.heights), in.heights_layout, i),
      rq_row(static_cast<const T*>(in.derivatives), in.derivatives_layout, i), K, C(in.tail_bound),
      in.inverse, to_acc(static_cast<const T*>(in.x)[i]), gy ? to_acc(gy[i]) : C(0),
      gl ? to_acc(gl[i]) : C(0), rq_row(static_cast<T*>(p.grad_widths), p.grad_widths_layout, i),
      rq_row(static_cast<T*>(p.grad_heights), p.grad_heights_layout, i),
      rq_row(static_cast<T*>(p.grad_derivatives), p.grad_derivatives_layout, i)));
}

void rq_spline_cpu(const RqSplineParams& p);
void rq_spline_backward_cpu(const RqSplineBackwardParams& p);

}  // namespace pygen
