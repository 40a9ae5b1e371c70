// CPU kernel of sample_categorical, compiled once per ISA (PYGEN_CPU_NS). Rows run in
// parallel; within a row, lane arrays keep the max and the float64 sums vectorizable.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "csrc/common/math.h"
#include "csrc/common/parallel_for.h"
#include "csrc/sampling/categorical.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kLanes = 16;

// Radix selection from the top over 32-bit keys, 8 bits a pass, each pass histogramming
// only the candidates the previous digits left (compacted in place). `amount(key)` is
// what a key counts (its mass). Returns the threshold key, at or above which lies `needed`.
template <class H, class Amount>
uint32_t radix_select(std::vector<uint32_t>& keys, H needed, Amount amount) {
  size_t n = keys.size();
  uint32_t prefix = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    H hist[256] = {};
    for (size_t i = 0; i < n; ++i) hist[(keys[i] >> shift) & 255u] += amount(keys[i]);
    const uint32_t digit = radix_select_digit(hist, &needed);
    prefix |= digit << shift;
    size_t m = 0;
    for (size_t i = 0; i < n; ++i)
      if (((keys[i] >> shift) & 255u) == digit) keys[m++] = keys[i];
    n = m;
  }
  return prefix;
}

// Top-p as a cut on weights: the smallest w_min such that the categories with weight
// >= w_min hold at least top_p of the `kept` mass. `keys` holds the bits of the positive
// weights (positive floats order as their bits); each counts its float64 mass.
float top_p_cut(std::vector<uint32_t>& keys, double kept, float top_p) {
  const auto mass = [](uint32_t b) { return double(bits_float(b)); };
  return bits_float(radix_select<double>(keys, double(top_p) * kept, mass));
}

// Adds weight w (cut only by y_min) to the top-p keys and returns it.
inline double add_top_p_key(double w, std::vector<uint32_t>& keys) {
  if (w > 0) keys.push_back(float_bits(float(w)));
  return w;
}

struct Candidate {
  int64_t index;
  float y;  // scaled logit
};

// A scaled logit that is probably at or below the k-th largest, yet above all but a few
// hundred: the j-th largest of a sample of kTopKSample logits, j about twice the share of
// k in the sample. The sample is kTopKRuns runs of contiguous logits spread over the row,
// so it touches few cache lines of a row that is not yet cached. -inf (keep everything)
// when the row is short or k large.
constexpr int64_t kTopKSample = 1024, kTopKRuns = 64, kTopKRun = kTopKSample / kTopKRuns;
template <class T>
float top_k_guess(const T* row, int64_t V, int64_t k, float inv_t, std::vector<float>& sample) {
  const int64_t j = 2 * k * kTopKSample / V + 8;
  if (V < 8 * kTopKSample || 4 * j > kTopKSample) return -std::numeric_limits<float>::infinity();
  const int64_t stride = V / kTopKRuns;
  sample.resize(size_t(kTopKSample));
  // NaN (a bad row, reported after the scan) sorts as -inf here, keeping the order strict.
  for (int64_t run = 0; run < kTopKRuns; ++run)
    for (int64_t i = 0; i < kTopKRun; ++i) {
      const float y = mul_rn(to_float(row[run * stride + i]), inv_t);
      sample[size_t(run * kTopKRun + i)] = y == y ? y : -std::numeric_limits<float>::infinity();
    }
  std::nth_element(sample.begin(), sample.begin() + (j - 1), sample.end(), std::greater<float>());
  return sample[size_t(j - 1)];
}

// One pass over a row: its maximum logit, whether any is NaN or +inf, and with Collect
// the categories whose scaled logit x * inv_t is >= cut, appended in index order (mul_rn
// is monotone, so a lane group's largest logit tells whether any of it passes).
struct Scan {
  float x_max;
  int32_t bad;
};

template <bool Collect, class T>
Scan scan_row(const T* row, int64_t V, float inv_t, float cut, std::vector<Candidate>& cands) {
  const auto collect = [&](int64_t i) {
    const float y = mul_rn(to_float(row[i]), inv_t);
    if (y >= cut) cands.push_back({i, y});
  };
  float lane_max[kLanes];
  int32_t lane_bad[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_max[l] = -std::numeric_limits<float>::infinity();
    lane_bad[l] = 0;
  }
  int64_t i = 0;
  for (; i + kLanes <= V; i += kLanes) {
    float hi = -std::numeric_limits<float>::infinity();
    for (int l = 0; l < kLanes; ++l) {
      const float x = to_float(row[i + l]);
      lane_bad[l] |= categorical_bad_logit(x);
      lane_max[l] = x > lane_max[l] ? x : lane_max[l];
      hi = x > hi ? x : hi;
    }
    if (Collect && mul_rn(hi, inv_t) >= cut)
      for (int l = 0; l < kLanes; ++l) collect(i + l);
  }
  Scan s{-std::numeric_limits<float>::infinity(), 0};
  for (int l = 0; l < kLanes; ++l) {
    s.x_max = lane_max[l] > s.x_max ? lane_max[l] : s.x_max;
    s.bad |= lane_bad[l];
  }
  for (; i < V; ++i) {
    const float x = to_float(row[i]);
    s.bad |= categorical_bad_logit(x);
    s.x_max = x > s.x_max ? x : s.x_max;
    if (Collect) collect(i);
  }
  return s;
}

