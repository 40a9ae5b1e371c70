// dequantize_weight on CUDA: a thread per item (32 elements of a row), each element
// scale * code value rounded once from float32, as the CPU does (float64: exact), so
// both devices give the same bits.
#include <algorithm>
#include <type_traits>

#include "cuda/quant/common.cuh"
#include "cuda/quant/matmul.h"

namespace pygen {

namespace {

constexpr int kThreads = 256;

template <class T, QuantFormat F>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(DequantizeParams p) {
  __shared__ float e2m1_table[16];
  quant_cuda::fill_e2m1_table(e2m1_table);
  __syncthreads();
  const QuantWeight& w = p.w;
  const int64_t per_row = w.K / quant_cuda::kItem, total = w.N * per_row;
  T* out = static_cast<T*>(p.out);
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx / per_row, i = idx % per_row;
    const quant_cuda::ItemScale sc = quant_cuda::item_scale(w, n, i);
    float v[quant_cuda::kItem];
    quant_cuda::item_values<F>(quant_cuda::load_item(w, n, i), i, sc.zoff, e2m1_table, v);
    T* dst = out + n * w.K + i * quant_cuda::kItem;  // 64-byte aligned: 16-byte stores
    if constexpr (std::is_same_v<T, double>) {
#pragma unroll
      for (int e = 0; e < quant_cuda::kItem; ++e) dst[e] = double(v[e]) * double(sc.scale);
    } else if constexpr (std::is_same_v<T, float>) {
#pragma unroll
      for (int e = 0; e < quant_cuda::kItem; e += 4)
        *reinterpret_cast<float4*>(dst + e) =
            make_float4(mul_rn(v[e], sc.scale), mul_rn(v[e + 1], sc.scale), mul_rn(v[e + 2], sc.scale),
                        mul_rn(v[e + 3], sc.scale));
    } else {
      uint32_t pairs[quant_cuda::kItem / 2];
#pragma unroll
      for (int e = 0; e < quant_cuda::kItem; e += 2)
        pairs[e / 2] = uint32_t(T::round(mul_rn(v[e], sc.scale)).bits) |
                       uint32_t(T::round(mul_rn(v[e + 1], sc.scale)).bits) << 16;
#pragma unroll
      for (int q = 0; q < 4; ++q)
        reinterpret_cast<uint4*>(dst)[q] =
            make_uint4(pairs[4 * q], pairs[4 * q + 1], pairs[4 * q + 2], pairs[4 * q + 3]);
    }
  }
}

}  // namespace

cudaError_t dequantize_cuda(const DequantizeParams& p, cudaStream_t stream) {
  const int64_t items = p.w.N * (p.w.K / quant_cuda::kItem);
  if (items == 0) return cudaSuccess;
  const unsigned blocks = unsigned(std::min<int64_t>((items + kThreads - 1) / kThreads, 65536));
  visit_dtype(p.dtype, [&](auto t) {
    quant_cuda::visit_format(p.w.format, [&](auto f) {
      dequantize_kernel<decltype(t), decltype(f)::value><<<blocks, kThreads, 0, stream>>>(p);
    });
  });
  return cudaGetLastError();
}

}  // namespace pygen
