// Pieces of the random ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "csrc/common/random.h"

namespace pygen {

// Checks the factory arguments and allocates the (uninitialized) result.
at::Tensor random_empty(c10::SymIntArrayRef size, int64_t offset, at::ScalarType dtype, at::Device device);
RandomFillParams random_fill_params(const at::Tensor& out, int64_t seed, int64_t offset, Distribution dist);
// Checks counter [..., 4] and key [..., 2] (int32) and returns them contiguous.
std::tuple<at::Tensor, at::Tensor> philox_inputs(const at::Tensor& counter, const at::Tensor& key);

}  // namespace pygen
