// Pieces of the random ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include "csrc/common/random.h"

namespace pygen {

// Checks the factory arguments and allocates the (uninitialized) result.
at::Tensor random_empty(c10::SymIntArrayRef size, int64_t offset, at::ScalarType dtype, at::Device device);
RandomFillParams random_fill_params(const at::Tensor& out, int64_t seed, int64_t offset, Distribution dist);

// pygen::rand / pygen::randn on the device whose kernel runs as Fill(out, params).
template <Distribution kDist, void (*Fill)(const at::Tensor&, const RandomFillParams&)>
at::Tensor random_factory(c10::SymIntArrayRef size, int64_t seed, int64_t offset, at::ScalarType dtype,
                          at::Device device) {
  at::Tensor out = random_empty(size, offset, dtype, device);
  Fill(out, random_fill_params(out, seed, offset, kDist));
  return out;
}

// Checks counter [..., 4] and key [..., 2] (int32), allocates the output and returns
// the kernel's params; the call holds the contiguous inputs and the output.
struct PhiloxCall {
  at::Tensor counter, key, out;
  PhiloxParams params;
};
PhiloxCall philox_call(const at::Tensor& counter, const at::Tensor& key);

}  // namespace pygen
