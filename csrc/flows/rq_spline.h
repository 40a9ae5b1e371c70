// Params and CPU entry points of rq_spline, the elementwise rational-quadratic spline of
// Neural Spline Flows (the math is csrc/common/spline.h), and of its backward.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"

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
  void* grad_widths;           // [n, bins], contiguous
  void* grad_heights;          // [n, bins], contiguous
  void* grad_derivatives;      // [n, bins - 1], contiguous
};

void rq_spline_cpu(const RqSplineParams& p);
void rq_spline_backward_cpu(const RqSplineBackwardParams& p);

}  // namespace pygen
