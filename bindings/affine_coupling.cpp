// affine_coupling and affine_coupling_layer: the checks and params both devices share,
// and the CPU implementation. Both ops run the same kernels; affine_coupling is the
// layer form with one channel, all of it transformed, and shift / raw scale tensors of
// their own.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "bindings/checks.h"
#include "bindings/flows.h"

namespace pygen {

namespace {

ScaleFn scale_fn_of(const std::string& name, std::optional<double> clamp) {
  TORCH_CHECK_VALUE(name == "exp" || name == "sigmoid", "scale_fn must be 'exp' or 'sigmoid', got '", name,
                    "'");
  if (name == "sigmoid") {
    TORCH_CHECK_VALUE(!clamp, "clamp applies to scale_fn='exp' only, got clamp=", *clamp, " with 'sigmoid'");
    return ScaleFn::kSigmoid;
  }
  if (!clamp) return ScaleFn::kExp;
  TORCH_CHECK_VALUE(*clamp > 0 && std::isfinite(*clamp), "clamp must be a finite number > 0 (or None), got ",
                    *clamp);
  return ScaleFn::kExpClamped;
}

// One call's tensors (contiguous) and geometry; shift and raw are element offsets into
// their tensors (the layer's both live in params).
struct AffineCall {
  at::Tensor x, shift, raw;
  int64_t shift_offset = 0, raw_offset = 0;
  ScaleFn fn;
  AffineGeometry g;
};

void* at_offset(const at::Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data_ptr()) + elements * int64_t(t.element_size());
}

// Read in place, at any stride (sum()'s gradient is an expanded scalar).
at::Tensor grad_logdet_of(const std::optional<at::Tensor>& grad_logdet, const at::Tensor& x, int64_t batch) {
  if (!grad_logdet) return at::Tensor();
  TORCH_CHECK_VALUE(grad_logdet->sizes() == c10::IntArrayRef{batch}, "grad_logdet must have shape [", batch,
                    "], got ", grad_logdet->sizes());
  return grad_logdet->to(x.device(), flow_logdet_dtype(x));
}

// grad_y as the backward kernels read it: in place where each sample's part is in x's
// layout or is one value broadcast over the sample (strides 0, as y.sum()'s gradient),
// at any batch stride; other layouts copied contiguous.
struct GradY {
  at::Tensor t;
  int64_t batch_stride = 0;
  bool broadcast = false;
};

GradY grad_y_of(const at::Tensor& grad_y, const at::Tensor& x) {
  check_like(grad_y, x, "grad_y", "x", x.sizes());
  bool dense = true, broadcast = true;
  int64_t expected = 1;
  for (int64_t d = grad_y.dim() - 1; d >= 1; --d) {
    if (grad_y.size(d) == 1) continue;
    dense = dense && grad_y.stride(d) == expected;
    broadcast = broadcast && grad_y.stride(d) == 0;
    expected *= grad_y.size(d);
  }
  if (dense) return {grad_y, grad_y.stride(0), false};
  if (broadcast) return {grad_y, grad_y.stride(0), true};
  const at::Tensor c = grad_y.contiguous();
  return {c, c.stride(0), false};
}

std::tuple<at::Tensor, at::Tensor> run_forward(
    const AffineCall& a, bool inverse, std::optional<double> clamp,
    const std::function<void(const AffineCouplingParams&)>& launch) {
  at::Tensor y = at::empty_like(a.x);
  at::Tensor logdet = at::empty({a.g.batch}, a.x.options().dtype(flow_logdet_dtype(a.x)));
  if (a.x.numel() == 0) return {y, logdet.zero_()};
  const int64_t chunks = affine_chunks(a.g.numel());
  const at::Tensor partial = chunks > 1 ? at::empty({a.g.batch, chunks}, logdet.options()) : at::Tensor();
  AffineCouplingParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.scale_fn = a.fn;
  p.inverse = inverse;
  p.clamp = clamp.value_or(0.0);
  p.g = a.g;
  p.x = a.x.data_ptr();
  p.shift = at_offset(a.shift, a.shift_offset);
  p.raw = at_offset(a.raw, a.raw_offset);
  p.y = y.data_ptr();
  p.logdet = logdet.data_ptr();
  p.partial = chunks > 1 ? partial.data_ptr() : nullptr;
  launch(p);
  return {y, logdet};
}

// Fills grad_x and the gradients of shift and raw (at their call offsets in gshift and graw).
void run_backward(const AffineCall& a, const std::optional<at::Tensor>& grad_y,
                  const std::optional<at::Tensor>& grad_logdet, bool inverse, std::optional<double> clamp,
                  const at::Tensor& gx, const at::Tensor& gshift, const at::Tensor& graw,
                  const std::function<void(const AffineCouplingBackwardParams&)>& launch) {
  const GradY gy = grad_y ? grad_y_of(*grad_y, a.x) : GradY{};
  const at::Tensor gl = grad_logdet_of(grad_logdet, a.x, a.g.batch);
  if (a.x.numel() == 0) return;
  AffineCouplingBackwardParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.scale_fn = a.fn;
  p.inverse = inverse;
  p.clamp = clamp.value_or(0.0);
  p.g = a.g;
  p.grad_y = grad_y ? gy.t.data_ptr() : nullptr;
  p.grad_y_batch_stride = gy.batch_stride;
  p.grad_y_broadcast = gy.broadcast;
  p.grad_logdet = grad_logdet ? gl.data_ptr() : nullptr;
  p.grad_logdet_stride = grad_logdet ? gl.stride(0) : 0;
  p.x = a.x.data_ptr();
  p.shift = at_offset(a.shift, a.shift_offset);
  p.raw = at_offset(a.raw, a.raw_offset);
  p.grad_x = gx.data_ptr();
  p.grad_shift = at_offset(gshift, a.shift_offset);
  p.grad_raw = at_offset(graw, a.raw_offset);
  launch(p);
}

void check_x(const at::Tensor& x, int64_t min_dim, const char* shape) {
  TORCH_CHECK_VALUE(x.dim() >= min_dim, "x must have shape ", shape, ", got ", x.sizes());
  to_dtype(x.scalar_type(), "x");
  check_device_compiled(x.device(), "x");
}

AffineCall affine_call(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw,
                       const std::string& scale_fn, std::optional<double> clamp) {
  check_x(x, 1, "[batch, ...]");
  AffineCall a;
  a.fn = scale_fn_of(scale_fn, clamp);
  a.x = x.contiguous();
  a.shift = contiguous_like(shift, x, "shift", "x", x.sizes());
  a.raw = contiguous_like(raw, x, "raw_scale", "x", x.sizes());
  const int64_t batch = x.size(0), numel = batch ? x.numel() / batch : 0;
  a.g = AffineGeometry{batch, 1, 0, 1, numel, numel, numel};
  return a;
}

AffineCall layer_call(const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active,
                      bool interleaved, const std::string& scale_fn, std::optional<double> clamp) {
  check_x(x, 2, "[batch, channels, ...]");
  const int64_t channels = x.size(1);
  TORCH_CHECK_VALUE(active >= 1 && active_begin >= 0 && active_begin + active <= channels,
                    "active_begin and active must pick 1 or more of x's ", channels,
                    " channels (0 <= active_begin, 1 <= active, active_begin + active <= ", channels,
                    "), got active_begin=", active_begin, ", active=", active);
  std::vector<int64_t> shape = x.sizes().vec();
  shape[1] = 2 * active;
  AffineCall a;
  a.fn = scale_fn_of(scale_fn, clamp);
  a.x = x.contiguous();
  a.shift = a.raw = contiguous_like(params, x, "params", "x", shape);
  const int64_t batch = x.size(0), inner = batch && channels ? x.numel() / (batch * channels) : 0;
  a.raw_offset = (interleaved ? 1 : active) * inner;
  a.g = AffineGeometry{
      batch, channels, active_begin, active, inner, 2 * active * inner, (interleaved ? 2 : 1) * inner};
  return a;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> affine_coupling_impl(
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingParams&)>& launch) {
  return run_forward(affine_call(x, shift, raw_scale, scale_fn, clamp), inverse, clamp, launch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingBackwardParams&)>& launch) {
  const AffineCall a = affine_call(x, shift, raw_scale, scale_fn, clamp);
  at::Tensor gx = at::empty_like(a.x), gshift = at::empty_like(a.x), graw = at::empty_like(a.x);
  run_backward(a, grad_y, grad_logdet, inverse, clamp, gx, gshift, graw, launch);
  return {gx, gshift, graw};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_impl(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingParams&)>& launch) {
  return run_forward(layer_call(x, params, active_begin, active, interleaved, scale_fn, clamp), inverse,
                     clamp, launch);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingBackwardParams&)>& launch) {
  const AffineCall a = layer_call(x, params, active_begin, active, interleaved, scale_fn, clamp);
  at::Tensor gx = at::empty_like(a.x), gparams = at::empty_like(a.shift);
  run_backward(a, grad_y, grad_logdet, inverse, clamp, gx, gparams, gparams, launch);
  return {gx, gparams};
}

