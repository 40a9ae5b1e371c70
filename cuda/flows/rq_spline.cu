// CUDA kernels of rq_spline and its backward: one thread per element, its spline from
// csrc/common/spline.h. A thread's parameter rows (a few dozen values) stay in L1
// across the knot walks, so nothing of size K is kept in registers or local memory.
#include <algorithm>

#include "cuda/flows/rq_spline.h"

namespace pygen {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void forward_kernel(RqSplineParams p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.in.n; i += stride) {
    const int bad = rq_spline_at<T>(p, i);
    if (bad) atomicOr(p.bad, bad);
  }
}

template <class T>
__global__ void backward_kernel(RqSplineBackwardParams p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.in.n; i += stride)
    rq_spline_backward_at<T>(p, i);
}

int grid_for(int64_t n) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return int(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 16));
}

}  // namespace

cudaError_t rq_spline_cuda(const RqSplineParams& p, cudaStream_t stream) {
  if (p.in.n == 0) return cudaSuccess;
  const int grid = grid_for(p.in.n);
  visit_dtype(p.in.dtype, [&](auto tag) { forward_kernel<decltype(tag)><<<grid, kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

cudaError_t rq_spline_backward_cuda(const RqSplineBackwardParams& p, cudaStream_t stream) {
  if (p.in.n == 0) return cudaSuccess;
  const int grid = grid_for(p.in.n);
  visit_dtype(p.in.dtype,
              [&](auto tag) { backward_kernel<decltype(tag)><<<grid, kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

}  // namespace pygen
