// CUDA kernels of rq_spline, its coupling-layer form and their backwards: one thread per
// element, its spline from csrc/common/spline.h. A thread's parameter rows (a few dozen
// values) stay in L1 across the knot walks, so nothing of size K is kept in registers or
// local memory. The layer's forward runs one block per chunk of a sample's transformed
// elements (the CPU's chunks) with a fixed-order block reduction of their log-dets, and
// with several chunks a second pass adding each sample's chunk sums in order:
// deterministic, no atomics on the sums. Its untransformed channels: one more kernel.
#include <algorithm>

#include "cuda/flows/coupling_launch.cuh"
#include "cuda/flows/rq_spline.h"

namespace pygen {

namespace {

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

template <class T>
__global__ void coupling_forward_kernel(RqCouplingParams p, int64_t chunks) {
  using C = AccOf<T>;
  // Task t = (sample, chunk); a block takes tasks gridDim.x apart.
  for (int64_t t = blockIdx.x; t < p.g.batch * chunks; t += gridDim.x) {
    const int64_t b = t / chunks, begin = (t % chunks) * kRqChunk;
    const int64_t end = begin + kRqChunk < p.g.numel() ? begin + kRqChunk : p.g.numel();
    C acc = 0;
    int bad = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kCouplingThreads)
      acc += rq_coupling_at<T>(p, b, i, &bad);
    if (bad) atomicOr(p.bad, bad);
    const C sum = coupling_block_sum(acc);
    if (threadIdx.x == 0) (chunks == 1 ? static_cast<C*>(p.logdet)[b] : static_cast<C*>(p.partial)[t]) = sum;
  }
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

}  // namespace

cudaError_t rq_spline_cuda(const RqSplineParams& p, cudaStream_t stream) {
  if (p.in.n == 0) return cudaSuccess;
  const int grid = coupling_grid(p.in.n);
  visit_dtype(p.in.dtype,
              [&](auto tag) { forward_kernel<decltype(tag)><<<grid, kCouplingThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

cudaError_t rq_spline_backward_cuda(const RqSplineBackwardParams& p, cudaStream_t stream) {
  if (p.in.n == 0) return cudaSuccess;
  const int grid = coupling_grid(p.in.n);
  visit_dtype(p.in.dtype,
              [&](auto tag) { backward_kernel<decltype(tag)><<<grid, kCouplingThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

cudaError_t rq_spline_coupling_cuda(const RqCouplingParams& p, cudaStream_t stream) {
  if (p.g.batch * p.g.channels * p.g.inner == 0) return cudaSuccess;
  const int64_t chunks = rq_chunks(p.g.numel());
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = AccOf<T>;
    coupling_forward_kernel<T>
        <<<coupling_task_grid(p.g.batch * chunks), kCouplingThreads, 0, stream>>>(p, chunks);
    coupling_sum_chunks(static_cast<const C*>(p.partial), p.g.batch, chunks, static_cast<C*>(p.logdet),
                        stream);
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<coupling_grid(p.g.batch * p.g.passive_numel()), kCouplingThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.in.x), static_cast<T*>(p.y));
  });
  return cudaGetLastError();
}

cudaError_t rq_spline_coupling_backward_cuda(const RqCouplingBackwardParams& p, cudaStream_t stream) {
  if (p.g.batch * p.g.channels * p.g.inner == 0) return cudaSuccess;
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    coupling_backward_kernel<T><<<coupling_grid(p.g.batch * p.g.numel()), kCouplingThreads, 0, stream>>>(p);
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<coupling_grid(p.g.batch * p.g.passive_numel()), kCouplingThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.grad_y), static_cast<T*>(p.grad_x));
  });
  return cudaGetLastError();
}

}  // namespace pygen
