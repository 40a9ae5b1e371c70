// Params and CPU entry points of affine_coupling and affine_coupling_layer, the map of
// affine coupling layers (RealNVP, Glow): y = x * scale + shift, or its inverse, with the
// per-sample log-determinant summed in the same pass; the layer form also copies the
// untransformed channels and reads shift and raw scale inside the conditioner's output.
#pragma once

#include <cstdint>
#include <type_traits>

#include "csrc/common/coupling_math.h"
#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"

namespace pygen {

// Elements of a sample summed by one task into one partial log-det, in a fixed order,
// so the result does not depend on the thread count (CPU) or the launch (CUDA).
constexpr int64_t kAffineChunk = 4096;

inline int64_t affine_chunks(int64_t numel) {
  return numel == 0 ? 1 : (numel + kAffineChunk - 1) / kAffineChunk;
}

// Where the map's elements live. x is [batch, channels, inner]; channels
// [active_begin, active_begin + active) are transformed, the others copied to y unchanged
// (a coupling layer's passive half, in the same pass). Active element i of a sample
// (i < numel() = active * inner, channel c = i / inner, position s = i % inner) reads
// its shift and raw scale at b * param_batch_stride + c * param_channel_stride + s of
// their pointers: separate [batch, numel] tensors, or two interleaved or stacked channel
// sets of one conditioner output. Gradients of shift and raw go to the same offsets.
struct AffineGeometry {
  int64_t batch;
  int64_t channels;
  int64_t active_begin;
  int64_t active;
  int64_t inner;
  int64_t param_batch_stride;
  int64_t param_channel_stride;

  PYGEN_HD int64_t numel() const { return active * inner; }
  PYGEN_HD int64_t sample_numel() const { return channels * inner; }
  PYGEN_HD int64_t passive_numel() const { return (channels - active) * inner; }
  // Offset in x of passive element j of sample b (j < passive_numel()).
  PYGEN_HD int64_t passive_offset(int64_t b, int64_t j) const {
    return b * channels * inner + (j < active_begin * inner ? j : j + numel());
  }
  // Offset in x of active element i of sample b: the active channels are contiguous.
  PYGEN_HD int64_t active_offset(int64_t b, int64_t i) const {
    return b * channels * inner + active_begin * inner + i;
  }
  PYGEN_HD int64_t param_offset(int64_t b, int64_t i) const {
    return b * param_batch_stride + (i / inner) * param_channel_stride + i % inner;
  }
};

struct AffineCouplingParams {
  DType dtype;
  ScaleFn scale_fn;
  bool inverse;
  double clamp;  // kExpClamped only: log scale = clamp * tanh(raw / clamp)
  AffineGeometry g;
  const void* x;      // [batch, channels, inner]: the map's input (y for the inverse)
  const void* shift;  // at g.param_offset
  const void* raw;    // raw_scale, at g.param_offset
  void* y;            // x's layout: the map's output, passive channels copied
  void* logdet;       // [batch], float32 (float64 for float64): +-sum log scale
  void* partial;      // [batch, affine_chunks(g.numel())] in logdet dtype (chunk sums); null for one chunk
};

// Gradients of the same map: grad_y and grad_logdet [batch] (either null: zero) to
// grad_x (x's layout; passive channels get grad_y), grad_shift and grad_raw (at
// g.param_offset). grad_y is read in place at a batch stride, each sample in x's layout
// or as one value (a broadcast: y.sum() hands the backward one value for all, strides
// 0, whose copy to x's layout would cost a write and a read of x's size).
struct AffineCouplingBackwardParams {
  DType dtype;
  ScaleFn scale_fn;
  bool inverse;
  double clamp;
  AffineGeometry g;
  const void* grad_y;
  int64_t grad_y_batch_stride;  // sample b's grad_y starts at b * grad_y_batch_stride
  bool grad_y_broadcast;        // true: one value per sample; false: x's per-sample layout
  const void* grad_logdet;      // logdet dtype, sample b at b * grad_logdet_stride
  int64_t grad_logdet_stride;
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
