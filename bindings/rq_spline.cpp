// Flow ops: the checks and params both devices share, and the CPU implementations.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/checks.h"
#include "bindings/flows.h"
#include "csrc/common/spline.h"

namespace pygen {

namespace {

// The RqLayout of t [*S, size] (S with `lead` dims) when its leading dims flatten to at
// most two strides (rows of a matrix; a conv output with its parameter dim moved last).
std::optional<RqLayout> spline_layout(const at::Tensor& t, int64_t lead) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (size, stride), outer first, merged
  for (int64_t d = 0; d < lead; ++d) {
    if (t.size(d) == 1) continue;
    if (!dims.empty() && dims.back().second == t.stride(d) * t.size(d))
      dims.back() = {dims.back().first * t.size(d), t.stride(d)};
    else
      dims.emplace_back(t.size(d), t.stride(d));
  }
  if (dims.size() > 2) return std::nullopt;
  RqLayout l{1, 0, 0, t.size(-1) > 1 ? t.stride(-1) : 1};
  if (!dims.empty()) l.inner = dims.back().first, l.elem_stride = dims.back().second;
  if (dims.size() == 2) l.outer_stride = dims.front().second;
  return l;
}

struct SplineRows {
  at::Tensor t;  // the tensor read: the argument, or a contiguous copy of it
  RqLayout layout;
};

// A parameter tensor [*x.shape, size], checked, read in place when spline_layout allows.
SplineRows spline_rows(const at::Tensor& t, const at::Tensor& x, const char* name, int64_t size,
                       const char* size_text) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ", x.scalar_type(),
                   ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), name, " must be on x's device ", x.device(), ", got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == x.dim() + 1 && t.sizes().slice(0, x.dim()) == x.sizes() && t.size(-1) == size,
                    name, " must have shape [*x.shape, ", size_text, "] = ", x.sizes(), " + [", size,
                    "], got ", t.sizes());
  if (const auto l = spline_layout(t, x.dim())) return {t, *l};
  const at::Tensor c = t.contiguous();
  return {c, *spline_layout(c, x.dim())};
}

struct RqSplineCall {
  at::Tensor x;
  SplineRows widths, heights, derivatives;
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
  check_rq_tail_bound(x_in, tail_bound);
  c.x = x_in.contiguous();
  c.widths = spline_rows(widths, x_in, "widths", bins, "K");
  c.heights = spline_rows(heights, x_in, "heights", bins, "K (widths' last dim)");
  c.derivatives = spline_rows(derivatives, x_in, "derivatives", bins - 1, "K - 1 (widths' last dim - 1)");
  c.in.n = c.x.numel();
  c.in.bins = int(bins);
  c.in.tail_bound = tail_bound;
  c.in.inverse = inverse;
  c.in.x = c.x.data_ptr();
  c.in.widths = c.widths.t.data_ptr();
  c.in.heights = c.heights.t.data_ptr();
  c.in.derivatives = c.derivatives.t.data_ptr();
  c.in.widths_layout = c.widths.layout;
  c.in.heights_layout = c.heights.layout;
  c.in.derivatives_layout = c.derivatives.layout;
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

void check_rq_tail_bound(const at::Tensor& x, double tail_bound) {
  // The kernels compute 2B in the compute type (float32 below float64).
  const double max_bound = x.scalar_type() == at::kDouble ? DBL_MAX / 2 : FLT_MAX / 2;
  TORCH_CHECK_VALUE(std::isfinite(tail_bound) && tail_bound > 0 && tail_bound <= max_bound,
                    "tail_bound must be positive and at most ", max_bound, " for ", x.scalar_type(), ", got ",
                    tail_bound);
}

void check_rq_finite(const at::Tensor& bad) {
  const int flags = bad.item<int>();
  std::string names;
  for (auto [bit, name] :
       {std::pair{kRqBadWidths, "widths"}, {kRqBadHeights, "heights"}, {kRqBadDerivatives, "derivatives"}})
    if (flags & bit) names += std::string(names.empty() ? "" : ", ") + name;
  TORCH_CHECK_VALUE(flags == 0, "rq_spline parameters must be finite: ", names, " hold NaN or inf values");
}

bool rq_spline_reads_in_place(const at::Tensor& params, int64_t lead) {
  return params.dim() != lead + 1 || spline_layout(params, lead).has_value();
}

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
  if (validate) check_rq_finite(bad);
  return {y, logabsdet};
}

