// mix_logistic_cdf: the checks and params both devices share, and the CPU
// implementation; and the argument check the coupling ops share.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "bindings/checks.h"
#include "bindings/flows.h"

namespace pygen {

void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name,
                c10::IntArrayRef shape) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have ", ref_name, "'s dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, " (no broadcasting), got ",
                    t.sizes());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
}

at::Tensor contiguous_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name,
                           c10::IntArrayRef shape) {
  check_like(t, ref, name, ref_name, shape);
  return t.contiguous();
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
  a.logits = contiguous_like(logits, x_in, "logits", "x", logits.sizes());
  a.means = contiguous_like(means, x_in, "means", "x", logits.sizes());
  a.log_scales = contiguous_like(log_scales, x_in, "log_scales", "x", logits.sizes());
  a.k = logits.size(-1);
  return a;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_impl(
    const at::Tensor& x_in, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, double tol, int64_t max_iters, bool validate,
    const std::function<void(const MixLogisticParams&)>& launch) {
  const MixArgs a = mix_args(x_in, logits, means, log_scales);
  TORCH_CHECK_VALUE(tol > 0 && std::isfinite(tol), "tol must be a finite number > 0, got ", tol);
  TORCH_CHECK_VALUE(max_iters >= 1 && max_iters <= 100000, "max_iters must be in [1, 100000], got ",
                    max_iters);
  at::Tensor y = at::empty_like(a.x);
  at::Tensor logdet = at::empty_like(a.x, a.x.options().dtype(flow_logdet_dtype(a.x)));
  if (a.x.numel() == 0) return {y, logdet};
  const at::Tensor status = validate ? at::zeros({1}, a.x.options().dtype(at::kInt)) : at::Tensor();
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
  p.status = validate ? status.data_ptr<int32_t>() : nullptr;
  launch(p);
  TORCH_CHECK_VALUE(!validate || status.item<int32_t>() == kMixOk,
                    "logits, means and log_scales must be finite (found NaN or inf)");
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_logistic_cdf_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x_in, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, const std::function<void(const MixLogisticBackwardParams&)>& launch) {
  const MixArgs a = mix_args(x_in, logits, means, log_scales);
  const at::Tensor gy = grad_y ? contiguous_like(*grad_y, a.x, "grad_y", "x", a.x.sizes()) : at::Tensor();
  at::Tensor gl;
  if (grad_logdet) {
    TORCH_CHECK_VALUE(grad_logdet->sizes() == a.x.sizes(), "grad_logdet must have x's shape ", a.x.sizes(),
                      ", got ", grad_logdet->sizes());
    gl = grad_logdet->to(a.x.device(), flow_logdet_dtype(a.x)).contiguous();
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

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_cpu_op(const at::Tensor& x, const at::Tensor& logits,
                                                           const at::Tensor& means,
                                                           const at::Tensor& log_scales, bool inverse,
                                                           double tol, int64_t max_iters, bool validate) {
  return mix_logistic_cdf_impl(x, logits, means, log_scales, inverse, tol, max_iters, validate,
                               mix_logistic_cdf_cpu);
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
  m.impl("mix_logistic_cdf", mix_logistic_cdf_cpu_op);
  m.impl("mix_logistic_cdf_backward", mix_logistic_cdf_backward_cpu_op);
}

}  // namespace pygen
