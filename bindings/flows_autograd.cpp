// Autograd of affine_coupling, affine_coupling_layer, mix_logistic_cdf, rq_spline,
// rq_spline_packed and rq_spline_coupling_layer in C++, and their eager entry points (pygen._C.<op>). A
// coupling layer calls one of these per forward on tensors of a few thousand elements, where torch.library's
// Python autograd (a Python context object and two Python calls per step) and torch.ops' argument boxing cost
// more than the kernels; here both directions stay in the dispatcher. The backward kernels read the saved
// inputs only (nothing else is stored), for both devices.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/python.h>

#include <optional>
#include <string>
#include <tuple>

#include "bindings/flows.h"

namespace pygen {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using AffineFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const std::string&, std::optional<double>, bool);
using AffineBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const std::optional<at::Tensor>&,
                                                                        const std::optional<at::Tensor>&,
                                                                        const at::Tensor&, const at::Tensor&,
                                                                        const at::Tensor&, const std::string&,
                                                                        std::optional<double>, bool);
using LayerFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                                   bool, const std::string&, std::optional<double>, bool);
using LayerBackwardFn = std::tuple<at::Tensor, at::Tensor>(const std::optional<at::Tensor>&,
                                                           const std::optional<at::Tensor>&,
                                                           const at::Tensor&, const at::Tensor&, int64_t,
                                                           int64_t, bool, const std::string&,
                                                           std::optional<double>, bool);
using MixFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, bool, double, int64_t, bool);
using MixBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, bool);
using SplineFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, bool, double, bool);
using SplineBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, bool, double);
using PackedFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, bool, double, bool);
using PackedBackwardFn = std::tuple<at::Tensor, at::Tensor>(const std::optional<at::Tensor>&,
                                                            const std::optional<at::Tensor>&,
                                                            const at::Tensor&, const at::Tensor&, bool,
                                                            double);
using SplineLayerFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t,
                                                         int64_t, bool, double, bool);
using SplineLayerBackwardFn = std::tuple<at::Tensor, at::Tensor>(const std::optional<at::Tensor>&,
                                                                 const std::optional<at::Tensor>&,
                                                                 const at::Tensor&, const at::Tensor&,
                                                                 int64_t, int64_t, bool, double);

template <class Fn>
c10::TypedOperatorHandle<Fn> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

const c10::TypedOperatorHandle<AffineFn>& affine_op() {
  static const auto op = typed_op<AffineFn>("pygen::affine_coupling");
  return op;
}

const c10::TypedOperatorHandle<LayerFn>& layer_op() {
  static const auto op = typed_op<LayerFn>("pygen::affine_coupling_layer");
  return op;
}

const c10::TypedOperatorHandle<MixFn>& mix_op() {
  static const auto op = typed_op<MixFn>("pygen::mix_logistic_cdf");
  return op;
}

const c10::TypedOperatorHandle<SplineFn>& spline_op() {
  static const auto op = typed_op<SplineFn>("pygen::rq_spline");
  return op;
}

const c10::TypedOperatorHandle<PackedFn>& packed_op() {
  static const auto op = typed_op<PackedFn>("pygen::rq_spline_packed");
  return op;
}

const c10::TypedOperatorHandle<SplineLayerFn>& spline_layer_op() {
  static const auto op = typed_op<SplineLayerFn>("pygen::rq_spline_coupling_layer");
  return op;
}

// An output the loss does not reach has no gradient: the backward kernels read null as zeros.
std::optional<at::Tensor> grad_or_none(const at::Tensor& g) {
  return g.defined() ? std::optional<at::Tensor>(g) : std::nullopt;
}

