// CUDA kernel of solver_update: one thread per Philox block of the flat index (4
// values, 2 in float64), so the noise is the same stream as pygen.ops.randn, and with
// the CPU's roundings a seeded step equals the CPU's bit for bit.
#include <algorithm>

#include "csrc/common/distributions.h"
#include "cuda/solvers/solver_update.h"

namespace pygen {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void update_kernel(SolverUpdateParams p) {
  using C = AccOf<T>;
  constexpr int V = Normal<C>::kPerBlock;
  const int64_t total = p.batch * p.numel;
  const int64_t nblocks = (total + V - 1) / V;
  const int ncoef = kSolverCoefHistory + p.n_hist;
  const T* x = static_cast<const T*>(p.x);
  const T* out = static_cast<const T*>(p.out);
  const T* uncond = static_cast<const T*>(p.uncond);
  T* pred_out = static_cast<T*>(p.pred);
  T* y_out = static_cast<T*>(p.y);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t blk = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; blk < nblocks; blk += stride) {
    C noise[V];
    if (p.noise) Normal<C>::apply(philox_block(p.seed, p.offset + uint64_t(blk)), noise);
    for (int v = 0; v < V; ++v) {
      const int64_t i = blk * V + v;
      if (i >= total) break;
      const int64_t b = i / p.numel;
      const double* cf = p.coef + b * ncoef;
      C pred = 0;
      if (out) {
        if (p.thresh) {
          // std::min(std::max(o, -s), s) as on the CPU: a NaN stays NaN (fmax / fmin
          // would turn it into -1), as torch.clamp in the reference.
          const C s = C(p.thresh[b]), o = to_acc(out[i]);
          const C lo = o < -s ? -s : o;
          pred = (s < lo ? s : lo) / s;
        } else {
          // Every product and sum rounded as the CPU kernel (built without contraction)
          // rounds it, where nvcc would fuse FMAs: a seeded step is bit-identical on both.
          C g = to_acc(out[i]);
          if (uncond) {
            const C u = to_acc(uncond[i]);
            g = add_rn(u, mul_rn(C(cf[kCoefW]), add_rn(g, -u)));
          }
          pred = add_rn(mul_rn(C(cf[kCoefCx]), to_acc(x[i])), mul_rn(C(cf[kCoefCo]), g));
        }
        if (pred_out) pred_out[i] = from_acc<T>(pred);
      }
      if (y_out) {
        C acc = mul_rn(C(cf[kCoefA]), to_acc(x[i]));
        if (out) acc = add_rn(acc, mul_rn(C(cf[kCoefBp]), pred));
        for (int h = 0; h < p.n_hist; ++h)
          acc =
              add_rn(acc, mul_rn(C(cf[kSolverCoefHistory + h]), to_acc(static_cast<const T*>(p.hist[h])[i])));
        if (p.noise) acc = add_rn(acc, mul_rn(C(cf[kCoefC]), noise[v]));
        y_out[i] = from_acc<T>(acc);
      }
    }
  }
}

}  // namespace

cudaError_t solver_update_cuda(const SolverUpdateParams& p, cudaStream_t stream) {
  const int V = p.dtype == DType::kFloat64 ? 2 : 4;
  const int64_t nblocks = (p.batch * p.numel + V - 1) / V;
  if (nblocks == 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int grid = int(std::min<int64_t>((nblocks + kThreads - 1) / kThreads, int64_t(sms) * 8));
  visit_dtype(p.dtype, [&](auto tag) { update_kernel<decltype(tag)><<<grid, kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

}  // namespace pygen
