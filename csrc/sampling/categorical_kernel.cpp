// CPU kernel of sample_categorical, compiled once per ISA (PYGEN_CPU_NS). Rows run in
// parallel; within a row, lane arrays keep the max and the float64 sums vectorizable.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "csrc/common/math.h"
#include "csrc/common/parallel_for.h"
#include "csrc/sampling/categorical.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kLanes = 16;

// The k-th largest scaled logit, by radix selection on order keys (4 passes of 8 bits,
// no sort); keeping y >= it keeps the top k, and every category tied with the k-th.
template <class T>
float top_k_threshold(const T* row, int64_t V, float inv_t, int64_t k, std::vector<float>& y) {
  y.resize(size_t(V));
  for (int64_t i = 0; i < V; ++i) y[size_t(i)] = mul_rn(to_float(row[i]), inv_t);
  uint32_t prefix = 0, mask = 0;
  int64_t needed = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t hist[256] = {};
    for (int64_t i = 0; i < V; ++i) {
      const uint32_t key = float_order_key(y[size_t(i)]);
      if ((key & mask) == prefix) ++hist[(key >> shift) & 255u];
    }
    prefix |= radix_select_digit(hist, &needed) << shift;
    mask |= 255u << shift;
  }
  return float_from_order_key(prefix);
}

// The smallest weight w_min such that the categories with weight >= w_min (among those
// kept by y_min) hold at least top_p of the kept mass: radix selection on the weights'
// bits (positive floats order as their bits) with float64 masses per bin.
template <class T>
float top_p_threshold(const T* row, int64_t V, float inv_t, float y_max, float y_min, float top_p,
                      std::vector<float>& w) {
  w.resize(size_t(V));
  double total = 0;
  for (int64_t i = 0; i < V; ++i) {
    w[size_t(i)] = float(categorical_weight(mul_rn(to_float(row[i]), inv_t), y_max, y_min, 0.0f));
    total += w[size_t(i)];
  }
  uint32_t prefix = 0, mask = 0;
  double needed = double(top_p) * total;
  for (int shift = 24; shift >= 0; shift -= 8) {
    double hist[256] = {};
    for (int64_t i = 0; i < V; ++i) {
      const uint32_t bits = float_bits(w[size_t(i)]);
      if (bits != 0 && (bits & mask) == prefix) hist[(bits >> shift) & 255u] += w[size_t(i)];
    }
    prefix |= radix_select_digit(hist, &needed) << shift;
    mask |= 255u << shift;
  }
  return bits_float(prefix);
}

template <class T>
void sample_row(const CategoricalParams& p, int64_t r, std::vector<double>& chunk_sums,
                std::vector<float>& scratch) {
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const int64_t V = p.vocab;
  const float temperature = p.temperature[r];
  const float inv_t = temperature > 0 ? 1.0f / temperature : 1.0f;

  // Pass 1: maximum, its first index, and whether any logit is NaN or +inf.
  float lane_max[kLanes];
  int32_t lane_bad[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_max[l] = -std::numeric_limits<float>::infinity();
    lane_bad[l] = 0;
  }
  int64_t i = 0;
  for (; i + kLanes <= V; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float x = to_float(row[i + l]);
      lane_bad[l] |= int32_t(!(x < std::numeric_limits<float>::infinity()) &
                             !(x == -std::numeric_limits<float>::infinity()));
      lane_max[l] = x > lane_max[l] ? x : lane_max[l];
    }
  }
  float x_max = -std::numeric_limits<float>::infinity();
  int32_t bad = 0;
  for (int l = 0; l < kLanes; ++l) {
    x_max = lane_max[l] > x_max ? lane_max[l] : x_max;
    bad |= lane_bad[l];
  }
  for (; i < V; ++i) {
    const float x = to_float(row[i]);
    bad |= int32_t(!(x < std::numeric_limits<float>::infinity()) &
                   !(x == -std::numeric_limits<float>::infinity()));
    x_max = x > x_max ? x : x_max;
  }
  if (bad) {
    p.status[r] = kCategoricalBadLogit;
    return;
  }
  if (x_max == -std::numeric_limits<float>::infinity()) {
    p.status[r] = kCategoricalNoSupport;
    return;
  }
  if (temperature == 0) {  // greedy: the first maximum, with probability 1
    int64_t k = 0;
    while (to_float(row[k]) != x_max) ++k;
    p.token[r] = k;
    p.logprob[r] = 0.0f;
    p.status[r] = kCategoricalOk;
    return;
  }

  const float y_max = mul_rn(x_max, inv_t);
  float y_min =
      p.min_p[r] > 0 ? add_rn(y_max, std::log(p.min_p[r])) : -std::numeric_limits<float>::infinity();
  if (p.top_k[r] < V) y_min = std::max(y_min, top_k_threshold(row, V, inv_t, p.top_k[r], scratch));
  const float w_min =
      p.top_p[r] < 1 ? top_p_threshold(row, V, inv_t, y_max, y_min, p.top_p[r], scratch) : 0.0f;

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
      categorical_invert(row, V, chunk_sums.data(), target, inv_t, y_max, y_min, w_min, &y_token);
  p.token[r] = token;
  p.logprob[r] = float(double(add_rn(y_token, -y_max)) - std::log(total));
  p.status[r] = kCategoricalOk;
}

}  // namespace

void sample_categorical(const CategoricalParams& p) {
  parallel_for(0, p.rows, 1, [&](int64_t b, int64_t e) {
    std::vector<double> chunk_sums;
    std::vector<float> scratch;
    visit_dtype(p.dtype, [&](auto tag) {
      for (int64_t r = b; r < e; ++r) sample_row<decltype(tag)>(p, r, chunk_sums, scratch);
    });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
