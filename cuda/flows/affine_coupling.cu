// CUDA kernels of affine_coupling (and its layer form). Forward: one block per chunk of
// a sample's transformed elements (the CPU's chunks), a fixed-order block reduction of
// the log scales, and with several chunks a second pass adding each sample's chunk sums
// in order: deterministic, no atomics. Backward: one thread per transformed element,
// grad_y read in place at its batch stride (x's per-sample layout, or a broadcast).
// The layer's untransformed channels (x into y, grad_y into grad_x): one more kernel.
#include <algorithm>

#include "cuda/flows/affine_coupling.h"
#include "cuda/flows/coupling_launch.cuh"

namespace pygen {

namespace {

template <class T, ScaleFn F, bool Inverse>
__global__ void forward_kernel(AffineCouplingParams p, int64_t chunks) {
  using C = AccOf<T>;
  const AffineGeometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* y = static_cast<T*>(p.y);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  // Task t = (sample, chunk); a block takes tasks gridDim.x apart (the grid is capped at
  // gridDim.x's limit, which batch * chunks may pass).
  for (int64_t t = blockIdx.x; t < g.batch * chunks; t += gridDim.x) {
    const int64_t b = t / chunks;
    const int64_t begin = (t % chunks) * kAffineChunk;
    const int64_t end = begin + kAffineChunk < g.numel() ? begin + kAffineChunk : g.numel();
    C acc = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kCouplingThreads) {
      const int64_t xo = g.active_offset(b, i), po = g.param_offset(b, i);
      const CouplingScale<C> s = coupling_scale<F, Inverse>(to_acc(raw[po]), clamp, inv_clamp);
      const C v = to_acc(x[xo]), sh = to_acc(shift[po]);
      y[xo] = from_acc<T>(Inverse ? (v - sh) * s.factor : v * s.factor + sh);
      acc += s.log_scale;
    }
    const C sum = coupling_block_sum(acc);
    if (threadIdx.x == 0) {
      C* out = chunks == 1 ? static_cast<C*>(p.logdet) + b : static_cast<C*>(p.partial) + t;
      *out = Inverse ? -sum : sum;
    }
  }
}

// The untransformed channels: src (x, or grad_y) copied to dst (x's layout), zeros for
// a null src. src's sample b starts at b * src_batch_stride, its elements at x's
// per-sample offsets times src_step (1, or 0: one broadcast value per sample).
template <class T>
__global__ void copy_passive_kernel(AffineGeometry g, const T* src, int64_t src_batch_stride,
                                    int64_t src_step, T* dst) {
  const int64_t per = g.passive_numel(), total = g.batch * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t b = i / per, o = g.passive_offset(0, i % per);
    dst[b * g.sample_numel() + o] = src ? src[b * src_batch_stride + o * src_step] : from_acc<T>(AccOf<T>(0));
  }
}

template <class T, ScaleFn F, bool Inverse>
__global__ void backward_kernel(AffineCouplingBackwardParams p) {
  using C = AccOf<T>;
  const AffineGeometry& g = p.g;
  const T* gy = static_cast<const T*>(p.grad_y);
  const C* gl = static_cast<const C*>(p.grad_logdet);
  const T* x = static_cast<const T*>(p.x);
  const T* shift = static_cast<const T*>(p.shift);
  const T* raw = static_cast<const T*>(p.raw);
  T* gx = static_cast<T*>(p.grad_x);
  T* gshift = static_cast<T*>(p.grad_shift);
  T* graw = static_cast<T*>(p.grad_raw);
  const C clamp = C(p.clamp), inv_clamp = p.clamp > 0 ? C(1.0 / p.clamp) : C(0);
  const int64_t per = g.numel(), total = g.batch * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t b = e / per, i = e % per;
    const int64_t xo = g.active_offset(b, i), po = g.param_offset(b, i);
    const CouplingScale<C> s = coupling_scale<F, Inverse>(to_acc(raw[po]), clamp, inv_clamp);
    const int64_t gyo = b * p.grad_y_batch_stride + (p.grad_y_broadcast ? 0 : xo - b * g.sample_numel());
    const C gv = gy ? to_acc(gy[gyo]) : C(0);
    const C g_l = gl ? gl[b * p.grad_logdet_stride] : C(0);
    const AffineGrads<C> d = affine_coupling_grads<Inverse>(gv, g_l, to_acc(x[xo]), to_acc(shift[po]), s);
    gx[xo] = from_acc<T>(d.x);
    gshift[po] = from_acc<T>(d.shift);
    graw[po] = from_acc<T>(d.raw);
  }
}

}  // namespace

cudaError_t affine_coupling_cuda(const AffineCouplingParams& p, cudaStream_t stream) {
  const int64_t chunks = affine_chunks(p.g.numel());
  if (p.g.batch * p.g.numel() == 0) return cudaSuccess;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = AccOf<T>;
    visit_affine_map(p.scale_fn, p.inverse, [&](auto fn, auto inv) {
      forward_kernel<T, fn(), inv()>
          <<<coupling_task_grid(p.g.batch * chunks), kCouplingThreads, 0, stream>>>(p, chunks);
    });
    coupling_sum_chunks(static_cast<const C*>(p.partial), p.g.batch, chunks, static_cast<C*>(p.logdet),
                        stream);
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<coupling_grid(p.g.batch * p.g.passive_numel()), kCouplingThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.x), p.g.sample_numel(), 1, static_cast<T*>(p.y));
  });
  return cudaGetLastError();
}

cudaError_t affine_coupling_backward_cuda(const AffineCouplingBackwardParams& p, cudaStream_t stream) {
  const int64_t total = p.g.batch * p.g.numel();
  if (total == 0) return cudaSuccess;
  const int grid = coupling_grid(total);
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    visit_affine_map(p.scale_fn, p.inverse, [&](auto fn, auto inv) {
      backward_kernel<T, fn(), inv()><<<grid, kCouplingThreads, 0, stream>>>(p);
    });
    if (p.g.passive_numel() > 0)
      copy_passive_kernel<T><<<coupling_grid(p.g.batch * p.g.passive_numel()), kCouplingThreads, 0, stream>>>(
          p.g, static_cast<const T*>(p.grad_y), p.grad_y_batch_stride, p.grad_y_broadcast ? 0 : 1,
          static_cast<T*>(p.grad_x));
  });
  return cudaGetLastError();
}

}  // namespace pygen
