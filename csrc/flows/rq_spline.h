// Params and CPU entry points of rq_spline, the elementwise rational-quadratic spline of
// Neural Spline Flows (the math is csrc/common/spline.h), of its coupling-layer form
// (rq_spline_coupling_layer), and of their backwards.
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

// One element's output and log|d out / d in| at input `v`, its parameters element e of
// in's layouts; returns the RqBad bits of its parameter rows when `check`.
template <class T>
PYGEN_HD int rq_spline_eval(const RqSplineInputs& in, int64_t e, AccOf<T> v, bool check, AccOf<T>* out,
                            AccOf<T>* lad) {
  const RqRow<const T> w = rq_row(static_cast<const T*>(in.widths), in.widths_layout, e);
  const RqRow<const T> h = rq_row(static_cast<const T*>(in.heights), in.heights_layout, e);
  const RqRow<const T> d = rq_row(static_cast<const T*>(in.derivatives), in.derivatives_layout, e);
  rq_spline_element(w, h, d, in.bins, AccOf<T>(in.tail_bound), in.inverse, v, out, lad);
  return check ? rq_row_bad(w, h, d, in.bins) : 0;
}

// The backward of element e at input `v` for the loss gy * out + gl * lad: the gradients
// of its parameter rows into gw, gh, gd (in the layouts gwl, ghl, gdl); returns grad_x.
template <class T>
PYGEN_HD AccOf<T> rq_spline_grad(const RqSplineInputs& in, int64_t e, AccOf<T> v, AccOf<T> gy, AccOf<T> gl,
                                 void* gw, const RqLayout& gwl, void* gh, const RqLayout& ghl, void* gd,
                                 const RqLayout& gdl) {
  return rq_spline_element_backward(rq_row(static_cast<const T*>(in.widths), in.widths_layout, e),
                                    rq_row(static_cast<const T*>(in.heights), in.heights_layout, e),
                                    rq_row(static_cast<const T*>(in.derivatives), in.derivatives_layout, e),
                                    in.bins, AccOf<T>(in.tail_bound), in.inverse, v, gy, gl,
                                    rq_row(static_cast<T*>(gw), gwl, e), rq_row(static_cast<T*>(gh), ghl, e),
                                    rq_row(static_cast<T*>(gd), gdl, e));
}

// Element i of rq_spline: writes y[i] and logabsdet[i], and returns the RqBad bits of its
// parameter rows when the op validates (p.bad set). The CUDA kernels are loops over these
// (the CPU kernels run the same steps on 16 elements at once).
template <class T>
PYGEN_HD int rq_spline_at(const RqSplineParams& p, int64_t i) {
  AccOf<T> out, lad;
  const int bad =
      rq_spline_eval<T>(p.in, i, to_acc(static_cast<const T*>(p.in.x)[i]), p.bad != nullptr, &out, &lad);
  static_cast<T*>(p.y)[i] = from_acc<T>(out);
  static_cast<T*>(p.logabsdet)[i] = from_acc<T>(lad);
  return bad;
}

// Element i of the backward: grad_x[i] and the gradients of its parameter rows.
template <class T>
PYGEN_HD void rq_spline_backward_at(const RqSplineBackwardParams& p, int64_t i) {
  using C = AccOf<T>;
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* gl = static_cast<const T*>(p.grad_logabsdet);
  static_cast<T*>(p.grad_x)[i] = from_acc<T>(
      rq_spline_grad<T>(p.in, i, to_acc(static_cast<const T*>(p.in.x)[i]), gy ? to_acc(gy[i]) : C(0),
                        gl ? to_acc(gl[i]) : C(0), p.grad_widths, p.grad_widths_layout, p.grad_heights,
                        p.grad_heights_layout, p.grad_derivatives, p.grad_derivatives_layout));
}

// A spline coupling layer (rq_spline_coupling_layer): x [batch, channels, inner] with
// channels [active_begin, active_begin + active) through the spline and the others
// copied to y in the same pass. Active element i of sample b (i < numel()) is element
// e = b * numel() + i of the parameter layouts (the conditioner's output read in place).
struct RqCouplingGeometry {
  int64_t batch, channels, active_begin, active, inner;

