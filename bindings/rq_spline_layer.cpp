// rq_spline_coupling_layer: the checks and params both devices share, and the CPU
// implementation. The kernels are rq_spline's (the same tiles on CPU, the same
// per-element spline on CUDA) with a layer's geometry around them: the active channels
// read and written inside the whole x and y, the passive ones copied, the conditioner's
// output read and its gradient written in place, and the log-det summed per sample.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "bindings/checks.h"
#include "bindings/flows.h"

namespace pygen {

namespace {

// Channel ch of a contiguous [B, channels, inner] tensor of sample 0.
void* at_channel(const at::Tensor& t, int64_t ch, int64_t inner) {
  return static_cast<char*>(t.data_ptr()) + ch * inner * int64_t(t.element_size());
}

struct RqLayerCall {
  at::Tensor x, params;  // contiguous
  RqSplineInputs in;
  RqCouplingGeometry g;
};

RqLayerCall rq_layer_call(const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active,
                          bool inverse, double tail_bound) {
  TORCH_CHECK_VALUE(x.dim() >= 2, "x must have shape [batch, channels, ...], got ", x.sizes());
  RqLayerCall c;
  c.in.dtype = to_dtype(x.scalar_type(), "x");
  check_device_compiled(x.device(), "x");
  const int64_t batch = x.size(0), channels = x.size(1);
  TORCH_CHECK_VALUE(active >= 1 && active_begin >= 0 && active_begin + active <= channels,
                    "active_begin and active must pick 1 or more of x's ", channels,
                    " channels (0 <= active_begin, 1 <= active, active_begin + active <= ", channels,
                    "), got active_begin=", active_begin, ", active=", active);
  TORCH_CHECK_TYPE(params.scalar_type() == x.scalar_type(), "params must have x's dtype ", x.scalar_type(),
                   ", got ", params.scalar_type());
  TORCH_CHECK(params.device() == x.device(), "params must be on x's device ", x.device(), ", got ",
              params.device());
  const int64_t per = params.dim() >= 2 ? params.size(1) / active : 0;  // 3K - 1
  TORCH_CHECK_VALUE(
      params.dim() == x.dim() && params.size(0) == batch && params.sizes().slice(2) == x.sizes().slice(2) &&
          params.size(1) == per * active && per >= 2 && (per + 1) % 3 == 0,
      "params must have shape [batch, active * (3K - 1), *x.shape[2:]] with K >= 1 (batch ", batch,
      ", active ", active, ", x.shape[2:] ", x.sizes().slice(2), "), got ", params.sizes());
  const int64_t bins = (per + 1) / 3;
  TORCH_CHECK_VALUE(bins <= kRqMaxBins, "params must hold K <= ", kRqMaxBins,
                    " bins per element (minimum bin width 1e-3 times K at most 1), got K = ", bins);
  check_rq_tail_bound(x, tail_bound);
  c.x = x.contiguous();
  c.params = params.contiguous();
  const int64_t inner = batch && channels ? x.numel() / (batch * channels) : 0;
  c.g = RqCouplingGeometry{batch, channels, active_begin, active, inner};
  c.in.n = batch * c.g.numel();
  c.in.bins = int(bins);
  c.in.tail_bound = tail_bound;
  c.in.inverse = inverse;
  c.in.x = c.x.data_ptr();
  // Element e = (b * active + c) * inner + s has its values `inner` apart, its row
  // starting at channel (b * active + c) * (3K - 1) of params, position s.
  const RqLayout rows{std::max<int64_t>(inner, 1), per * inner, 1, inner};
  c.in.widths = at_channel(c.params, 0, inner);
  c.in.heights = at_channel(c.params, bins, inner);
  c.in.derivatives = at_channel(c.params, 2 * bins, inner);
  c.in.widths_layout = c.in.heights_layout = c.in.derivatives_layout = rows;
  return c;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_impl(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound, bool validate, const std::function<void(const RqCouplingParams&)>& launch) {
  const RqLayerCall c = rq_layer_call(x, params, active_begin, active, inverse, tail_bound);
  at::Tensor y = at::empty_like(c.x);
  at::Tensor logdet = at::empty({c.g.batch}, c.x.options().dtype(flow_logdet_dtype(c.x)));
  if (c.x.numel() == 0) return {y, logdet.zero_()};
  const int64_t chunks = rq_chunks(c.g.numel());
  const at::Tensor partial = chunks > 1 ? at::empty({c.g.batch, chunks}, logdet.options()) : at::Tensor();
  const at::Tensor bad = validate ? at::zeros({1}, c.x.options().dtype(at::kInt)) : at::Tensor();
  RqCouplingParams p{};
  p.in = c.in;
  p.g = c.g;
  p.y = y.data_ptr();
  p.logdet = logdet.data_ptr();
  p.partial = chunks > 1 ? partial.data_ptr() : nullptr;
  p.bad = validate ? bad.data_ptr<int>() : nullptr;
  launch(p);
  if (validate) check_rq_finite(bad);
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound, const std::function<void(const RqCouplingBackwardParams&)>& launch) {
  const RqLayerCall c = rq_layer_call(x, params, active_begin, active, inverse, tail_bound);
  const at::Tensor gy = grad_y ? contiguous_like(*grad_y, c.x, "grad_y", "x", c.x.sizes()) : at::Tensor();
  at::Tensor gl;
  if (grad_logdet) {
    TORCH_CHECK_VALUE(grad_logdet->sizes() == c10::IntArrayRef{c.g.batch}, "grad_logabsdet must have shape [",
                      c.g.batch, "], got ", grad_logdet->sizes());
    gl = grad_logdet->to(c.x.device(), flow_logdet_dtype(c.x)).contiguous();
  }
  at::Tensor grad_x = at::empty_like(c.x), grad_params = at::empty_like(c.params);
  if (c.x.numel() == 0) return {grad_x, grad_params.zero_()};
  const int64_t inner = c.g.inner, bins = c.in.bins;
  RqCouplingBackwardParams p{};
  p.in = c.in;
  p.g = c.g;
  p.grad_y = grad_y ? gy.data_ptr() : nullptr;
  p.grad_logdet = grad_logdet ? gl.data_ptr() : nullptr;
  p.grad_x = grad_x.data_ptr();
  p.grad_widths = at_channel(grad_params, 0, inner);
  p.grad_heights = at_channel(grad_params, bins, inner);
  p.grad_derivatives = at_channel(grad_params, 2 * bins, inner);
  launch(p);
  return {grad_x, grad_params};
}

namespace {

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_cpu_op(const at::Tensor& x,
                                                                   const at::Tensor& params,
                                                                   int64_t active_begin, int64_t active,
                                                                   bool inverse, double tail_bound,
                                                                   bool validate) {
  return rq_spline_coupling_layer_impl(x, params, active_begin, active, inverse, tail_bound, validate,
                                       rq_spline_coupling_cpu);
}

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound) {
  return rq_spline_coupling_layer_backward_impl(grad_y, grad_logdet, x, params, active_begin, active, inverse,
                                                tail_bound, rq_spline_coupling_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("rq_spline_coupling_layer", rq_spline_coupling_layer_cpu_op);
  m.impl("rq_spline_coupling_layer_backward", rq_spline_coupling_layer_backward_cpu_op);
}

}  // namespace pygen