namespace {

std::tuple<at::Tensor, at::Tensor> affine_coupling_cpu_op(const at::Tensor& x, const at::Tensor& shift,
                                                          const at::Tensor& raw_scale,
                                                          const std::string& scale_fn,
                                                          std::optional<double> clamp, bool inverse) {
  return affine_coupling_impl(x, shift, raw_scale, scale_fn, clamp, inverse, affine_coupling_cpu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse) {
  return affine_coupling_backward_impl(grad_y, grad_logdet, x, shift, raw_scale, scale_fn, clamp, inverse,
                                       affine_coupling_backward_cpu);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_cpu_op(const at::Tensor& x, const at::Tensor& params,
                                                                int64_t active_begin, int64_t active,
                                                                bool interleaved, const std::string& scale_fn,
                                                                std::optional<double> clamp, bool inverse) {
  return affine_coupling_layer_impl(x, params, active_begin, active, interleaved, scale_fn, clamp, inverse,
                                    affine_coupling_cpu);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse) {
  return affine_coupling_layer_backward_impl(grad_y, grad_logdet, x, params, active_begin, active,
                                             interleaved, scale_fn, clamp, inverse,
                                             affine_coupling_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("affine_coupling", affine_coupling_cpu_op);
  m.impl("affine_coupling_backward", affine_coupling_backward_cpu_op);
  m.impl("affine_coupling_layer", affine_coupling_layer_cpu_op);
  m.impl("affine_coupling_layer_backward", affine_coupling_layer_backward_cpu_op);
}

}  // namespace pygen
