// Solver ops: the checks and params both devices share, and the CPU implementation.
#include "bindings/solvers.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "bindings/checks.h"

namespace pygen {

namespace {

at::Tensor like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ", x.scalar_type(),
                   ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), name, " must have x's shape ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), name, " must be on x's device ", x.device(), ", got ", t.device());
  return t.contiguous();
}

// Imagen's threshold per sample: the `ratio` quantile of |pred| (linear interpolation,
// as torch.quantile, which refuses more than 2^24 values), clamped to [1, max].
at::Tensor threshold(const at::Tensor& pred, double ratio, double max) {
  const at::Tensor a = pred.reshape({pred.size(0), -1}).abs().to(at::kDouble);
  const int64_t n = a.size(1);
  const double pos = ratio * double(n - 1);
  const int64_t lo = int64_t(std::floor(pos)), hi = std::min(lo + 1, n - 1);
  const at::Tensor v_lo = std::get<0>(a.kthvalue(lo + 1, 1));
  const at::Tensor v_hi = std::get<0>(a.kthvalue(hi + 1, 1));
  return (v_lo + (pos - double(lo)) * (v_hi - v_lo)).clamp(1.0, max).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> solver_update_impl(
    const at::Tensor& x_in, const std::optional<at::Tensor>& out_in,
    const std::optional<at::Tensor>& uncond_in, at::TensorList hist_in, const at::Tensor& coef_in, bool noise,
    int64_t seed, int64_t offset, double threshold_ratio, double threshold_max,
    const std::function<void(const SolverUpdateParams&)>& launch) {
  TORCH_CHECK_VALUE(x_in.dim() >= 1, "x must have shape [batch, ...], got a scalar");
  const DType dtype = to_dtype(x_in.scalar_type(), "x");
  const at::Tensor x = x_in.contiguous();
  const int64_t batch = x.size(0);
  TORCH_CHECK_VALUE(int64_t(hist_in.size()) <= kSolverMaxHistory, "history holds at most ", kSolverMaxHistory,
                    " tensors, got ", hist_in.size());
  TORCH_CHECK_VALUE(!uncond_in || out_in, "uncond needs out (the conditional model output)");
  TORCH_CHECK_VALUE(threshold_ratio == 0 || (out_in && threshold_ratio > 0 && threshold_ratio <= 1),
                    "threshold_ratio must be 0 (off) or in (0, 1] with out given, got ", threshold_ratio);
  TORCH_CHECK_VALUE(threshold_ratio == 0 || threshold_max >= 1, "threshold_max must be >= 1, got ",
                    threshold_max);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  const int64_t ncoef = kSolverCoefHistory + int64_t(hist_in.size());
  TORCH_CHECK_TYPE(coef_in.scalar_type() == at::kDouble, "coef must be float64, got ", coef_in.scalar_type());
  TORCH_CHECK_VALUE(coef_in.dim() == 2 && coef_in.size(0) == batch && coef_in.size(1) == ncoef,
                    "coef must have shape [batch, ", kSolverCoefHistory, " + len(history)] = [", batch, ", ",
                    ncoef, "], got ", coef_in.sizes());
  TORCH_CHECK(coef_in.device() == x.device(), "coef must be on x's device ", x.device(), ", got ",
              coef_in.device());
  const at::Tensor coef = coef_in.contiguous();
  const at::Tensor out = out_in ? like_x(*out_in, x, "out") : at::Tensor();
  const at::Tensor uncond = uncond_in ? like_x(*uncond_in, x, "uncond") : at::Tensor();
  std::vector<at::Tensor> hist;
  for (const at::Tensor& h : hist_in) hist.push_back(like_x(h, x, "history tensors"));

  at::Tensor y = at::empty_like(x);
  at::Tensor pred = out_in ? at::empty_like(x) : at::empty({0}, x.options());
  SolverUpdateParams p{};
  p.dtype = dtype;
  p.batch = batch;
  p.numel = batch ? x.numel() / batch : 0;
  p.x = x.data_ptr();
  p.out = out_in ? out.data_ptr() : nullptr;
  p.uncond = uncond_in ? uncond.data_ptr() : nullptr;
  for (size_t h = 0; h < hist.size(); ++h) p.hist[h] = hist[h].data_ptr();
  p.n_hist = int(hist.size());
  p.coef = coef.data_ptr<double>();
  p.noise = noise;
  p.seed = uint64_t(seed);
  p.offset = uint64_t(offset);
  p.pred = out_in ? pred.data_ptr() : nullptr;
  p.y = y.data_ptr();
  if (x.numel() == 0) return {y, pred};
  if (threshold_ratio == 0) {
    launch(p);
    return {y, pred};
  }
  SolverUpdateParams first = p;
  first.y = nullptr;
  launch(first);
  const at::Tensor s = threshold(pred, threshold_ratio, threshold_max);
  p.out = pred.data_ptr();
  p.uncond = nullptr;
  p.thresh = s.data_ptr<double>();
  launch(p);  // clamps pred in place: each element is read before it is written
  return {y, pred};
}

namespace {

std::tuple<at::Tensor, at::Tensor> solver_update_cpu_op(const at::Tensor& x,
                                                        const std::optional<at::Tensor>& out,
                                                        const std::optional<at::Tensor>& uncond,
                                                        at::TensorList hist, const at::Tensor& coef,
                                                        bool noise, int64_t seed, int64_t offset,
                                                        double threshold_ratio, double threshold_max) {
  return solver_update_impl(x, out, uncond, hist, coef, noise, seed, offset, threshold_ratio, threshold_max,
                            solver_update_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("solver_update", solver_update_cpu_op); }

}  // namespace pygen