struct AffineCouplingFunction : torch::autograd::Function<AffineCouplingFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& shift,
                               const at::Tensor& raw_scale, const std::string& scale_fn,
                               std::optional<double> clamp, bool inverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Contiguous once, for both kernels (a layer passes strided views of its tensors).
    const at::Tensor xc = x.contiguous(), sc = shift.contiguous(), rc = raw_scale.contiguous();
    auto [y, logdet] = affine_op().call(xc, sc, rc, scale_fn, clamp, inverse);
    ctx->save_for_backward({xc, sc, rc});
    ctx->saved_data["scale_fn"] = scale_fn;
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["inverse"] = inverse;
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<AffineBackwardFn>("pygen::affine_coupling_backward");
    const variable_list s = ctx->get_saved_variables();
    auto [gx, gshift, graw] =
        op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1], s[2],
                ctx->saved_data["scale_fn"].toStringRef(), ctx->saved_data["clamp"].toOptional<double>(),
                ctx->saved_data["inverse"].toBool());
    return {gx, gshift, graw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct AffineCouplingLayerFunction : torch::autograd::Function<AffineCouplingLayerFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& params,
                               int64_t active_begin, int64_t active, bool interleaved,
                               const std::string& scale_fn, std::optional<double> clamp, bool inverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor xc = x.contiguous(), pc = params.contiguous();
    auto [y, logdet] = layer_op().call(xc, pc, active_begin, active, interleaved, scale_fn, clamp, inverse);
    ctx->save_for_backward({xc, pc});
    ctx->saved_data["active_begin"] = active_begin;
    ctx->saved_data["active"] = active;
    ctx->saved_data["interleaved"] = interleaved;
    ctx->saved_data["scale_fn"] = scale_fn;
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["inverse"] = inverse;
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<LayerBackwardFn>("pygen::affine_coupling_layer_backward");
    const variable_list s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    auto [gx, gparams] =
        op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1], d["active_begin"].toInt(),
                d["active"].toInt(), d["interleaved"].toBool(), d["scale_fn"].toStringRef(),
                d["clamp"].toOptional<double>(), d["inverse"].toBool());
    return {gx, gparams, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct MixLogisticCdfFunction : torch::autograd::Function<MixLogisticCdfFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& logits,
                               const at::Tensor& means, const at::Tensor& log_scales, bool inverse,
                               double tol, int64_t max_iters, bool validate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor xc = x.contiguous(), lc = logits.contiguous(), mc = means.contiguous(),
                     sc = log_scales.contiguous();
    auto [y, logdet] = mix_op().call(xc, lc, mc, sc, inverse, tol, max_iters, validate);
    // The backward evaluates at the point of x-space: the input, or the inverse's output.
    ctx->save_for_backward({inverse ? y : xc, lc, mc, sc});
    ctx->saved_data["inverse"] = inverse;
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<MixBackwardFn>("pygen::mix_logistic_cdf_backward");
    const variable_list s = ctx->get_saved_variables();
    auto [gx, glogits, gmeans, gscales] = op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1],
                                                  s[2], s[3], ctx->saved_data["inverse"].toBool());
    return {gx, glogits, gmeans, gscales, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct RqSplineFunction : torch::autograd::Function<RqSplineFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& widths,
                               const at::Tensor& heights, const at::Tensor& derivatives, bool inverse,
                               double tail_bound, bool validate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, logabsdet] = spline_op().call(x, widths, heights, derivatives, inverse, tail_bound, validate);
    ctx->save_for_backward({x, widths, heights, derivatives});
    ctx->saved_data["inverse"] = inverse;
    ctx->saved_data["tail_bound"] = tail_bound;
    return {y, logabsdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<SplineBackwardFn>("pygen::rq_spline_backward");
    const variable_list s = ctx->get_saved_variables();
    auto [gx, gw, gh, gd] =
        op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1], s[2], s[3],
                ctx->saved_data["inverse"].toBool(), ctx->saved_data["tail_bound"].toDouble());
    return {gx, gw, gh, gd, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct RqSplinePackedFunction : torch::autograd::Function<RqSplinePackedFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& params,
                               bool inverse, double tail_bound, bool validate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Parameters the kernels cannot read in place copied once, for both kernels; a conv
    // output's (its parameter dim moved last) are read in place, and their gradient comes
    // back in the same layout.
    const at::Tensor xc = x.contiguous();
    const at::Tensor pc = rq_spline_reads_in_place(params, x.dim()) ? params : params.contiguous();
    auto [y, logabsdet] = packed_op().call(xc, pc, inverse, tail_bound, validate);
    ctx->save_for_backward({xc, pc});
    ctx->saved_data["inverse"] = inverse;
    ctx->saved_data["tail_bound"] = tail_bound;
    return {y, logabsdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<PackedBackwardFn>("pygen::rq_spline_packed_backward");
    const variable_list s = ctx->get_saved_variables();
    auto [gx, gparams] =
        op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1],
                ctx->saved_data["inverse"].toBool(), ctx->saved_data["tail_bound"].toDouble());
    return {gx, gparams, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct RqSplineCouplingLayerFunction : torch::autograd::Function<RqSplineCouplingLayerFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& params,
                               int64_t active_begin, int64_t active, bool inverse, double tail_bound,
                               bool validate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Contiguous once, for both kernels (a conv conditioner's output already is).
    const at::Tensor xc = x.contiguous(), pc = params.contiguous();
    auto [y, logdet] = spline_layer_op().call(xc, pc, active_begin, active, inverse, tail_bound, validate);
    ctx->save_for_backward({xc, pc});
    ctx->saved_data["active_begin"] = active_begin;
    ctx->saved_data["active"] = active;
    ctx->saved_data["inverse"] = inverse;
    ctx->saved_data["tail_bound"] = tail_bound;
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<SplineLayerBackwardFn>("pygen::rq_spline_coupling_layer_backward");
    const variable_list s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    auto [gx, gparams] =
        op.call(grad_or_none(grads[0]), grad_or_none(grads[1]), s[0], s[1], d["active_begin"].toInt(),
                d["active"].toInt(), d["inverse"].toBool(), d["tail_bound"].toDouble());
    return {gx, gparams, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> affine_coupling_autograd(const at::Tensor& x, const at::Tensor& shift,
                                                            const at::Tensor& raw_scale,
                                                            const std::string& scale_fn,
                                                            std::optional<double> clamp, bool inverse) {
  const variable_list out = AffineCouplingFunction::apply(x, shift, raw_scale, scale_fn, clamp, inverse);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_autograd(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse) {
  const variable_list out = AffineCouplingLayerFunction::apply(x, params, active_begin, active, interleaved,
                                                               scale_fn, clamp, inverse);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_autograd(const at::Tensor& x, const at::Tensor& logits,
                                                             const at::Tensor& means,
                                                             const at::Tensor& log_scales, bool inverse,
                                                             double tol, int64_t max_iters, bool validate) {
  const variable_list out =
      MixLogisticCdfFunction::apply(x, logits, means, log_scales, inverse, tol, max_iters, validate);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> rq_spline_autograd(const at::Tensor& x, const at::Tensor& widths,
                                                      const at::Tensor& heights,
                                                      const at::Tensor& derivatives, bool inverse,
                                                      double tail_bound, bool validate) {
  const variable_list out =
      RqSplineFunction::apply(x, widths, heights, derivatives, inverse, tail_bound, validate);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_autograd(const at::Tensor& x, const at::Tensor& params,
                                                             bool inverse, double tail_bound, bool validate) {
  const variable_list out = RqSplinePackedFunction::apply(x, params, inverse, tail_bound, validate);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_autograd(const at::Tensor& x,
                                                                     const at::Tensor& params,
                                                                     int64_t active_begin, int64_t active,
                                                                     bool inverse, double tail_bound,
                                                                     bool validate) {
  const variable_list out =
      RqSplineCouplingLayerFunction::apply(x, params, active_begin, active, inverse, tail_bound, validate);
  return {out[0], out[1]};
}

// The same dispatcher calls as torch.ops.pygen.<op>, without torch.ops' Python-side
// argument boxing.
std::tuple<at::Tensor, at::Tensor> eager_affine_coupling(const at::Tensor& x, const at::Tensor& shift,
                                                         const at::Tensor& raw_scale,
                                                         const std::string& scale_fn,
                                                         std::optional<double> clamp, bool inverse) {
  return affine_op().call(x, shift, raw_scale, scale_fn, clamp, inverse);
}

std::tuple<at::Tensor, at::Tensor> eager_affine_coupling_layer(const at::Tensor& x, const at::Tensor& params,
                                                               int64_t active_begin, int64_t active,
                                                               bool interleaved, const std::string& scale_fn,
                                                               std::optional<double> clamp, bool inverse) {
  return layer_op().call(x, params, active_begin, active, interleaved, scale_fn, clamp, inverse);
}

std::tuple<at::Tensor, at::Tensor> eager_mix_logistic_cdf(const at::Tensor& x, const at::Tensor& logits,
                                                          const at::Tensor& means,
                                                          const at::Tensor& log_scales, bool inverse,
                                                          double tol, int64_t max_iters, bool validate) {
  return mix_op().call(x, logits, means, log_scales, inverse, tol, max_iters, validate);
}

std::tuple<at::Tensor, at::Tensor> eager_rq_spline(const at::Tensor& x, const at::Tensor& widths,
                                                   const at::Tensor& heights, const at::Tensor& derivatives,
                                                   bool inverse, double tail_bound, bool validate) {
  return spline_op().call(x, widths, heights, derivatives, inverse, tail_bound, validate);
}

std::tuple<at::Tensor, at::Tensor> eager_rq_spline_packed(const at::Tensor& x, const at::Tensor& params,
                                                          bool inverse, double tail_bound, bool validate) {
  return packed_op().call(x, params, inverse, tail_bound, validate);
}

std::tuple<at::Tensor, at::Tensor> eager_rq_spline_coupling_layer(const at::Tensor& x,
                                                                  const at::Tensor& params,
                                                                  int64_t active_begin, int64_t active,
                                                                  bool inverse, double tail_bound,
                                                                  bool validate) {
  return spline_layer_op().call(x, params, active_begin, active, inverse, tail_bound, validate);
}

}  // namespace

void bind_flows(pybind11::module_& m) {
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("affine_coupling", &eager_affine_coupling, no_gil,
        "Eager pygen::affine_coupling (pygen.ops.affine_coupling calls it).");
  m.def("affine_coupling_layer", &eager_affine_coupling_layer, no_gil,
        "Eager pygen::affine_coupling_layer (pygen.ops.affine_coupling_layer calls it).");
  m.def("mix_logistic_cdf", &eager_mix_logistic_cdf, no_gil,
        "Eager pygen::mix_logistic_cdf (pygen.ops.mix_logistic_cdf calls it).");
  m.def("rq_spline", &eager_rq_spline, no_gil, "Eager pygen::rq_spline (pygen.ops.rq_spline calls it).");
  m.def("rq_spline_packed", &eager_rq_spline_packed, no_gil,
        "Eager pygen::rq_spline_packed (pygen.ops.rq_spline_packed calls it).");
  m.def("rq_spline_coupling_layer", &eager_rq_spline_coupling_layer, no_gil,
        "Eager pygen::rq_spline_coupling_layer (pygen.ops.rq_spline_coupling_layer calls it).");
}

TORCH_LIBRARY_IMPL(pygen, Autograd, m) {
  m.impl("affine_coupling", affine_coupling_autograd);
  m.impl("affine_coupling_layer", affine_coupling_layer_autograd);
  m.impl("mix_logistic_cdf", mix_logistic_cdf_autograd);
  m.impl("rq_spline", rq_spline_autograd);
  m.impl("rq_spline_packed", rq_spline_packed_autograd);
  m.impl("rq_spline_coupling_layer", rq_spline_coupling_layer_autograd);
}

}  // namespace pygen
