// Dispatch of the attention launchers on (head dim, dtype). The kernels are compiled once
// per pair in instances/ (attention_kernels.cuh has the tiling); a head dim that is not 32,
// 64, 128 or 256 runs on the next one up, its extra columns zero.
#include "cuda/attention/attention.h"

namespace pygen {

namespace attention_cuda {

// Defined in attention_kernels.cuh, instantiated in instances/.
template <int D, class T>
cudaError_t launch_forward(const AttentionForwardParams& p, cudaStream_t stream);
template <int D, class T>
cudaError_t launch_backward(const AttentionBackwardParams& p, const AttentionBackwardCudaArgs& args,
                            cudaStream_t stream);

namespace {

// Calls f(std::integral_constant<int, D>{}, T{}) for the padded head dim and the dtype.
template <class F>
cudaError_t visit(const AttentionShape& s, DType dtype, F&& f) {
  if (dtype == DType::kFloat64 || s.head_dim <= 0 || s.head_dim > 256) return cudaErrorInvalidValue;
  return visit_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, double>) {
      return cudaErrorInvalidValue;
    } else {
      if (s.head_dim <= 32) return f(std::integral_constant<int, 32>{}, t);
      if (s.head_dim <= 64) return f(std::integral_constant<int, 64>{}, t);
      if (s.head_dim <= 128) return f(std::integral_constant<int, 128>{}, t);
      return f(std::integral_constant<int, 256>{}, t);
    }
  });
}

}  // namespace

}  // namespace attention_cuda

cudaError_t attention_forward_cuda(const AttentionForwardParams& p, cudaStream_t stream) {
  return attention_cuda::visit(p.s, p.dtype, [&](auto d, auto t) {
    return attention_cuda::launch_forward<decltype(d)::value, decltype(t)>(p, stream);
  });
}

cudaError_t attention_backward_cuda(const AttentionBackwardParams& p, const AttentionBackwardCudaArgs& args,
                                    cudaStream_t stream) {
  if (p.s.row_ptr && !args.t_ptr) return cudaErrorInvalidValue;
  return attention_cuda::visit(p.s, p.dtype, [&](auto d, auto t) {
    return attention_cuda::launch_backward<decltype(d)::value, decltype(t)>(p, args, stream);
  });
}

}  // namespace pygen
