// CUDA kernels of rq_spline, its coupling-layer form and their backwards: one thread per
// element, its spline from csrc/common/spline.h. A thread's parameter rows (a few dozen
// values) stay in L1 across the knot walks, so nothing of size K is kept in registers or
// local memory. The layer's forward runs one block per chunk of a sample's transformed
// elements (the CPU's chunks) with a fixed-order block reduction of their log-dets, and
// with several chunks a second pass adding each sample's chunk sums in order:
// deterministic, no atomics on the sums. Its untransformed channels: one more kernel.
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

// The sum of v over the block, in a fixed order; meaningful in thread 0.
template <class C>
__device__ C block_sum(C v) {
  __shared__ C warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  C total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;
}

template <class T>
__global__ void coupling_forward_kernel(RqCouplingParams p, int64_t chunks) {
  using C = AccOf<T>;
  const int64_t t = blockIdx.x;
  const int64_t b = t / chunks, begin = (t % chunks) * kRqChunk;
  const int64_t end = begin + kRqChunk < p.g.numel() ? begin + kRqChunk : p.g.numel();
  C acc = 0;
  int bad = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) acc += rq_coupling_at<T>(p, b, i, &bad);
  if (bad) atomicOr(p.bad, bad);
  const C sum = block_sum(acc);
  if (threadIdx.x == 0) (chunks == 1 ? static_cast<C*>(p.logdet)[b] : static_cast<C*>(p.partial)[t]) = sum;
}

template <class C>
__global__ void sum_chunks_kernel(const C* partial, int64_t batch, int64_t chunks, C* logdet) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  C sum = 0;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
  logdet[b] = sum;
}

template <class T>
__global__ void coupling_backward_kernel(RqCouplingBackwardParams p) {
  const int64_t per = p.g.numel(), total = p.g.batch * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride)
    rq_coupling_backward_at<T>(p, e / per, e % per);
}

// The untransformed channels: src (x, or grad_y) copied to dst, zeros for a null src.
template <class T>
__global__ void copy_passive_kernel(RqCouplingGeometry g, const T* src, T* dst) {
  const int64_t per = g.passive_numel(), total = g.batch * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t o = g.passive_offset(i / per, i % per);
    dst[o] = src ? src[o] : from_acc<T>(AccOf<T>(0));
  }
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

cudaError_t rq_spline_coupling_cuda(const RqCouplingParams& p, cudaStream_t stream) {
  if (p.g.batch * p.g.channels * p.g.inner == 0) return cudaSuccess;
  const int64_t chunks = rq_chunks(p.g.numel());
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = AccOf<T>;
    coupling_forward_kernel<T><<<unsigned(p.g.batch * chunks), kThreads, 0, stream>>>(p, chunks);
    if (chunks > 1)
      sum_chunks_kernel<C><<<unsigned((p.g.batch + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
          static_cast<const C*>(p.partial), p.g.batch, chunks, static_cast<C*>(p.logdet));
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<grid_for(p.g.batch * p.g.passive_numel()), kThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.in.x), static_cast<T*>(p.y));
  });
  return cudaGetLastError();
}

cudaError_t rq_spline_coupling_backward_cuda(const RqCouplingBackwardParams& p, cudaStream_t stream) {
  if (p.g.batch * p.g.channels * p.g.inner == 0) return cudaSuccess;
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    coupling_backward_kernel<T><<<grid_for(p.g.batch * p.g.numel()), kThreads, 0, stream>>>(p);
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<grid_for(p.g.batch * p.g.passive_numel()), kThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.grad_y), static_cast<T*>(p.grad_x));
  });
  return cudaGetLastError();
}

}  // namespace pygen