// Rows with top-k (k < V), given the categories at or above the guessed cut (all of them
// are collected again when fewer than k pass it, so the guess never changes the result):
// the exact k-th largest among those, then top-p and the inversion on the few
// candidates. Ties with the k-th are kept.
template <class T>
void sample_top_k(const CategoricalParams& p, int64_t r, const T* row, int64_t V, float inv_t, float y_max,
                  float y_min, std::vector<Candidate>& cands, std::vector<uint32_t>& keys) {
  const int64_t k = p.top_k[r];
  if (int64_t(cands.size()) < k) {
    cands.clear();
    scan_row<true>(row, V, inv_t, -std::numeric_limits<float>::infinity(), cands);
  }
  keys.clear();
  for (const Candidate& c : cands) keys.push_back(float_order_key(c.y));
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint32_t>());
  y_min = std::max(y_min, float_from_order_key(keys[size_t(k - 1)]));

  float w_min = 0.0f;
  if (p.top_p[r] < 1) {
    double kept = 0;
    keys.clear();
    for (const Candidate& c : cands) kept += add_top_p_key(categorical_weight(c.y, y_max, y_min, 0.0f), keys);
    w_min = top_p_cut(keys, kept, p.top_p[r]);
  }

  double total = 0;
  for (const Candidate& c : cands) total += categorical_weight(c.y, y_max, y_min, w_min);
  const double target = categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total;
  double acc = 0;
  const Candidate* token = nullptr;
  for (const Candidate& c : cands) {
    const double w = categorical_weight(c.y, y_max, y_min, w_min);
    if (w == 0) continue;
    token = &c;
    if (acc + w > target) break;
    acc += w;
  }
  p.token[r] = token->index;
  p.logprob[r] = float(double(add_rn(token->y, -y_max)) - std::log(total));
  p.status[r] = kCategoricalOk;
}

template <class T>
void sample_row(const CategoricalParams& p, int64_t r, std::vector<double>& chunk_sums,
                std::vector<Candidate>& cands, std::vector<uint32_t>& scratch, std::vector<float>& sample) {
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const int64_t V = p.vocab;

  // Pass 1: maximum, and whether any logit is NaN or +inf; for top-k rows also the
  // candidates at or above a guessed cut, so the row is read once.
  const bool top_k = p.top_k[r] < V && p.temperature[r] > 0;
  cands.clear();
  const Scan scan =
      top_k ? scan_row<true>(row, V, 1.0f / p.temperature[r],
                             top_k_guess(row, V, p.top_k[r], 1.0f / p.temperature[r], sample), cands)
            : scan_row<false>(row, V, 1.0f, 0.0f, cands);
  const float x_max = scan.x_max;
  const int32_t bad = scan.bad;
  if (bad) {
    p.status[r] = kCategoricalBadLogit;
    return;
  }
  if (x_max == -std::numeric_limits<float>::infinity()) {
    p.status[r] = kCategoricalNoSupport;
    return;
  }
  const float temperature = categorical_temperature(x_max, p.temperature[r]);
  if (temperature == 0) {  // greedy: the first maximum, with probability 1
    int64_t k = 0;
    while (to_float(row[k]) != x_max) ++k;
    p.token[r] = k;
    p.logprob[r] = 0.0f;
    p.status[r] = kCategoricalOk;
    return;
  }

  const float inv_t = 1.0f / temperature;
  const float y_max = mul_rn(x_max, inv_t);
  float y_min =
      p.min_p[r] > 0 ? add_rn(y_max, std::log(p.min_p[r])) : -std::numeric_limits<float>::infinity();
  if (top_k) return sample_top_k(p, r, row, V, inv_t, y_max, y_min, cands, scratch);
  float w_min = 0.0f;
  if (p.top_p[r] < 1) {
    double kept = 0;
    scratch.clear();
    for (int64_t k = 0; k < V; ++k)
      kept += add_top_p_key(categorical_weight(mul_rn(to_float(row[k]), inv_t), y_max, y_min, 0.0f), scratch);
    w_min = top_p_cut(scratch, kept, p.top_p[r]);
  }

  // Float64 sums of the weights per chunk (lane arrays keep the loop vectorizable).
  const int64_t n_chunks = categorical_chunks(V);
  chunk_sums.resize(size_t(n_chunks));
  double total = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t begin = c * kCategoricalChunk, end = std::min(begin + kCategoricalChunk, V);
    double lane_sum[kLanes] = {};
    int64_t j = begin;
    for (; j + kLanes <= end; j += kLanes) {
      for (int l = 0; l < kLanes; ++l)
        lane_sum[l] += categorical_weight(mul_rn(to_float(row[j + l]), inv_t), y_max, y_min, w_min);
    }
    double s = 0;
    for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
    for (; j < end; ++j) s += categorical_weight(mul_rn(to_float(row[j]), inv_t), y_max, y_min, w_min);
    chunk_sums[size_t(c)] = s;
    total += s;
  }

  const double target = categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total;
  float y_token = 0;
  const int64_t token =
      categorical_invert(row, V, chunk_sums.data(), target, inv_t, y_max, y_min, w_min, -1, &y_token);
  p.token[r] = token;
  p.logprob[r] = float(double(add_rn(y_token, -y_max)) - std::log(total));
  p.status[r] = kCategoricalOk;
}

}  // namespace

void sample_categorical(const CategoricalParams& p) {
  parallel_for(0, p.rows, 1, [&](int64_t b, int64_t e) {
    std::vector<double> chunk_sums;
    std::vector<uint32_t> scratch;
    std::vector<Candidate> cands;
    std::vector<float> sample;
    visit_dtype(p.dtype, [&](auto tag) {
      for (int64_t r = b; r < e; ++r) sample_row<decltype(tag)>(p, r, chunk_sums, cands, scratch, sample);
    });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
