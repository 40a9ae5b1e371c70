// Coupling-transform ops (affine_coupling, mix_logistic_cdf): the checks and params
// both devices share, and the CPU implementation.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "bindings/checks.h"
#include "bindings/flows.h"

namespace pygen {

namespace {

at::ScalarType logdet_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name,
                c10::IntArrayRef shape) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have ", ref_name, "'s dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, " (no broadcasting), got ",
                    t.sizes());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
  return t.contiguous();
}

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

struct AffineArgs {
  at::Tensor x, shift, raw;
  ScaleFn fn;
  int64_t batch, numel;
};

AffineArgs affine_args(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& raw,
                       const std::string& scale_fn, std::optional<double> clamp) {
  TORCH_CHECK_VALUE(x_in.dim() >= 1, "x must have shape [batch, ...], got a scalar");
  to_dtype(x_in.scalar_type(), "x");
  check_device_compiled(x_in.device(), "x");
  AffineArgs a;
  a.fn = scale_fn_of(scale_fn, clamp);
  a.x = x_in.contiguous();
  a.shift = like(shift, x_in, "shift", "x", x_in.sizes());
  a.raw = like(raw, x_in, "raw_scale", "x", x_in.sizes());
  a.batch = x_in.size(0);
  a.numel = a.batch ? x_in.numel() / a.batch : 0;
  return a;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> affine_coupling_impl(
    const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingParams&)>& launch) {
  const AffineArgs a = affine_args(x_in, shift, raw_scale, scale_fn, clamp);
  at::Tensor y = at::empty_like(a.x);
  at::Tensor logdet = at::empty({a.batch}, a.x.options().dtype(logdet_dtype(a.x)));
  if (a.x.numel() == 0) return {y, logdet.zero_()};
  const int64_t chunks = affine_chunks(a.numel);
  const at::Tensor partial = chunks > 1 ? at::empty({a.batch, chunks}, logdet.options()) : at::Tensor();
  AffineCouplingParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.scale_fn = a.fn;
  p.inverse = inverse;
  p.clamp = clamp.value_or(0.0);
  p.batch = a.batch;
  p.numel = a.numel;
  p.x = a.x.data_ptr();
  p.shift = a.shift.data_ptr();
  p.raw = a.raw.data_ptr();
  p.y = y.data_ptr();
  p.logdet = logdet.data_ptr();
  p.partial = chunks > 1 ? partial.data_ptr() : nullptr;
  launch(p);
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingBackwardParams&)>& launch) {
  const AffineArgs a = affine_args(x_in, shift, raw_scale, scale_fn, clamp);
  const at::Tensor gy = grad_y ? like(*grad_y, a.x, "grad_y", "x", a.x.sizes()) : at::Tensor();
  at::Tensor gl;
  if (grad_logdet) {
    TORCH_CHECK_VALUE(grad_logdet->sizes() == c10::IntArrayRef{a.batch}, "grad_logdet must have shape [",
                      a.batch, "], got ", grad_logdet->sizes());
    gl = grad_logdet->to(a.x.device(), logdet_dtype(a.x)).contiguous();
  }
  at::Tensor gx = at::empty_like(a.x), gshift = at::empty_like(a.x), graw = at::empty_like(a.x);
  if (a.x.numel() == 0) return {gx, gshift, graw};
  AffineCouplingBackwardParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.scale_fn = a.fn;
  p.inverse = inverse;
  p.clamp = clamp.value_or(0.0);
  p.batch = a.batch;
  p.numel = a.numel;
  p.grad_y = grad_y ? gy.data_ptr() : nullptr;
  p.grad_logdet = grad_logdet ? gl.data_ptr() : nullptr;
  p.x = a.x.data_ptr();
  p.shift = a.shift.data_ptr();
  p.raw = a.raw.data_ptr();
  p.grad_x = gx.data_ptr();
  p.grad_shift = gshift.data_ptr();
  p.grad_raw = graw.data_ptr();
  launch(p);
  return {gx, gshift, graw};
}