namespace {

// The backward into gradients grad_w, grad_h [*x.shape, K] and grad_d [*x.shape, K - 1],
// each with an RqLayout; returns grad_x.
at::Tensor rq_spline_backward_into(const RqSplineCall& c, const std::optional<at::Tensor>& grad_y,
                                   const std::optional<at::Tensor>& grad_logabsdet, const at::Tensor& x,
                                   const at::Tensor& grad_w, const at::Tensor& grad_h,
                                   const at::Tensor& grad_d,
                                   const std::function<void(const RqSplineBackwardParams&)>& launch) {
  const at::Tensor gy = like_x(grad_y, x, "grad_y");
  const at::Tensor gl = like_x(grad_logabsdet, x, "grad_logabsdet");
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  if (c.in.n == 0) return grad_x;
  RqSplineBackwardParams p{};
  p.in = c.in;
  p.grad_y = grad_y ? gy.data_ptr() : nullptr;
  p.grad_logabsdet = grad_logabsdet ? gl.data_ptr() : nullptr;
  p.grad_x = grad_x.data_ptr();
  p.grad_widths = grad_w.data_ptr();
  p.grad_heights = grad_h.data_ptr();
  p.grad_derivatives = grad_d.data_ptr();
  p.grad_widths_layout = *spline_layout(grad_w, x.dim());
  p.grad_heights_layout = *spline_layout(grad_h, x.dim());
  p.grad_derivatives_layout = *spline_layout(grad_d, x.dim());
  launch(p);
  return grad_x;
}

// The bins K of packed parameters [*x.shape, 3K - 1], checked.
int64_t packed_bins(const at::Tensor& params, const at::Tensor& x) {
  TORCH_CHECK_TYPE(params.scalar_type() == x.scalar_type(), "params must have x's dtype ", x.scalar_type(),
                   ", got ", params.scalar_type());
  TORCH_CHECK(params.device() == x.device(), "params must be on x's device ", x.device(), ", got ",
              params.device());
  TORCH_CHECK_VALUE(params.dim() == x.dim() + 1 && params.sizes().slice(0, x.dim()) == x.sizes() &&
                        params.size(-1) >= 2 && (params.size(-1) + 1) % 3 == 0,
                    "params must have shape [*x.shape, 3K - 1] (widths, heights, derivatives) = ", x.sizes(),
                    " + [3K - 1], got ", params.sizes());
  return (params.size(-1) + 1) / 3;
}

// One copy of the whole parameters when they cannot be read in place, rather than one
// per slice.
at::Tensor packed_rows(const at::Tensor& params, const at::Tensor& x) {
  return rq_spline_reads_in_place(params, x.dim()) ? params : params.contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound, const std::function<void(const RqSplineBackwardParams&)>& launch) {
  const RqSplineCall c = rq_spline_call(x, widths, heights, derivatives, inverse, tail_bound);
  at::Tensor grad_widths = at::empty(widths.sizes(), x.options());
  at::Tensor grad_heights = at::empty(heights.sizes(), x.options());
  at::Tensor grad_derivatives = at::empty(derivatives.sizes(), x.options());
  at::Tensor grad_x = rq_spline_backward_into(c, grad_y, grad_logabsdet, x, grad_widths, grad_heights,
                                              grad_derivatives, launch);
  return {grad_x, grad_widths, grad_heights, grad_derivatives};
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_impl(
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound, bool validate,
    const std::function<void(const RqSplineParams&)>& launch) {
  const int64_t k = packed_bins(params, x);
  const at::Tensor rows = packed_rows(params, x);
  return rq_spline_impl(x, rows.narrow(-1, 0, k), rows.narrow(-1, k, k), rows.narrow(-1, 2 * k, k - 1),
                        inverse, tail_bound, validate, launch);
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound,
    const std::function<void(const RqSplineBackwardParams&)>& launch) {
  const int64_t k = packed_bins(params, x);
  const at::Tensor rows = packed_rows(params, x);
  const RqSplineCall c = rq_spline_call(x, rows.narrow(-1, 0, k), rows.narrow(-1, k, k),
                                        rows.narrow(-1, 2 * k, k - 1), inverse, tail_bound);
  // In the layout of params where that is one the kernel writes (a conv output's
  // gradient then needs no transposing copy), else contiguous: as the fake impl.
  at::Tensor grad_params = at::empty_like(params);
  if (!spline_layout(grad_params, x.dim())) grad_params = at::empty(params.sizes(), params.options());
  at::Tensor grad_x =
      rq_spline_backward_into(c, grad_y, grad_logabsdet, x, grad_params.narrow(-1, 0, k),
                              grad_params.narrow(-1, k, k), grad_params.narrow(-1, 2 * k, k - 1), launch);
  return {grad_x, grad_params};
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

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_cpu_op(const at::Tensor& x, const at::Tensor& params,
                                                           bool inverse, double tail_bound, bool validate) {
  return rq_spline_packed_impl(x, params, inverse, tail_bound, validate, rq_spline_cpu);
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound) {
  return rq_spline_packed_backward_impl(grad_y, grad_logabsdet, x, params, inverse, tail_bound,
                                        rq_spline_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("rq_spline", rq_spline_cpu_op);
  m.impl("rq_spline_backward", rq_spline_backward_cpu_op);
  m.impl("rq_spline_packed", rq_spline_packed_cpu_op);
  m.impl("rq_spline_packed_backward", rq_spline_packed_backward_cpu_op);
}

}  // namespace pygen
