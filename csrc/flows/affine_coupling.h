// Params and CPU entry points of affine_coupling, the elementwise map of affine
// coupling layers (RealNVP, Glow): y = x * scale + shift, or its inverse, with the
// per-sample log-determinant summed in the same pass.
#pragma once

#include <cstdint>
#include <type_traits>

#include "csrc/common/coupling_math.h"
#include "csrc/common/dtype.h"

namespace pygen {

// Elements of a sample summed by one task into one partial log-det, in a fixed order,
// so the result does not depend on the thread count (CPU) or the launch (CUDA).
constexpr int64_t kAffineChunk = 4096;

inline int64_t affine_chunks(int64_t numel) {
  return numel == 0 ? 1 : (numel + kAffineChunk - 1) / kAffineChunk;
}

struct AffineCouplingParams {
  DType dtype;
  ScaleFn scale_fn;
  bool inverse;
  double clamp;  // kExpClamped only: log scale = clamp * tanh(raw / clamp)
  int64_t batch;
  int64_t numel;      // per sample
  const void* x;      // [batch, numel]: the map's input (y for the inverse)
  const void* shift;  // [batch, numel]
  const void* raw;    // [batch, numel]: raw_scale
  void* y;            // [batch, numel]: the map's output
  void* logdet;       // [batch], float32 (float64 for float64): +-sum log scale
  void* partial;      // [batch, affine_chunks(numel)] in logdet dtype (chunk sums); null for one chunk
};

// Gradients of the same map: grad_y [batch, numel] and grad_logdet [batch] (either
// null: zero) to grad_x, grad_shift, grad_raw.
struct AffineCouplingBackwardParams {
  DType dtype;
  ScaleFn scale_fn;
  bool inverse;
  double clamp;
  int64_t batch;
  int64_t numel;
  const void* grad_y;
  const void* grad_logdet;  // logdet dtype
  const void* x;
  const void* shift;
  const void* raw;
  void* grad_x;
  void* grad_shift;
  void* grad_raw;
};

// The CPU and CUDA kernels' dispatch: calls f(std::integral_constant<ScaleFn, F>,
// std::bool_constant<Inverse>) for the runtime choice, so the lane loops see compile-time constants.
template <class Fn>
void visit_affine_map(ScaleFn fn, bool inverse, Fn&& f) {
  auto with_fn = [&](auto inv) {
    switch (fn) {
      case ScaleFn::kExpClamped:
        return f(std::integral_constant<ScaleFn, ScaleFn::kExpClamped>{}, inv);
      case ScaleFn::kSigmoid:
        return f(std::integral_constant<ScaleFn, ScaleFn::kSigmoid>{}, inv);
      case ScaleFn::kExp:
        break;
    }
    return f(std::integral_constant<ScaleFn, ScaleFn::kExp>{}, inv);
  };
  if (inverse)
    with_fn(std::true_type{});
  else
    with_fn(std::false_type{});
}

void affine_coupling_cpu(const AffineCouplingParams& p);
void affine_coupling_backward_cpu(const AffineCouplingBackwardParams& p);

}  // namespace pygen
