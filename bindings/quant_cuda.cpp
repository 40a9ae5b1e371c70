// CUDA implementation of the quant ops that run per forward pass (dequantize_weight,
// quant_matmul, quant_matmul_int8): launched on the current stream, no host sync.
// quantize_weight, pack_codes and unpack_codes run once per model load, on the CPU
// (pygen.quant.quantize moves the weight there and back).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "bindings/quant.h"
#include "cuda/quant/matmul.h"

namespace pygen {

namespace {

// The tiled kernels put the output tiles of N (64 columns each) on grid y.
// The dispatcher comes here when any argument is on CUDA; with packed elsewhere the
// shared checks reject the mix (naming the argument) before anything is launched.
std::optional<c10::Device> cuda_device_of(const at::Tensor& packed) {
  return packed.is_cuda() ? std::optional<c10::Device>(packed.device()) : std::nullopt;
}

void check_out_features(const at::Tensor& packed) {
  TORCH_CHECK_VALUE(packed.dim() != 2 || packed.size(0) <= int64_t(65535) * 64, "packed has ", packed.size(0),
                    " rows (out_features); CUDA supports at most ", int64_t(65535) * 64);
}

at::Tensor dequantize_weight_cuda_op(const at::Tensor& packed, const at::Tensor& scales,
                                     const std::optional<at::Tensor>& zeros, const std::string& format,
                                     int64_t group_size, at::ScalarType dtype) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(packed));
  return dequantize_weight_impl(packed, scales, zeros, format, group_size, dtype,
                                [](const DequantizeParams& p) {
                                  C10_CUDA_CHECK(dequantize_cuda(p, c10::cuda::getCurrentCUDAStream()));
                                });
}

at::Tensor quant_matmul_cuda_op(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                const std::optional<at::Tensor>& zeros, const std::string& format,
                                int64_t group_size, const std::optional<at::Tensor>& bias,
                                std::optional<at::ScalarType> compute_dtype) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(packed));
  check_out_features(packed);
  return quant_matmul_impl(x, packed, scales, zeros, format, group_size, bias, compute_dtype,
                           /*half_compute=*/true, [&](const QuantMatmulParams& p) {
                             const size_t bytes = quant_matmul_cuda_workspace(p);
                             const at::Tensor workspace =
                                 at::empty({int64_t(bytes)}, x.options().dtype(at::kByte));
                             C10_CUDA_CHECK(quant_matmul_cuda(p, bytes ? workspace.data_ptr() : nullptr,
                                                              c10::cuda::getCurrentCUDAStream()));
                           });
}

at::Tensor quant_matmul_int8_cuda_op(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& packed,
                                     const at::Tensor& scales, const std::optional<at::Tensor>& bias) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(packed));
  check_out_features(packed);
  return quant_matmul_int8_impl(x, x_scale, packed, scales, bias, [&](const QuantMatmulInt8Params& p) {
    const size_t bytes = quant_matmul_int8_cuda_workspace(p);
    const at::Tensor workspace = at::empty({int64_t(bytes)}, x.options().dtype(at::kByte));
    C10_CUDA_CHECK(
        quant_matmul_int8_cuda(p, bytes ? workspace.data_ptr() : nullptr, c10::cuda::getCurrentCUDAStream()));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("dequantize_weight", dequantize_weight_cuda_op);
  m.impl("quant_matmul", quant_matmul_cuda_op);
  m.impl("quant_matmul_int8", quant_matmul_int8_cuda_op);
}

}  // namespace pygen
