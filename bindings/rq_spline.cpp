// Flow ops: the checks and params both devices share, and the CPU implementations.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <string>

#include "bindings/checks.h"
#include "bindings/flows.h"
#include "csrc/common/spline.h"

namespace pygen {

namespace {

// A parameter tensor [*x.shape, size] as rows of `size` with a contiguous last dim; a
// view when its leading dims flatten to one stride (slices of one network output do).
at::Tensor spline_rows(const at::Tensor& t, const at::Tensor& x, const char* name, int64_t size,
                       const char* size_text) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ", x.scalar_type(),
                   ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), name, " must be on x's device ", x.device(), ", got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == x.dim() + 1 && t.sizes().slice(0, x.dim()) == x.sizes() && t.size(-1) == size,
                    name, " must have shape [*x.shape, ", size_text, "] = ", x.sizes(), " + [", size,
                    "], got ", t.sizes());
  const at::Tensor rows = t.stride(-1) == 1 || size <= 1 ? t : t.contiguous();
  return rows.reshape({x.numel(), size});
}

struct RqSplineCall {
  at::Tensor x, widths, heights, derivatives;
  RqSplineInputs in;
};

RqSplineCall rq_spline_call(const at::Tensor& x_in, const at::Tensor& widths, const at::Tensor& heights,
                            const at::Tensor& derivatives, bool inverse, double tail_bound) {
  RqSplineCall c;
  c.in.dtype = to_dtype(x_in.scalar_type(), "x");
  check_device_compiled(x_in.device(), "x");
  TORCH_CHECK_VALUE(widths.dim() >= 1, "widths must have shape [*x.shape, K], got a scalar");
  const int64_t bins = widths.size(-1);
  TORCH_CHECK_VALUE(bins >= 1 && bins <= kRqMaxBins, "widths must have K in [1, ", kRqMaxBins,
                    "] bins in its last dim (minimum bin width 1e-3 times K at most 1), got ", bins);
  // The kernels compute 2B in the compute type (float32 below float64).
  const double max_bound = x_in.scalar_type() == at::kDouble ? DBL_MAX / 2 : FLT_MAX / 2;
  TORCH_CHECK_VALUE(std::isfinite(tail_bound) && tail_bound > 0 && tail_bound <= max_bound,
                    "tail_bound must be positive and at most ", max_bound, " for ", x_in.scalar_type(),
                    ", got ", tail_bound);
  c.x = x_in.contiguous();
  c.widths = spline_rows(widths, x_in, "widths", bins, "K");
  c.heights = spline_rows(heights, x_in, "heights", bins, "K (widths' last dim)");
  c.derivatives = spline_rows(derivatives, x_in, "derivatives", bins - 1, "K - 1 (widths' last dim - 1)");
  c.in.n = c.x.numel();
  c.in.bins = int(bins);
  c.in.tail_bound = tail_bound;
  c.in.inverse = inverse;
  c.in.x = c.x.data_ptr();
  c.in.widths = c.widths.data_ptr();
  c.in.heights = c.heights.data_ptr();
  c.in.derivatives = c.derivatives.data_ptr();
  c.in.widths_stride = c.widths.stride(0);
  c.in.heights_stride = c.heights.stride(0);
  c.in.derivatives_stride = c.derivatives.stride(0);
  return c;
}

at::Tensor like_x(const std::optional<at::Tensor>& t, const at::Tensor& x, const char* name) {
  if (!t) return at::Tensor();
  TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), name, " must have x's dtype ", x.scalar_type(),
                   ", got ", t->scalar_type());
  TORCH_CHECK_VALUE(t->sizes() == x.sizes(), name, " must have x's shape ", x.sizes(), ", got ", t->sizes());
  TORCH_CHECK(t->device() == x.device(), name, " must be on x's device ", x.device(), ", got ", t->device());
  return t->contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rq_spline_impl(const at::Tensor& x, const at::Tensor& widths,
                                                  const at::Tensor& heights, const at::Tensor& derivatives,
                                                  bool inverse, double tail_bound, bool validate,
                                                  const std::function<void(const RqSplineParams&)>& launch) {
  const RqSplineCall c = rq_spline_call(x, widths, heights, derivatives, inverse, tail_bound);
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor logabsdet = at::empty(x.sizes(), x.options());
  if (c.in.n == 0) return {y, logabsdet};
  const at::Tensor bad = validate ? at::zeros({1}, x.options().dtype(at::kInt)) : at::Tensor();
  RqSplineParams p{};
  p.in = c.in;
  p.y = y.data_ptr();
  p.logabsdet = logabsdet.data_ptr();
  p.bad = validate ? bad.data_ptr<int>() : nullptr;
  launch(p);
  if (validate) {
    const int flags = bad.item<int>();
    std::string names;
    for (auto [bit, name] :
         {std::pair{kRqBadWidths, "widths"}, {kRqBadHeights, "heights"}, {kRqBadDerivatives, "derivatives"}})
      if (flags & bit) names += std::string(names.empty() ? "" : ", ") + name;
    TORCH_CHECK_VALUE(flags == 0, "rq_spline parameters must be finite: ", names, " hold NaN or inf values");
  }
  return {y, logabsdet};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound, const std::function<void(const RqSplineBackwardParams&)>& launch) {
  const RqSplineCall c = rq_spline_call(x, widths, heights, derivatives, inverse, tail_bound);
  const at::Tensor gy = like_x(grad_y, x, "grad_y");
  const at::Tensor gl = like_x(grad_logabsdet, x, "grad_logabsdet");
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_widths = at::empty(widths.sizes(), x.options());
  at::Tensor grad_heights = at::empty(heights.sizes(), x.options());
  at::Tensor grad_derivatives = at::empty(derivatives.sizes(), x.options());
  if (c.in.n == 0) return {grad_x, grad_widths, grad_heights, grad_derivatives};
  RqSplineBackwardParams p{};
  p.in = c.in;
  p.grad_y = grad_y ? gy.data_ptr() : nullptr;
  p.grad_logabsdet = grad_logabsdet ? gl.data_ptr() : nullptr;
  p.grad_x = grad_x.data_ptr();
  p.grad_widths = grad_widths.data_ptr();
  p.grad_heights = grad_heights.data_ptr();
  p.grad_derivatives = grad_derivatives.data_ptr();
  launch(p);
  return {grad_x, grad_widths, grad_heights, grad_derivatives};
}

namespace {

std::tuple<at::Tensor, at::Tensor> rq_spline_cpu_op(const at::Tensor& x, const at::Tensor& widths,
                                                    const at::Tensor& heights, const at::Tensor& derivatives,
                                                    bool inverse, double tail_bound, bool validate) {
  return rq_spline_impl(x, widths, heights, derivatives, inverse, tail_bound, validate, rq_spline_cpu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound) {
  return rq_spline_backward_impl(grad_y, grad_logabsdet, x, widths, heights, derivatives, inverse, tail_bound,
                                 rq_spline_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("rq_spline", rq_spline_cpu_op);
  m.impl("rq_spline_backward", rq_spline_backward_cpu_op);
}

}  // namespace pygen
