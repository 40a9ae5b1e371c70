// CUDA kernels of the masked-diffusion steps: one thread block per position (per row
// for the first-hitting step and the top-k selection), the same algorithm and shared
// numerics as the CPU kernels (csrc/sampling/masked_diffusion.h). Chunk sums are
// reduced in another order than on the CPU, so a draw within ~1e-16 of a token
// boundary may differ between the devices.
#include "cuda/sampling/masked_diffusion.h"
#include "cuda/sampling/reduce.cuh"
#include "cuda/sampling/status.cuh"

namespace pygen {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// What a step needs besides the token (see the CPU kernel).
enum class Score { kNone, kProbability, kMargin };

struct Draw {
  int32_t status;
  int64_t token;
  float score;
};

// The larger two of two (largest, second largest) pairs.
__device__ void merge_top2(float* m1, float* m2, float b1, float b2) {
  *m2 = fmaxf(fminf(*m1, b1), fmaxf(*m2, b2));
  *m1 = fmaxf(*m1, b1);
}

// Block-wide float64 sum; every thread gets it.
__device__ double block_sum(double x, double* s_sum) {
  x = warp_sum(x);
  __syncthreads();  // s_sum may still be read from a previous call
  if (threadIdx.x % 32 == 0) s_sum[threadIdx.x / 32] = x;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kWarps; ++w) total += s_sum[w];
  return total;
}

// One masked position, by the whole block: checks its logits and, with `sample`, draws
// a token from softmax(row / temperature) without the mask token by inversion of `u`,
// with its score S. `sums` is the position's scratch of categorical_chunks(V) doubles.
// Every thread returns the same draw.
template <Score S, class T>
__device__ Draw block_draw(const T* row, int64_t V, int64_t mask_id, float temperature, double u, bool sample,
                           double* sums) {
  __shared__ float s_max[kWarps], s_second[kWarps];
  __shared__ int s_bad[kWarps];
  __shared__ double s_sum[kWarps];
  __shared__ Draw s_draw;
  constexpr bool kSecond = S == Score::kMargin;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  float m1 = -INFINITY, m2 = -INFINITY;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float x = to_float(row[i]);
    bad |= categorical_bad_logit(x);
    const float y = i == mask_id ? -INFINITY : x;
    if (kSecond) m2 = fmaxf(m2, fminf(m1, y));
    m1 = fmaxf(m1, y);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float b1 = __shfl_xor_sync(0xffffffffu, m1, o), b2 = __shfl_xor_sync(0xffffffffu, m2, o);
    merge_top2(&m1, &m2, b1, b2);
  }
  bad = __any_sync(0xffffffffu, bad);
  if (lane == 0) {
    s_max[warp] = m1;
    s_second[warp] = m2;
    s_bad[warp] = bad;
  }
  __syncthreads();
  float x_max = -INFINITY, x_second = -INFINITY;
  bad = 0;
  for (int w = 0; w < kWarps; ++w) {
    merge_top2(&x_max, &x_second, s_max[w], s_second[w]);
    bad |= s_bad[w];
  }
  if (bad) return {kMaskedBadLogit, -1, 0.0f};
  if (x_max == -INFINITY) return {kMaskedNoSupport, -1, 0.0f};
  if (!sample) return {kMaskedOk, -1, 0.0f};

  temperature = categorical_temperature(x_max, temperature);
  double total = 0;
  const float inv_t = temperature > 0 ? 1.0f / temperature : 1.0f;
  const float y_max = mul_rn(x_max, inv_t);
  if (temperature > 0) {  // each warp sums whole chunks of weights in float64
    const int64_t n_chunks = categorical_chunks(V);
    for (int64_t c = warp; c < n_chunks; c += kWarps) {
      const int64_t begin = c * kCategoricalChunk;
      const int64_t end = begin + kCategoricalChunk < V ? begin + kCategoricalChunk : V;
      double s = 0;
      for (int64_t i = begin + lane; i < end; i += 32)
        if (i != mask_id) s += categorical_weight(mul_rn(to_float(row[i]), inv_t), y_max, -INFINITY, 0.0f);
      s = warp_sum(s);
      if (lane == 0) sums[c] = s;
    }
    __syncthreads();
    for (int64_t c = 0; c < n_chunks; ++c) total += sums[c];
  }
  // The normalizer of softmax(row), for the scores: the sampling sum at temperature 1.
  double z = total;
  if (S != Score::kNone && temperature != 1) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (i != mask_id) s += categorical_weight(to_float(row[i]), x_max, -INFINITY, 0.0f);
    z = block_sum(s, s_sum);
  }
  if (threadIdx.x == 0) {
    int64_t token = 0;
    if (temperature == 0) {  // greedy: the first maximum
      while (token == mask_id || to_float(row[token]) != x_max) ++token;
    } else {
      float y_token = 0;
      token = categorical_invert(row, V, sums, u * total, inv_t, y_max, -INFINITY, 0.0f, mask_id, &y_token);
    }
    float score = 0.0f;
    if (S != Score::kNone) {
      const float other = S == Score::kProbability ? to_float(row[token]) : x_second;
      const double w = exp_nonpos_f32(add_rn(other, -x_max));
      score = float((S == Score::kProbability ? w : 1.0 - w) / z);
    }
    s_draw = {kMaskedOk, token, score};
  }
  __syncthreads();
  return s_draw;
}

