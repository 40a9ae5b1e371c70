// Pieces of the quant ops' bindings that the CPU and CUDA implementations share: each
// checks its arguments (naming the bad one), allocates the output and runs `launch`
// once on the params. Every tensor handed to the kernels is contiguous and 16-byte
// aligned (a misaligned view is copied).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>

#include "csrc/quant/quant.h"

namespace pygen {

at::Tensor dequantize_weight_impl(const at::Tensor& packed, const at::Tensor& scales,
                                  const std::optional<at::Tensor>& zeros, const std::string& format,
                                  int64_t group_size, at::ScalarType dtype,
                                  const std::function<void(const DequantizeParams&)>& launch);

// compute_dtype: None or x's dtype, or for float32 x bfloat16, and float16 where the
// device allows it (half_compute: CUDA); anything else is a ValueError.
at::Tensor quant_matmul_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                             const std::optional<at::Tensor>& zeros, const std::string& format,
                             int64_t group_size, const std::optional<at::Tensor>& bias,
                             std::optional<at::ScalarType> compute_dtype, bool half_compute,
                             const std::function<void(const QuantMatmulParams&)>& launch);

at::Tensor quant_matmul_int8_impl(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& packed,
                                  const at::Tensor& scales, const std::optional<at::Tensor>& bias,
                                  const std::function<void(const QuantMatmulInt8Params&)>& launch);

}  // namespace pygen
