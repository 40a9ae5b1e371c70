// CUDA kernels of rq_spline and its backward: one thread per element, its spline from
// csrc/common/spline.h. A thread's parameter rows (a few dozen values) stay in L1
// across the knot walks, so nothing of size K is kept in registers or local memory.
#include <algorithm>

#include "csrc/common/spline.h"
#include "cuda/flows/rq_spline.h"

namespace pygen {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void forward_kernel(RqSplineParams p) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const C bound = C(in.tail_bound);
  const T* x = static_cast<const T*>(in.x);
  const T* uw = static_cast<const T*>(in.widths);
  const T* uh = static_cast<const T*>(in.heights);
  const T* ud = static_cast<const T*>(in.derivatives);
  T* y = static_cast<T*>(p.y);
  T* lad = static_cast<T*>(p.logabsdet);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < in.n; i += stride) {
    const T* w = uw + i * in.widths_stride;
    const T* h = uh + i * in.heights_stride;
    const T* d = ud + i * in.derivatives_stride;
    if (p.bad) {
      const int bad = rq_row_bad(w, h, d, K);
      if (bad) atomicOr(p.bad, bad);
    }
    C out, l;
    rq_spline_element(w, h, d, K, bound, in.inverse, to_acc(x[i]), &out, &l, nullptr);
    y[i] = from_acc<T>(out);
    lad[i] = from_acc<T>(l);
  }
}

template <class T>
__global__ void backward_kernel(RqSplineBackwardParams p) {
  using C = AccOf<T>;
  const RqSplineInputs& in = p.in;
  const int K = in.bins;
  const C bound = C(in.tail_bound);
  const T* x = static_cast<const T*>(in.x);
  const T* uw = static_cast<const T*>(in.widths);
  const T* uh = static_cast<const T*>(in.heights);
  const T* ud = static_cast<const T*>(in.derivatives);
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* gl = static_cast<const T*>(p.grad_logabsdet);
  T* gx = static_cast<T*>(p.grad_x);
  T* gw = static_cast<T*>(p.grad_widths);
  T* gh = static_cast<T*>(p.grad_heights);
  T* gd = static_cast<T*>(p.grad_derivatives);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < in.n; i += stride) {
    const C g_out = gy ? to_acc(gy[i]) : C(0);
    const C g_lad = gl ? to_acc(gl[i]) : C(0);
    gx[i] = from_acc<T>(rq_spline_element_backward(
        uw + i * in.widths_stride, uh + i * in.heights_stride, ud + i * in.derivatives_stride, K, bound,
        in.inverse, to_acc(x[i]), g_out, g_lad, gw + i * K, gh + i * K, gd + i * (K - 1), nullptr));
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

}  // namespace pygen
