// The table of contents: every pygen op's schema, in one place. Implementations
// register per family and device in bindings/<family>.cpp and <family>_cuda.cpp;
// fake (meta) implementations live beside the Python wrappers in pygen/ops/.
#include <torch/library.h>

TORCH_LIBRARY(pygen, m) {
  // common: counter-based random numbers (Philox4x32-10), pygen/ops/random.py
  m.def("rand(SymInt[] size, int seed, int offset, ScalarType dtype, Device device) -> Tensor");
  m.def("randn(SymInt[] size, int seed, int offset, ScalarType dtype, Device device) -> Tensor");
  m.def("philox4x32_10(Tensor counter, Tensor key) -> Tensor");

  // attention: fused, block-sparse (Sparse Transformer layouts), pygen/ops/attention.py
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? row_ptr, Tensor? col_idx, Tensor? perm, int "
      "block, "
      "bool causal, int window, float scale) -> (Tensor out, Tensor lse)");
  m.def(
      "attention_backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor lse, "
      "Tensor? row_ptr, Tensor? col_idx, Tensor? perm, int block, bool causal, int window, float scale) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");

  // sampling: exact categorical sampling, pygen/ops/sampling.py
  m.def(
      "sample_categorical(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
      "Tensor seed, int offset) -> (Tensor token, Tensor logprob)");

  // quant: low-bit weights (int4 groups, MXFP4, ternary), pygen/quant/
  m.def(
      "quantize_weight(Tensor weight, str format, int group_size, bool symmetric, ScalarType scale_dtype, "
      "bool per_channel) -> (Tensor codes, Tensor scales, Tensor zeros)");
  m.def("pack_codes(Tensor codes, str layout) -> Tensor");
  m.def("unpack_codes(Tensor packed, str layout, int cols) -> Tensor");
  m.def(
      "dequantize_weight(Tensor packed, Tensor scales, Tensor? zeros, str format, int group_size, "
      "ScalarType dtype) -> Tensor");
  m.def(
      "quant_matmul(Tensor x, Tensor packed, Tensor scales, Tensor? zeros, str format, int group_size, "
      "Tensor? bias, ScalarType? compute_dtype=None) -> Tensor");
  m.def("quant_matmul_int8(Tensor x, Tensor x_scale, Tensor packed, Tensor scales, Tensor? bias) -> Tensor");

  // sampling: masked-diffusion steps (MDLM, LLaDA, first hitting), pygen/ops/masked_diffusion.py
  m.def(
      "unmask_ancestral(Tensor logits, Tensor x, int mask_id, Tensor alpha_t, Tensor alpha_s, "
      "Tensor temperature, Tensor seed, int offset) -> Tensor");
  m.def(
      "unmask_by_confidence(Tensor logits, Tensor x, int mask_id, Tensor k, str confidence, "
      "Tensor temperature, Tensor seed, int offset) -> (Tensor out, Tensor confidence)");
  m.def(
      "unmask_first_hitting(Tensor logits, Tensor x, int mask_id, Tensor temperature, Tensor seed, "
      "int offset) -> Tensor");

  // solvers: the fused step of every ODE/SDE sampler, pygen/ops/solvers.py
  m.def(
      "solver_update(Tensor x, Tensor? out, Tensor? uncond, Tensor[] history, Tensor coef, "
      "bool noise, int seed, int offset, float threshold_ratio, float threshold_max) -> (Tensor y, Tensor "
      "pred)");

  // flows: coupling transforms (affine, logistic-mixture CDF), pygen/ops/flows.py
  m.def(
      "affine_coupling(Tensor x, Tensor shift, Tensor raw_scale, str scale_fn, float? clamp, bool inverse) "
      "-> (Tensor y, Tensor logabsdet)");
  m.def(
      "affine_coupling_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor shift, "
      "Tensor raw_scale, str scale_fn, float? clamp, bool inverse) -> (Tensor grad_x, Tensor grad_shift, "
      "Tensor grad_raw_scale)");
  m.def(
      "affine_coupling_layer(Tensor x, Tensor params, int active_begin, int active, bool interleaved, "
      "str scale_fn, float? clamp, bool inverse) -> (Tensor y, Tensor logabsdet)");
  m.def(
      "affine_coupling_layer_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor params, "
      "int active_begin, int active, bool interleaved, str scale_fn, float? clamp, bool inverse) -> "
      "(Tensor grad_x, Tensor grad_params)");
  m.def(
      "mix_logistic_cdf(Tensor x, Tensor logits, Tensor means, Tensor log_scales, bool inverse, float tol, "
      "int max_iters, bool validate) -> (Tensor y, Tensor logabsdet)");
  m.def(
      "mix_logistic_cdf_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor logits, "
      "Tensor means, Tensor log_scales, bool inverse) -> (Tensor grad_in, Tensor grad_logits, "
      "Tensor grad_means, Tensor grad_log_scales)");
  // flows: the rational-quadratic spline of Neural Spline Flows, pygen/ops/flows.py
  m.def(
      "rq_spline(Tensor x, Tensor widths, Tensor heights, Tensor derivatives, bool inverse, "
      "float tail_bound, bool validate) -> (Tensor y, Tensor logabsdet)");
  m.def(
      "rq_spline_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor widths, Tensor heights, "
      "Tensor derivatives, bool inverse, float tail_bound) -> (Tensor grad_x, Tensor grad_widths, "
      "Tensor grad_heights, Tensor grad_derivatives)");
  // the same with widths, heights and derivatives packed in one tensor [..., 3K - 1]
  m.def(
      "rq_spline_packed(Tensor x, Tensor params, bool inverse, float tail_bound, bool validate) "
      "-> (Tensor y, Tensor logabsdet)");
  m.def(
      "rq_spline_packed_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor params, "
      "bool inverse, float tail_bound) -> (Tensor grad_x, Tensor grad_params)");
  // a whole spline coupling layer: x's active channels through the spline with the
  // parameters read inside the conditioner's output, the others copied, log-det summed
  m.def(
      "rq_spline_coupling_layer(Tensor x, Tensor params, int active_begin, int active, bool inverse, "
      "float tail_bound, bool validate) -> (Tensor y, Tensor logabsdet)");
  m.def(
      "rq_spline_coupling_layer_backward(Tensor? grad_y, Tensor? grad_logabsdet, Tensor x, Tensor params, "
      "int active_begin, int active, bool inverse, float tail_bound) -> (Tensor grad_x, Tensor grad_params)");
}
