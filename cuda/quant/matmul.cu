// The public launchers: schedule by M and dtype, K split when tiles are few, and the
// deterministic reduction of split partial sums.
#include <algorithm>

#include "cuda/quant/kernels.h"
#include "cuda/quant/matmul.h"

namespace pygen {

namespace {

using quant_cuda::SplitPlan;

constexpr int kReduceThreads = 256;

// out[m, n] = sum over splits of partials[s, m, n] (+ bias[n]), the splits in order.
template <class T>
__global__ void reduce_kernel(const float* partials, int64_t splits, int64_t M, int64_t N, const T* bias,
                              T* out) {
  const int64_t MN = M * N;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < MN;
       idx += int64_t(gridDim.x) * blockDim.x) {
    float s = partials[idx];
    for (int64_t z = 1; z < splits; ++z) s += partials[z * MN + idx];
    out[idx] = from_acc<T>(bias ? s + to_acc(bias[idx % N]) : s);
  }
}

__global__ void reduce_int8_kernel(const int32_t* partials, int64_t splits, QuantMatmulInt8Params p) {
  const int64_t MN = p.M * p.w.N;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < MN;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int32_t s = 0;
    for (int64_t z = 0; z < splits; ++z) s += partials[z * MN + idx];
    const int64_t m = idx / p.w.N, n = idx % p.w.N;
    p.out[idx] = quant_cuda::int8_output(s, p.x_scale[m], weight_scale(p.w, n, 0), p.bias, n);
  }
}

unsigned reduce_blocks(int64_t MN) {
  return unsigned(std::min<int64_t>((MN + kReduceThreads - 1) / kReduceThreads, 65536));
}

bool tiled(int64_t M) { return M > kGemvMaxRows; }

// Grid y holds the N tiles (at most 65535 of them).
bool fits_grid(const SplitPlan& plan) { return plan.tiles_n <= 65535; }

}  // namespace

size_t quant_matmul_cuda_workspace(const QuantMatmulParams& p) {
  if (!tiled(p.M) || p.w.N == 0) return 0;
  const SplitPlan plan = quant_cuda::plan_splits(p.M, p.w.N, p.w.K);
  return plan.splits > 1 ? size_t(plan.splits * p.M * p.w.N) * sizeof(float) : 0;
}

size_t quant_matmul_int8_cuda_workspace(const QuantMatmulInt8Params& p) {
  if (!tiled(p.M) || p.w.N == 0) return 0;
  const SplitPlan plan = quant_cuda::plan_splits(p.M, p.w.N, p.w.K);
  return plan.splits > 1 ? size_t(plan.splits * p.M * p.w.N) * sizeof(int32_t) : 0;
}

cudaError_t quant_matmul_cuda(const QuantMatmulParams& p, void* workspace, cudaStream_t stream) {
  if (p.M == 0 || p.w.N == 0) return cudaSuccess;
  if (!tiled(p.M)) {
    quant_cuda::launch_gemv(p, stream);
    return cudaGetLastError();
  }
  const SplitPlan plan = quant_cuda::plan_splits(p.M, p.w.N, p.w.K);
  if (!fits_grid(plan)) return cudaErrorInvalidValue;
  float* partials = plan.splits > 1 ? static_cast<float*>(workspace) : nullptr;
  if (p.compute == DType::kFloat32)
    quant_cuda::launch_gemm_simt_f32(p, plan, partials, stream);
  else
    quant_cuda::launch_gemm_mma(p, plan, partials, stream);
  if (partials) {
    quant_cuda::visit_x_dtype(p.dtype, [&](auto t) {
      using T = decltype(t);
      reduce_kernel<T><<<reduce_blocks(p.M * p.w.N), kReduceThreads, 0, stream>>>(
          partials, plan.splits, p.M, p.w.N, static_cast<const T*>(p.bias), static_cast<T*>(p.out));
    });
  }
  return cudaGetLastError();
}

cudaError_t quant_matmul_int8_cuda(const QuantMatmulInt8Params& p, void* workspace, cudaStream_t stream) {
  if (p.M == 0 || p.w.N == 0) return cudaSuccess;
  if (!tiled(p.M)) {
    quant_cuda::launch_gemv_int8(p, stream);
    return cudaGetLastError();
  }
  const SplitPlan plan = quant_cuda::plan_splits(p.M, p.w.N, p.w.K);
  if (!fits_grid(plan)) return cudaErrorInvalidValue;
  int32_t* partials = plan.splits > 1 ? static_cast<int32_t*>(workspace) : nullptr;
  quant_cuda::launch_gemm_simt_int8(p, plan, partials, stream);
  if (partials)
    reduce_int8_kernel<<<reduce_blocks(p.M * p.w.N), kReduceThreads, 0, stream>>>(partials, plan.splits, p);
  return cudaGetLastError();
}

}  // namespace pygen
