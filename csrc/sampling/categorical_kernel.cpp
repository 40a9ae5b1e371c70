// CPU kernel of sample_categorical, compiled once per ISA (PYGEN_CPU_NS). Rows run in
// parallel; within a row, lane arrays keep the max and the float64 sums vectorizable.
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

template <class T>
void sample_row(const CategoricalParams& p, int64_t r, std::vector<double>& chunk_sums) {
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

  // Pass 2: float64 sums of the weights exp(y - y_max) per chunk, tokens under the
  // min-p threshold weighing 0.
  const float y_max = mul_rn(x_max, inv_t);
  const float y_min = add_rn(y_max, p.log_min_p);
  const int64_t n_chunks = categorical_chunks(V);
  chunk_sums.resize(size_t(n_chunks));
  double total = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t begin = c * kCategoricalChunk,
                  end = begin + kCategoricalChunk < V ? begin + kCategoricalChunk : V;
    double lane_sum[kLanes] = {};
    int64_t j = begin;
    for (; j + kLanes <= end; j += kLanes) {
      for (int l = 0; l < kLanes; ++l)
        lane_sum[l] += categorical_weight(mul_rn(to_float(row[j + l]), inv_t), y_max, y_min);
    }
    double s = 0;
    for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
    for (; j < end; ++j) s += categorical_weight(mul_rn(to_float(row[j]), inv_t), y_max, y_min);
    chunk_sums[size_t(c)] = s;
    total += s;
  }

  const double target = categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total;
  float y_token = 0;
  const int64_t token = categorical_invert(row, V, chunk_sums.data(), target, inv_t, y_max, y_min, &y_token);
  p.token[r] = token;
  p.logprob[r] = float(double(add_rn(y_token, -y_max)) - std::log(total));
  p.status[r] = kCategoricalOk;
}

}  // namespace

void sample_categorical(const CategoricalParams& p) {
  parallel_for(0, p.rows, 1, [&](int64_t b, int64_t e) {
    std::vector<double> chunk_sums;
    visit_dtype(p.dtype, [&](auto tag) {
      for (int64_t r = b; r < e; ++r) sample_row<decltype(tag)>(p, r, chunk_sums);
    });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
