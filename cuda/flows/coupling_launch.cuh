// Launch helpers of the coupling-layer kernels (affine_coupling.cu, rq_spline.cu): block
// size, grid sizes, and the per-sample log-det sums in a fixed order (one block per chunk
// of a sample's elements, then each sample's chunk sums added in order): deterministic,
// no atomics.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace pygen {

constexpr int kCouplingThreads = 256;

// Blocks for a grid-stride loop over n elements: at most 16 per SM, at least 1.
inline int coupling_grid(int64_t n) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t blocks = (n + kCouplingThreads - 1) / kCouplingThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sms) * 16)));
}

// Blocks for one task per block, capped at gridDim.x's limit (2^31 - 1): the kernel takes
// tasks gridDim.x apart, since batch * chunks may pass the limit.
inline unsigned coupling_task_grid(int64_t tasks) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(tasks, 0x7fffffff)));
}

// The sum of v over the block, in a fixed order; meaningful in thread 0. Safe to call
// again in a loop: the first barrier keeps thread 0's reads of the last sums ahead of
// the next writes.
template <class C>
__device__ C coupling_block_sum(C v) {
  __shared__ C warp_sums[kCouplingThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  C total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kCouplingThreads / 32; ++w) total += warp_sums[w];
  return total;
}

template <class C>
__global__ void coupling_sum_chunks_kernel(const C* partial, int64_t batch, int64_t chunks, C* logdet) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  C sum = 0;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
  logdet[b] = sum;
}

// logdet[b] = the sum of partial[b, :chunks] in order, for chunks > 1 (with one chunk the
// forward kernel writes logdet itself).
template <class C>
void coupling_sum_chunks(const C* partial, int64_t batch, int64_t chunks, C* logdet, cudaStream_t stream) {
  if (chunks > 1)
    coupling_sum_chunks_kernel<C>
        <<<unsigned((batch + kCouplingThreads - 1) / kCouplingThreads), kCouplingThreads, 0, stream>>>(
            partial, batch, chunks, logdet);
}

}  // namespace pygen
