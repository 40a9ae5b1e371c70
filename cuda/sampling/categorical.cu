// CUDA kernels of sample_categorical: the CPU kernel's algorithm and numerics
// (csrc/sampling/categorical.h) on one thread block per row, or for few long rows with
// each row over several blocks; the pieces are in categorical_row.cuh. Both give the
// same token and log-probability, and the CPU's where no top-k / top-p cut is taken.
#include <algorithm>
#include <climits>

#include "cuda/sampling/categorical.h"
#include "cuda/sampling/categorical_row.cuh"

namespace pygen {

namespace {

using namespace categorical_cuda;

// Auto split: aim at this many blocks per SM over all rows, with at least
// kMinSplitChunks chunks a block (one per warp); kMaxSplits bounds the force knob.
constexpr int64_t kBlocksPerSm = 8;
constexpr int64_t kMinSplitChunks = kWarps;
constexpr int64_t kMaxSplits = 4096;

// Part s of S of a row of n chunks: chunks [n s / S, n (s + 1) / S), none empty (S <= n).
__device__ __forceinline__ void split_chunks(int64_t n, int64_t splits, int64_t s, int64_t* c0, int64_t* c1) {
  *c0 = n * s / splits;
  *c1 = n * (s + 1) / splits;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    categorical_row_kernel(CategoricalParams p, int64_t row0, double* __restrict__ chunk_sums,
                           bool device_assert) {
  __shared__ RowShared sh;
  const int64_t r = row0 + blockIdx.x;
  // Without debug checks the bindings have not read the parameters: checked here.
  const int32_t param_status = categorical_param_status(p, r);
  if (param_status != kCategoricalOk) return set_status(p, r, param_status, device_assert);
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const RowScan scan = block_merge(thread_scan(row, 0, p.vocab), sh.warp_scan);
  RowCut cut;
  if (!row_cut(p, r, scan, true, device_assert, &cut)) return;
  sample_row_block(p, r, row, cut, chunk_sums + r * categorical_chunks(p.vocab), sh);
}

// Split rows, first kernel: block (r, s) scans part s of row r into partials[r][s]. Part
// 0 also zeroes the row's arrival count, which the second kernel, next on the stream,
// counts up: no memset, and nothing carried from an earlier call or graph replay.
template <class T>
__global__ void __launch_bounds__(kThreads)
    categorical_scan_kernel(CategoricalParams p, int64_t row0, int64_t splits, RowScan* __restrict__ partials,
                            unsigned* __restrict__ arrivals) {
  __shared__ RowScan warp_scan[kWarps];
  const int64_t r = row0 + blockIdx.x / splits, s = blockIdx.x % splits;
  int64_t c0, c1;
  split_chunks(categorical_chunks(p.vocab), splits, s, &c0, &c1);
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const RowScan part = block_merge(
      thread_scan(row, c0 * kCategoricalChunk, std::min(c1 * kCategoricalChunk, p.vocab)), warp_scan);
  if (threadIdx.x == 0) {
    partials[r * splits + s] = part;
    if (s == 0) arrivals[r] = 0;
  }
}

// Split rows, second kernel: every block of row r merges the row's partial scans (so all
// take the same decisions), then sums its part's chunks; the last block to arrive
// inverts. Bad and greedy rows are recorded by part 0 alone; rows with a top-k or top-p
// cut, which needs the whole row, are sampled by part 0 alone as one block would.
template <class T>
__global__ void __launch_bounds__(kThreads)
    categorical_split_kernel(CategoricalParams p, int64_t row0, int64_t splits,
                             const RowScan* __restrict__ partials, unsigned* __restrict__ arrivals,
                             double* __restrict__ chunk_sums, bool device_assert) {
  __shared__ RowShared sh;
  const int64_t r = row0 + blockIdx.x / splits, s = blockIdx.x % splits;
  const bool writer = s == 0;
  const int32_t param_status = categorical_param_status(p, r);
  if (param_status != kCategoricalOk) {
    if (writer) set_status(p, r, param_status, device_assert);
    return;
  }
  RowScan scan = no_scan();
  for (int64_t i = threadIdx.x; i < splits; i += kThreads) scan = merge(scan, partials[r * splits + i]);
  scan = block_merge(scan, sh.warp_scan);
  RowCut cut;
  if (!row_cut(p, r, scan, writer, device_assert, &cut)) return;
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const int64_t n_chunks = categorical_chunks(p.vocab);
  double* sums = chunk_sums + r * n_chunks;
  if (p.top_k[r] < p.vocab || p.top_p[r] < 1) {
    if (writer) sample_row_block(p, r, row, cut, sums, sh);
    return;
  }
  int64_t c0, c1;
  split_chunks(n_chunks, splits, s, &c0, &c1);
  block_chunk_sums(row, p.vocab, c0, c1, cut, sums);
  // The last-block pattern: each thread's sums visible device-wide before the count.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) sh.last = atomicAdd(arrivals + r, 1u) == unsigned(splits - 1);
  __syncthreads();
  if (!sh.last) return;
  __threadfence();  // the other blocks' sums, seen through the count
  block_invert(p, r, row, sums, cut, sh);
}

struct Workspace {
  double* chunk_sums;  // [rows, chunks]
  RowScan* partials;   // [rows, splits]
  unsigned* arrivals;  // [rows]
};

// The workspace's parts, each at a multiple of 16 bytes.
int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }
Workspace carve(void* base, int64_t rows, int64_t vocab, int64_t splits) {
  char* at = static_cast<char*>(base);
  Workspace ws{};
  ws.chunk_sums = reinterpret_cast<double*>(at);
  at += align16(rows * categorical_chunks(vocab) * int64_t(sizeof(double)));
  if (splits == 0) return ws;
  ws.partials = reinterpret_cast<RowScan*>(at);
  at += align16(rows * splits * int64_t(sizeof(RowScan)));
  ws.arrivals = reinterpret_cast<unsigned*>(at);
  return ws;
}

}  // namespace

int64_t categorical_cuda_splits(int64_t rows, int64_t vocab, int64_t force) {
  const int64_t n_chunks = categorical_chunks(vocab);
  if (force == 1) return 0;
  if (force >= 2) return std::min({force, n_chunks, kMaxSplits});
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t target = kBlocksPerSm * sms;
  if (rows <= 0 || rows * 2 > target) return 0;
  const int64_t splits = std::min({(target + rows - 1) / rows, n_chunks / kMinSplitChunks, kMaxSplits});
  return splits >= 2 ? splits : 0;
}

int64_t categorical_cuda_workspace_bytes(int64_t rows, int64_t vocab, int64_t splits) {
  int64_t bytes = align16(rows * categorical_chunks(vocab) * int64_t(sizeof(double)));
  if (splits > 0)
    bytes += align16(rows * splits * int64_t(sizeof(RowScan))) + rows * int64_t(sizeof(unsigned));
  return bytes;
}

cudaError_t sample_categorical_cuda(const CategoricalParams& p, int64_t splits, void* workspace,
                                    bool device_assert, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  const Workspace ws = carve(workspace, p.rows, p.vocab, splits);
  // Grids of at most INT_MAX blocks: rows in batches when there are more.
  const int64_t batch = INT_MAX / std::max<int64_t>(splits, 1);
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t row0 = 0; row0 < p.rows; row0 += batch) {
      const int64_t rows = std::min(batch, p.rows - row0);
      if (splits == 0) {
        categorical_row_kernel<T>
            <<<unsigned(rows), kThreads, 0, stream>>>(p, row0, ws.chunk_sums, device_assert);
        continue;
      }
      const unsigned blocks = unsigned(rows * splits);
      categorical_scan_kernel<T><<<blocks, kThreads, 0, stream>>>(p, row0, splits, ws.partials, ws.arrivals);
      categorical_split_kernel<T><<<blocks, kThreads, 0, stream>>>(p, row0, splits, ws.partials, ws.arrivals,
                                                                   ws.chunk_sums, device_assert);
    }
  });
  return cudaGetLastError();
}

}  // namespace pygen
