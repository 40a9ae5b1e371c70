// CUDA kernels of the random ops: one thread per Philox block, the same transforms as
// the CPU (csrc/common/distributions.h), so a seeded fp32 stream is bit-identical.
#include <algorithm>

#include "csrc/common/distributions.h"
#include "cuda/common/random.h"

namespace pygen {

namespace {

constexpr int kThreads = 256;

// A block's values stored as one 8- or 16-byte access. The output comes from
// at::empty, whose CUDA allocations are aligned well beyond that.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <class T, template <class> class Dist>
__global__ void fill_kernel(T* __restrict__ out, int64_t numel, uint64_t seed, uint64_t offset) {
  constexpr int V = Dist<T>::kPerBlock;
  const int64_t nblocks = (numel + V - 1) / V;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < nblocks; b += stride) {
    Pack<T, V> vals;
    Dist<T>::apply(philox_block(seed, offset + uint64_t(b)), vals.v);
    const int64_t first = b * V;
    if (first + V <= numel) {
      *reinterpret_cast<Pack<T, V>*>(out + first) = vals;
    } else {
      for (int j = 0; first + j < numel; ++j) out[first + j] = vals.v[j];
    }
  }
}

int grid_for(int64_t nblocks) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t needed = (nblocks + kThreads - 1) / kThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sms) * 8)));
}

template <template <class> class Dist>
cudaError_t launch(const RandomFillParams& p, cudaStream_t stream) {
  const int64_t nblocks = (p.numel + values_per_block(p.dtype) - 1) / values_per_block(p.dtype);
  const int grid = grid_for(nblocks);
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T, Dist><<<grid, kThreads, 0, stream>>>(static_cast<T*>(p.out), p.numel, p.seed, p.offset);
  });
  return cudaGetLastError();
}

__global__ void philox_kernel(const uint32_t* __restrict__ counter, const uint32_t* __restrict__ key,
                              uint32_t* __restrict__ out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint32_t* c = counter + 4 * i;
    const Philox4x32 r = philox4x32_10({{c[0], c[1], c[2], c[3]}}, key[2 * i], key[2 * i + 1]);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[4 * i + j] = r.v[j];
  }
}

}  // namespace

cudaError_t fill_random_cuda(const RandomFillParams& p, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  return p.dist == Distribution::kUniform ? launch<Uniform>(p, stream) : launch<Normal>(p, stream);
}

cudaError_t philox4x32_10_cuda(const PhiloxParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  philox_kernel<<<grid_for(p.n), kThreads, 0, stream>>>(p.counter, p.key, p.out, p.n);
  return cudaGetLastError();
}

}  // namespace pygen
