// Params and CPU entry points of mix_logistic_cdf, the elementwise transform of Flow++
// couplings: y = logit F(x) with F a K-component logistic-mixture CDF, its log-derivative,
// and the inverse by safeguarded Newton-bisection (csrc/common/coupling_math.h).
#pragma once

#include <cstdint>

#include "csrc/common/coupling_math.h"
#include "csrc/common/dtype.h"

namespace pygen {

// Written to *status by the kernels (the bindings raise on it).
enum MixStatus : int32_t { kMixOk = 0, kMixNonFinite = 1 };

struct MixLogisticParams {
  DType dtype;
  bool inverse;
  double tol;     // inverse: |x - root| <= tol * max(1, |root|)
  int max_iters;  // inverse: Newton-bisection steps at most
  int64_t n;      // elements
  int64_t k;      // mixture components
  const void* x;  // [n]: x, or y for the inverse
  const void* logits;
  const void* means;
  const void* log_scales;  // each [n, k]
  void* y;                 // [n]: y, or x for the inverse
  void* logdet;            // [n], float32 (float64 for float64): log |dy/dx| of the map applied
  int32_t* status;         // kMixNonFinite when a parameter is NaN or +-inf; null: not checked
};

// Gradients: grad_y [n] (out's dtype) and grad_logdet [n] (logdet dtype), either null
// for zero, at the point x of x-space (the forward's input, or the inverse's output).
struct MixLogisticBackwardParams {
  DType dtype;
  bool inverse;
  int64_t n;
  int64_t k;
  const void* grad_y;
  const void* grad_logdet;
  const void* x;
  const void* logits;
  const void* means;
  const void* log_scales;
  void* grad_in;  // [n]: d/dx, or d/dy for the inverse
  void* grad_logits;
  void* grad_means;
  void* grad_log_scales;  // each [n, k]
};

void mix_logistic_cdf_cpu(const MixLogisticParams& p);
void mix_logistic_cdf_backward_cpu(const MixLogisticBackwardParams& p);

}  // namespace pygen