// The calling thread records position `pos`'s status, and with `device_assert` fails
// on a bad one, naming op `op`.
__device__ void set_status(const MaskedStepParams& p, int64_t pos, int32_t status, bool device_assert,
                           const char* op) {
  p.status[pos] = status;
  if (device_assert && status != kMaskedOk)
    fail_row(op, masked_status_message(status), pos / p.length, pos % p.length);
}

// Thread 0 carries position `pos` over to out and records its status: a bad token, else
// `row_status` (its row's parameters, which without debug checks only the kernels
// check). Returns whether the position is masked and its row's parameters are ok (every
// thread).
__device__ bool visit_position(const MaskedStepParams& p, int64_t pos, int32_t row_status, bool device_assert,
                               const char* op) {
  const int64_t tok = p.x[pos];
  if (threadIdx.x == 0) {
    p.out[pos] = tok;
    set_status(p, pos, (tok < 0) | (tok >= p.vocab) ? kMaskedBadToken : row_status, device_assert, op);
  }
  return tok == p.mask_id && row_status == kMaskedOk;
}

template <class T>
__global__ void ancestral_kernel(AncestralParams a, double* __restrict__ chunk_sums, bool device_assert) {
  constexpr const char* kOp = "unmask_ancestral";
  const MaskedStepParams& p = a.step;
  const int64_t pos = blockIdx.x, r = pos / p.length;
  if (!visit_position(p, pos, ancestral_row_status(a, r), device_assert, kOp)) return;
  double u_token, u_coin;
  masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(pos), &u_token, &u_coin);
  const bool unmask = u_coin < unmask_probability(a.alpha_t[r], a.alpha_s[r]);
  const T* row = static_cast<const T*>(p.logits) + pos * p.vocab;
  const Draw d = block_draw<Score::kNone>(row, p.vocab, p.mask_id, p.temperature[r], u_token, unmask,
                                          chunk_sums + pos * categorical_chunks(p.vocab));
  if (threadIdx.x == 0) {
    set_status(p, pos, d.status, device_assert, kOp);
    if (unmask && d.status == kMaskedOk) p.out[pos] = d.token;
  }
}

template <Score S, class T>
__global__ void confidence_score_kernel(ConfidenceParams c, double* __restrict__ chunk_sums,
                                        bool device_assert) {
  constexpr const char* kOp = "unmask_by_confidence";
  const MaskedStepParams& p = c.step;
  const int64_t pos = blockIdx.x, r = pos / p.length;
  if (threadIdx.x == 0) c.score[pos] = -INFINITY;
  if (!visit_position(p, pos, confidence_row_status(c, r), device_assert, kOp)) return;
  double u_token, u_random;
  masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(pos), &u_token, &u_random);
  const T* row = static_cast<const T*>(p.logits) + pos * p.vocab;
  const Draw d = block_draw<S>(row, p.vocab, p.mask_id, p.temperature[r], u_token, true,
                               chunk_sums + pos * categorical_chunks(p.vocab));
  if (threadIdx.x == 0) {
    set_status(p, pos, d.status, device_assert, kOp);
    if (d.status != kMaskedOk) return;
    p.out[pos] = d.token;
    c.score[pos] = c.confidence == Confidence::kRandom ? float(u_random) : d.score;
  }
}