namespace {

struct MixArgs {
  at::Tensor x, logits, means, log_scales;
  int64_t k;
};

MixArgs mix_args(const at::Tensor& x_in, const at::Tensor& logits, const at::Tensor& means,
                 const at::Tensor& log_scales) {
  to_dtype(x_in.scalar_type(), "x");
  check_device_compiled(x_in.device(), "x");
  TORCH_CHECK_VALUE(logits.dim() == x_in.dim() + 1 && logits.sizes().slice(0, x_in.dim()) == x_in.sizes(),
                    "logits must have shape x.shape + [K] = ", x_in.sizes(), " + [K], got ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(-1) >= 1, "logits must have K >= 1 components, got shape ", logits.sizes());
  MixArgs a;
  a.x = x_in.contiguous();
  a.logits = like(logits, x_in, "logits", "x", logits.sizes());
  a.means = like(means, x_in, "means", "x", logits.sizes());
  a.log_scales = like(log_scales, x_in, "log_scales", "x", logits.sizes());
  a.k = logits.size(-1);
  return a;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_impl(
    const at::Tensor& x_in, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, double tol, int64_t max_iters,
    const std::function<void(const MixLogisticParams&)>& launch) {
  const MixArgs a = mix_args(x_in, logits, means, log_scales);
  TORCH_CHECK_VALUE(tol > 0 && std::isfinite(tol), "tol must be a finite number > 0, got ", tol);
  TORCH_CHECK_VALUE(max_iters >= 1 && max_iters <= 100000, "max_iters must be in [1, 100000], got ",
                    max_iters);
  at::Tensor y = at::empty_like(a.x);
  at::Tensor logdet = at::empty_like(a.x, a.x.options().dtype(logdet_dtype(a.x)));
  if (a.x.numel() == 0) return {y, logdet};
  const at::Tensor status = at::zeros({1}, a.x.options().dtype(at::kInt));
  MixLogisticParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.inverse = inverse;
  p.tol = tol;
  p.max_iters = int(max_iters);
  p.n = a.x.numel();
  p.k = a.k;
  p.x = a.x.data_ptr();
  p.logits = a.logits.data_ptr();
  p.means = a.means.data_ptr();
  p.log_scales = a.log_scales.data_ptr();
  p.y = y.data_ptr();
  p.logdet = logdet.data_ptr();
  p.status = status.data_ptr<int32_t>();
  launch(p);
  TORCH_CHECK_VALUE(status.item<int32_t>() == kMixOk,
                    "logits, means and log_scales must be finite (found NaN or inf)");
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_logistic_cdf_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x_in, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, const std::function<void(const MixLogisticBackwardParams&)>& launch) {
  const MixArgs a = mix_args(x_in, logits, means, log_scales);
  const at::Tensor gy = grad_y ? like(*grad_y, a.x, "grad_y", "x", a.x.sizes()) : at::Tensor();
  at::Tensor gl;
  if (grad_logdet) {
    TORCH_CHECK_VALUE(grad_logdet->sizes() == a.x.sizes(), "grad_logdet must have x's shape ", a.x.sizes(),
                      ", got ", grad_logdet->sizes());
    gl = grad_logdet->to(a.x.device(), logdet_dtype(a.x)).contiguous();
  }
  at::Tensor gin = at::empty_like(a.x), glog = at::empty_like(a.logits), gmean = at::empty_like(a.logits),
             gscale = at::empty_like(a.logits);
  if (a.x.numel() == 0) return {gin, glog, gmean, gscale};
  MixLogisticBackwardParams p{};
  p.dtype = to_dtype(a.x.scalar_type(), "x");
  p.inverse = inverse;
  p.n = a.x.numel();
  p.k = a.k;
  p.grad_y = grad_y ? gy.data_ptr() : nullptr;
  p.grad_logdet = grad_logdet ? gl.data_ptr() : nullptr;
  p.x = a.x.data_ptr();
  p.logits = a.logits.data_ptr();
  p.means = a.means.data_ptr();
  p.log_scales = a.log_scales.data_ptr();
  p.grad_in = gin.data_ptr();
  p.grad_logits = glog.data_ptr();
  p.grad_means = gmean.data_ptr();
  p.grad_log_scales = gscale.data_ptr();
  launch(p);
  return {gin, glog, gmean, gscale};
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

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_cpu_op(const at::Tensor& x, const at::Tensor& logits,
                                                           const at::Tensor& means,
                                                           const at::Tensor& log_scales, bool inverse,
                                                           double tol, int64_t max_iters) {
  return mix_logistic_cdf_impl(x, logits, means, log_scales, inverse, tol, max_iters, mix_logistic_cdf_cpu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_logistic_cdf_backward_cpu_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse) {
  return mix_logistic_cdf_backward_impl(grad_y, grad_logdet, x, logits, means, log_scales, inverse,
                                        mix_logistic_cdf_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("affine_coupling", affine_coupling_cpu_op);
  m.impl("affine_coupling_backward", affine_coupling_backward_cpu_op);
  m.impl("mix_logistic_cdf", mix_logistic_cdf_cpu_op);
  m.impl("mix_logistic_cdf_backward", mix_logistic_cdf_backward_cpu_op);
}

}  // namespace pygen
