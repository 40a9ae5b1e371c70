// Pieces of the normalizing-flow ops' bindings that the CPU and CUDA implementations
// share: argument checks, output allocation and params, with the device's launch passed in.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>

#include "csrc/flows/affine_coupling.h"
#include "csrc/flows/mix_logistic.h"
#include "csrc/flows/rq_spline.h"

namespace pygen {

// The log-det dtype of the flow ops: float64 for float64 x, else float32.
inline at::ScalarType flow_logdet_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Checks that t has ref's dtype, `shape` and ref's device (messages name both arguments).
void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name,
                c10::IntArrayRef shape);

// t contiguous, after check_like.
at::Tensor contiguous_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name,
                           c10::IntArrayRef shape);

std::tuple<at::Tensor, at::Tensor> affine_coupling_impl(
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingParams&)>& launch);

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingBackwardParams&)>& launch);

// The affine coupling of a whole layer: x [B, C, ...] with channels [active_begin,
// active_begin + active) transformed and the others copied, shift and raw scale read in
// place from the conditioner's output params [B, 2 * active, ...] (interleaved: channels
// 2c and 2c + 1; else c and active + c). The backward returns grad_x in x's shape and
// grad_params in params' shape.
std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_impl(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingParams&)>& launch);

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse,
    const std::function<void(const AffineCouplingBackwardParams&)>& launch);

// Runs `launch`, then with `validate` raises if the kernel reported a non-finite
// parameter (reading its flag: a host sync on CUDA); without, those elements give NaN.
std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_impl(
    const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, double tol, int64_t max_iters, bool validate,
    const std::function<void(const MixLogisticParams&)>& launch);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_logistic_cdf_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse, const std::function<void(const MixLogisticBackwardParams&)>& launch);

// rq_spline for either device: checks the arguments (messages name them), allocates y
// and logabsdet, runs `launch`, then with `validate` raises on non-finite parameters
// (reading the kernel's flag, a host sync on CUDA).
std::tuple<at::Tensor, at::Tensor> rq_spline_impl(const at::Tensor& x, const at::Tensor& widths,
                                                  const at::Tensor& heights, const at::Tensor& derivatives,
                                                  bool inverse, double tail_bound, bool validate,
                                                  const std::function<void(const RqSplineParams&)>& launch);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound, const std::function<void(const RqSplineBackwardParams&)>& launch);

// rq_spline with the parameters packed in one tensor [*x.shape, 3K - 1] (widths, heights,
// derivatives along the last dim, as a coupling's network outputs them); the backward
// returns the gradient of the packed tensor.
std::tuple<at::Tensor, at::Tensor> rq_spline_packed_impl(
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound, bool validate,
    const std::function<void(const RqSplineParams&)>& launch);

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound,
    const std::function<void(const RqSplineBackwardParams&)>& launch);

// The whole spline coupling layer: x [B, C, ...] with channels [active_begin,
// active_begin + active) through rq_spline and the others copied, the parameters read
// in place from the conditioner's output params [B, active * (3K - 1), ...] (x's other
// dims; active channel c's widths, heights and derivatives at channels c (3K - 1) + [0,
// K), [K, 2K), [2K, 3K - 1)), the log-det [B] summed in the kernel. The backward returns
// grad_x in x's shape and grad_params in params' shape.
std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_impl(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound, bool validate, const std::function<void(const RqCouplingParams&)>& launch);

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound, const std::function<void(const RqCouplingBackwardParams&)>& launch);

// rq_spline's tail_bound check (positive, 2B finite in x's compute type).
void check_rq_tail_bound(const at::Tensor& x, double tail_bound);

// Raises ValueError naming the parameter tensors whose RqBad bits the kernel set in
// `bad` (one int; reading it is a host sync on CUDA).
void check_rq_finite(const at::Tensor& bad);

// Whether the kernels read parameters [*S, size] (S with `lead` dims) in place, without a
// copy: their leading dims flatten to two strides (a conv output with its parameter dim
// moved last does). True for a tensor of another rank, which the op itself rejects.
bool rq_spline_reads_in_place(const at::Tensor& params, int64_t lead);

}  // namespace pygen