  PYGEN_HD int64_t numel() const { return active * inner; }
  PYGEN_HD int64_t passive_numel() const { return (channels - active) * inner; }
  // The active channels of a sample are contiguous in x.
  PYGEN_HD int64_t active_offset(int64_t b, int64_t i) const {
    return (b * channels + active_begin) * inner + i;
  }
  // Offset in x of passive element j of sample b (j < passive_numel()).
  PYGEN_HD int64_t passive_offset(int64_t b, int64_t j) const {
    return b * channels * inner + (j < active_begin * inner ? j : j + numel());
  }
};

// Active elements of a sample whose log-dets one CPU task or CUDA block sums into one
// partial, in a fixed order, so the log-det does not depend on the thread count or the
// launch. A multiple of the CPU kernel's 16 lanes.
constexpr int64_t kRqChunk = 1024;

PYGEN_HD int64_t rq_chunks(int64_t numel) { return numel == 0 ? 1 : (numel + kRqChunk - 1) / kRqChunk; }

struct RqCouplingParams {
  RqSplineInputs in;  // x: the whole x; n = batch * g.numel()
  RqCouplingGeometry g;
  void* y;        // x's layout, the passive channels copied
  void* logdet;   // [batch], float32 (float64 for float64): sum of log|dy/dx| over the active elements
  void* partial;  // [batch, rq_chunks(g.numel())], logdet's dtype; null for one chunk
  int* bad;       // as RqSplineParams::bad
};

// The layer's backward: grad_y (x's layout) and grad_logdet [batch] (logdet's dtype;
// either null: zeros) into grad_x (x's layout; the passive channels get grad_y) and the
// parameters' gradients, in the layouts of in's parameters.
struct RqCouplingBackwardParams {
  RqSplineInputs in;
  RqCouplingGeometry g;
  const void* grad_y;
  const void* grad_logdet;
  void* grad_x;
  void* grad_widths;
  void* grad_heights;
  void* grad_derivatives;
};

// Active element i of sample b of the layer: writes y and returns its log|dy/dx| (the
// CUDA kernel sums these); ORs the RqBad bits of its rows into *bad when validating.
template <class T>
PYGEN_HD AccOf<T> rq_coupling_at(const RqCouplingParams& p, int64_t b, int64_t i, int* bad) {
  const int64_t o = p.g.active_offset(b, i);
  AccOf<T> out, lad;
  *bad |= rq_spline_eval<T>(p.in, b * p.g.numel() + i, to_acc(static_cast<const T*>(p.in.x)[o]),
                            p.bad != nullptr, &out, &lad);
  static_cast<T*>(p.y)[o] = from_acc<T>(out);
  return lad;
}

// Active element i of sample b of the layer's backward.
template <class T>
PYGEN_HD void rq_coupling_backward_at(const RqCouplingBackwardParams& p, int64_t b, int64_t i) {
  using C = AccOf<T>;
  const int64_t o = p.g.active_offset(b, i);
  const T* gy = static_cast<const T*>(p.grad_y);
  const C* gl = static_cast<const C*>(p.grad_logdet);
  const RqSplineInputs& in = p.in;
  static_cast<T*>(p.grad_x)[o] = from_acc<T>(
      rq_spline_grad<T>(in, b * p.g.numel() + i, to_acc(static_cast<const T*>(in.x)[o]),
                        gy ? to_acc(gy[o]) : C(0), gl ? gl[b] : C(0), p.grad_widths, in.widths_layout,
                        p.grad_heights, in.heights_layout, p.grad_derivatives, in.derivatives_layout));
}

void rq_spline_cpu(const RqSplineParams& p);
void rq_spline_backward_cpu(const RqSplineBackwardParams& p);
void rq_spline_coupling_cpu(const RqCouplingParams& p);
void rq_spline_coupling_backward_cpu(const RqCouplingBackwardParams& p);

}  // namespace pygen
