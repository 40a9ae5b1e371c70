// CUDA kernel of sample_categorical: one thread block per row, the same algorithm and
// shared numerics as the CPU kernel (csrc/sampling/categorical.h). Chunk sums are
// reduced in another order than on the CPU, so a draw within ~1e-16 of a category
// boundary may differ between the devices.
#include <cfloat>

#include "cuda/sampling/categorical.h"
#include "cuda/sampling/reduce.cuh"
#include "cuda/sampling/status.cuh"

namespace pygen {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// A block-wide radix selection (4 passes of 8 bits) of the threshold key: `key(i)`
// gives category i's key and whether it is a candidate, `amount(i)` what it counts
// (1, or its mass); `needed` is what must lie at or above the threshold. All threads
// call it; they get the same key back.
template <class H, class Key, class Amount>
__device__ uint32_t block_radix_select(int64_t V, H needed, Key key, Amount amount, H* hist,
                                       uint32_t* s_prefix, H* s_needed) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) *s_needed = needed;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      bool candidate;
      const uint32_t k = key(i, &candidate);
      if (candidate && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], amount(i));
    }
    __syncthreads();
    if (threadIdx.x == 0) *s_prefix = prefix | (radix_select_digit(hist, s_needed) << shift);
    __syncthreads();
    prefix = *s_prefix;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

// Thread 0 records row r's status, and with `device_assert` fails on a bad one.
__device__ void set_status(const CategoricalParams& p, int64_t r, int32_t status, bool device_assert) {
  if (threadIdx.x != 0) return;
  p.status[r] = status;
  if (device_assert && status != kCategoricalOk)
    fail_row("sample_categorical", categorical_status_message(status), r, -1);
}

template <class T>
__global__ void categorical_kernel(CategoricalParams p, double* __restrict__ chunk_sums, bool device_assert) {
  const int64_t r = blockIdx.x;
  // Without debug checks the bindings have not read the parameters: checked here.
  const int32_t param_status = categorical_param_status(p, r);
  if (param_status != kCategoricalOk) return set_status(p, r, param_status, device_assert);
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const int64_t V = p.vocab;
  const int64_t n_chunks = categorical_chunks(V);
  double* sums = chunk_sums + r * n_chunks;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __shared__ float s_max[kWarps];
  __shared__ int s_bad[kWarps];

  // Pass 1: maximum and NaN / +inf detection.
  float x_max = -INFINITY;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float x = to_float(row[i]);
    bad |= categorical_bad_logit(x);
    x_max = fmaxf(x_max, x);
  }
  x_max = warp_max(x_max);
  bad = __any_sync(0xffffffffu, bad);
  if (lane == 0) {
    s_max[warp] = x_max;
    s_bad[warp] = bad;
  }
  __syncthreads();
  x_max = -INFINITY;
  bad = 0;
  for (int w = 0; w < kWarps; ++w) {
    x_max = fmaxf(x_max, s_max[w]);
    bad |= s_bad[w];
  }
  const float temperature = categorical_temperature(x_max, p.temperature[r]);
  if (bad || x_max == -INFINITY) {
    return set_status(p, r, bad ? kCategoricalBadLogit : kCategoricalNoSupport, device_assert);
  }
  if (temperature == 0) {
    if (threadIdx.x == 0) {  // greedy: the first maximum
      int64_t k = 0;
      while (to_float(row[k]) != x_max) ++k;
      p.token[r] = k;
      p.logprob[r] = 0.0f;
      p.status[r] = kCategoricalOk;
    }
    return;
  }

  // Cuts: top-k and min-p on the scaled logits, then top-p on the weights they keep.
  __shared__ unsigned long long s_count[256];
  __shared__ double s_mass[256];
  __shared__ uint32_t s_prefix;
  __shared__ unsigned long long s_needed_count;
  __shared__ double s_needed_mass;
  __shared__ double s_sum[kWarps];
  const float inv_t = 1.0f / temperature;
  const float y_max = mul_rn(x_max, inv_t);
  float y_min = p.min_p[r] > 0 ? add_rn(y_max, logf(p.min_p[r])) : -INFINITY;
  if (p.top_k[r] < V) {
    const uint32_t k = block_radix_select<unsigned long long>(
        V, (unsigned long long)p.top_k[r],
        [&](int64_t i, bool* candidate) {
          *candidate = true;
          return float_order_key(mul_rn(to_float(row[i]), inv_t));
        },
        [](int64_t) { return 1ull; }, s_count, &s_prefix, &s_needed_count);
    y_min = fmaxf(y_min, float_from_order_key(k));
  }
  float w_min = 0.0f;
  if (p.top_p[r] < 1) {
    double kept = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      kept += categorical_weight(mul_rn(to_float(row[i]), inv_t), y_max, y_min, 0.0f);
    kept = warp_sum(kept);
    if (lane == 0) s_sum[warp] = kept;
    __syncthreads();
    kept = 0;
    for (int w = 0; w < kWarps; ++w) kept += s_sum[w];
    auto weight = [&](int64_t i) {
      return categorical_weight(mul_rn(to_float(row[i]), inv_t), y_max, y_min, 0.0f);
    };
    const uint32_t bits = block_radix_select<double>(
        V, double(p.top_p[r]) * kept,
        [&](int64_t i, bool* candidate) {
          const uint32_t b = float_bits(float(weight(i)));
          *candidate = b != 0;
          return b;
        },
        weight, s_mass, &s_prefix, &s_needed_mass);
    w_min = bits_float(bits);
  }

  // Each warp sums whole chunks of weights in float64.
  for (int64_t c = warp; c < n_chunks; c += kWarps) {
    const int64_t begin = c * kCategoricalChunk;
    const int64_t end = begin + kCategoricalChunk < V ? begin + kCategoricalChunk : V;
    double s = 0;
    for (int64_t i = begin + lane; i < end; i += 32)
      s += categorical_weight(mul_rn(to_float(row[i]), inv_t), y_max, y_min, w_min);
    s = warp_sum(s);
    if (lane == 0) sums[c] = s;
  }
  __syncthreads();

  // Inversion, by one thread.
  if (threadIdx.x == 0) {
    double total = 0;
    for (int64_t c = 0; c < n_chunks; ++c) total += sums[c];
    const double target = categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total;
    float y_token = 0;
    const int64_t token = categorical_invert(row, V, sums, target, inv_t, y_max, y_min, w_min, -1, &y_token);
    p.token[r] = token;
    p.logprob[r] = float(double(add_rn(y_token, -y_max)) - log(total));
    p.status[r] = kCategoricalOk;
  }
}

}  // namespace

cudaError_t sample_categorical_cuda(const CategoricalParams& p, double* chunk_sums, bool device_assert,
                                    cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  visit_dtype(p.dtype, [&](auto tag) {
    categorical_kernel<decltype(tag)>
        <<<unsigned(p.rows), kThreads, 0, stream>>>(p, chunk_sums, device_assert);
  });
  return cudaGetLastError();
}

}  // namespace pygen