// One block per row: the k largest keys of the masked positions keep their candidates
// (a radix selection of the k-th key from the top, 8 bits a pass), the other masked
// positions get the mask token back.
__global__ void confidence_select_kernel(ConfidenceParams c) {
  const MaskedStepParams& p = c.step;
  const int64_t r = blockIdx.x, L = p.length;
  const int64_t* x = p.x + r * L;
  __shared__ unsigned int s_hist[256];
  __shared__ unsigned int s_needed;
  __shared__ uint64_t s_prefix;
  __shared__ double s_sum[kWarps];
  const auto key = [&](int64_t l) {
    double u_token = 0, u_random = 0;
    if (c.confidence == Confidence::kRandom)
      masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(r * L + l), &u_token, &u_random);
    return confidence_key(confidence_order(c.confidence, c.score[r * L + l], u_random), l);
  };
  double count = 0;
  for (int64_t l = threadIdx.x; l < L; l += kThreads) count += x[l] == p.mask_id;
  const int64_t n = int64_t(block_sum(count, s_sum));
  const int64_t k = c.k[r] < n ? c.k[r] : n;
  // A row with bad parameters kept its mask tokens in the score kernel (and got a status).
  if (k == n || confidence_row_status(c, r) != kMaskedOk) return;
  uint64_t threshold = ~uint64_t(0);  // above every key: k = 0 unmasks nothing
  if (k > 0) {
    uint64_t prefix = 0, mask = 0;
    if (threadIdx.x == 0) s_needed = unsigned(k);
    for (int shift = 56; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < 256; b += kThreads) s_hist[b] = 0;
      __syncthreads();
      for (int64_t l = threadIdx.x; l < L; l += kThreads) {
        if (x[l] != p.mask_id) continue;
        const uint64_t kl = key(l);
        if ((kl & mask) == prefix) atomicAdd(&s_hist[(kl >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) s_prefix = prefix | (uint64_t(radix_select_digit(s_hist, &s_needed)) << shift);
      __syncthreads();
      prefix = s_prefix;
      mask |= uint64_t(255) << shift;
      __syncthreads();
    }
    threshold = prefix;
  }
  for (int64_t l = threadIdx.x; l < L; l += kThreads)
    if (x[l] == p.mask_id && key(l) < threshold) p.out[r * L + l] = p.mask_id;
}

// One block per row: a masked position chosen uniformly gets a token.
template <class T>
__global__ void first_hitting_kernel(MaskedStepParams p, double* __restrict__ chunk_sums,
                                     bool device_assert) {
  constexpr const char* kOp = "unmask_first_hitting";
  const int64_t r = blockIdx.x, L = p.length;
  __shared__ double s_sum[kWarps];
  __shared__ int64_t s_pos;
  const int32_t row_status = masked_row_status(p, r);
  double count = 0;
  for (int64_t l = threadIdx.x; l < L; l += kThreads) {
    const int64_t tok = p.x[r * L + l];
    p.out[r * L + l] = tok;
    set_status(p, r * L + l, (tok < 0) | (tok >= p.vocab) ? kMaskedBadToken : row_status, device_assert, kOp);
    count += tok == p.mask_id;
  }
  const int64_t n = int64_t(block_sum(count, s_sum));
  if (n == 0 || row_status != kMaskedOk) return;
  double u_token, u_position;
  masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(r), &u_token, &u_position);
  if (threadIdx.x == 0) {
    int64_t j = first_hitting_choice(u_position, n), pos = r * L;
    for (;; ++pos)
      if (p.x[pos] == p.mask_id && j-- == 0) break;
    s_pos = pos;
  }
  __syncthreads();
  const int64_t pos = s_pos;
  const T* row = static_cast<const T*>(p.logits) + pos * p.vocab;
  const Draw d = block_draw<Score::kNone>(row, p.vocab, p.mask_id, p.temperature[r], u_token, true,
                                          chunk_sums + r * categorical_chunks(p.vocab));
  if (threadIdx.x == 0) {
    set_status(p, pos, d.status, device_assert, kOp);
    if (d.status == kMaskedOk) p.out[pos] = d.token;
  }
}

}  // namespace

cudaError_t unmask_ancestral_cuda(const AncestralParams& p, double* chunk_sums, bool device_assert,
                                  cudaStream_t stream) {
  const int64_t positions = p.step.batch * p.step.length;
  if (positions == 0) return cudaSuccess;
  visit_dtype(p.step.dtype, [&](auto tag) {
    ancestral_kernel<decltype(tag)>
        <<<unsigned(positions), kThreads, 0, stream>>>(p, chunk_sums, device_assert);
  });
  return cudaGetLastError();
}

cudaError_t unmask_by_confidence_cuda(const ConfidenceParams& p, double* chunk_sums, bool device_assert,
                                      cudaStream_t stream) {
  const int64_t positions = p.step.batch * p.step.length;
  if (positions == 0) return cudaSuccess;
  visit_dtype(p.step.dtype, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = unsigned(positions);
    if (p.confidence == Confidence::kProbability)
      confidence_score_kernel<Score::kProbability, T>
          <<<grid, kThreads, 0, stream>>>(p, chunk_sums, device_assert);
    else if (p.confidence == Confidence::kMargin)
      confidence_score_kernel<Score::kMargin, T><<<grid, kThreads, 0, stream>>>(p, chunk_sums, device_assert);
    else
      confidence_score_kernel<Score::kNone, T><<<grid, kThreads, 0, stream>>>(p, chunk_sums, device_assert);
  });
  confidence_select_kernel<<<unsigned(p.step.batch), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t unmask_first_hitting_cuda(const MaskedStepParams& p, double* chunk_sums, bool device_assert,
                                      cudaStream_t stream) {
  if (p.batch * p.length == 0) return cudaSuccess;
  visit_dtype(p.dtype, [&](auto tag) {
    first_hitting_kernel<decltype(tag)>
        <<<unsigned(p.batch), kThreads, 0, stream>>>(p, chunk_sums, device_assert);
  });
  return cudaGetLastError();
}

}  // namespace pygen
