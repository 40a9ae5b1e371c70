// CPU kernels of the masked-diffusion steps, compiled once per ISA (PYGEN_CPU_NS).
// Positions (or rows, for first hitting) run in parallel, each on its own Philox
// substream, so results do not depend on the thread count. A position's logits are
// scanned around the mask token, [0, mask_id) and (mask_id, vocab), so the lane loops
// stay free of index tests.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <vector>

#include "csrc/common/math.h"
#include "csrc/common/parallel_for.h"
#include "csrc/sampling/masked_diffusion.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kLanes = 16;
constexpr float kInf = std::numeric_limits<float>::infinity();

// What a step needs besides the token: nothing, the drawn token's probability, or the
// margin between the two most probable tokens (both under softmax(logits), no
// temperature, the mask token excluded).
enum class Score { kNone, kProbability, kMargin };

// Positions per parallel chunk: enough logits that a chunk outweighs its scheduling.
int64_t position_grain(int64_t vocab) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1)); }

// The order keys (float_order_key) of -inf and +inf: a key above +inf's is a positive
// NaN, one below -inf's a negative NaN.
constexpr uint32_t kKeyMinusInf = 0x007fffffu, kKeyPlusInf = 0xff800000u;

// Lane-wise largest, second largest (kSecond) and smallest order key over row[begin,
// end). Integer max and min reductions vectorize, where float ones would not without
// -ffast-math; the extreme keys also tell NaN and +inf. Keys order -0 below +0, which
// the float scan this replaced did not, but every use of the maximum and the second
// (exp of a difference, a comparison with ==) gives the same for either zero.
struct Scan {
  uint32_t max[kLanes], second[kLanes], min[kLanes];
  Scan() {
    for (int l = 0; l < kLanes; ++l) {
      max[l] = second[l] = kKeyMinusInf;  // -inf: what a row of excluded logits has
      min[l] = ~0u;
    }
  }
  template <bool kSecond>
  void add(int l, uint32_t key) {
    if (kSecond) second[l] = std::max(second[l], std::min(max[l], key));
    max[l] = std::max(max[l], key);
    min[l] = std::min(min[l], key);
  }
  template <bool kSecond, class T>
  void range(const T* row, int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) add<kSecond>(l, float_order_key(to_float(row[i + l])));
    for (int l = 0; i < end; ++i, ++l) add<kSecond>(l, float_order_key(to_float(row[i])));
  }
};

// Float64 sum of the weights exp(y - y_max), y = x * inv_t, over row[begin, end).
template <class T>
double weight_sum(const T* row, int64_t begin, int64_t end, float inv_t, float y_max) {
  double lane_sum[kLanes] = {};
  int64_t j = begin;
  for (; j + kLanes <= end; j += kLanes)
    for (int l = 0; l < kLanes; ++l)
      lane_sum[l] += categorical_weight(mul_rn(to_float(row[j + l]), inv_t), y_max, -kInf, 0.0f);
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
  for (; j < end; ++j) s += categorical_weight(mul_rn(to_float(row[j]), inv_t), y_max, -kInf, 0.0f);
  return s;
}

// The same over row[begin, end) without category `skip`.
template <class T>
double weight_sum_skip(const T* row, int64_t begin, int64_t end, int64_t skip, float inv_t, float y_max) {
  return weight_sum(row, begin, std::min(end, skip), inv_t, y_max) +
         weight_sum(row, std::max(begin, skip + 1), end, inv_t, y_max);
}

struct Draw {
  int32_t status;
  int64_t token;
  float score;
};

// One masked position: checks its logits and, with `sample`, draws a token from
// softmax(row / temperature) without the mask token, by inversion of uniform `u`, and
// the score S of it.
template <Score S, class T>
Draw draw_position(const T* row, int64_t V, int64_t mask_id, float temperature, double u, bool sample,
                   std::vector<double>& sums) {
  Scan scan;
  constexpr bool kSecond = S == Score::kMargin;
  scan.range<kSecond>(row, 0, mask_id);
  scan.range<kSecond>(row, mask_id + 1, V);
  uint32_t key_max = kKeyMinusInf, key_second = kKeyMinusInf, key_min = ~0u;
  for (int l = 0; l < kLanes; ++l) {
    for (uint32_t k : {scan.max[l], scan.second[l]}) {  // the top two of all lanes' top two
      key_second = std::max(key_second, std::min(key_max, k));
      key_max = std::max(key_max, k);
    }
    key_min = std::min(key_min, scan.min[l]);
  }
  const float x_max = float_from_order_key(key_max), x_second = float_from_order_key(key_second);
  if (categorical_bad_logit(to_float(row[mask_id])) | (key_max >= kKeyPlusInf) | (key_min < kKeyMinusInf))
    return {kMaskedBadLogit, -1, 0.0f};
  if (x_max == -kInf) return {kMaskedNoSupport, -1, 0.0f};
  if (!sample) return {kMaskedOk, -1, 0.0f};

  temperature = categorical_temperature(x_max, temperature);
  int64_t token = 0;
  double total = 0;        // of the weights at the sampling temperature
  if (temperature == 0) {  // greedy: the first maximum
    while (token == mask_id || to_float(row[token]) != x_max) ++token;
  } else {
    const float inv_t = 1.0f / temperature;
    const float y_max = mul_rn(x_max, inv_t);
    const int64_t n_chunks = categorical_chunks(V);
    sums.resize(size_t(n_chunks));
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t begin = c * kCategoricalChunk, end = std::min(begin + kCategoricalChunk, V);
      sums[size_t(c)] = weight_sum_skip(row, begin, end, mask_id, inv_t, y_max);
      total += sums[size_t(c)];
    }
    float y_token = 0;
    token = categorical_invert(row, V, sums.data(), u * total, inv_t, y_max, -kInf, 0.0f, mask_id, &y_token);
  }
  if (S == Score::kNone) return {kMaskedOk, token, 0.0f};
  // The normalizer of softmax(row): the sampling sum when the temperature is 1.
  const double z = temperature == 1 ? total : weight_sum_skip(row, 0, V, mask_id, 1.0f, x_max);
  const float other = S == Score::kProbability ? to_float(row[token]) : x_second;
  const double w = exp_nonpos_f32(add_rn(other, -x_max));
  return {kMaskedOk, token, float((S == Score::kProbability ? w : 1.0 - w) / z)};
}

// Positions [b, e) of x: out and status for the unmasked ones (carried over, or a bad
// token), and `masked(pos, row_of_logits)` for each masked one.
template <class T, class Masked>
void visit_positions(const MaskedStepParams& p, int64_t b, int64_t e, Masked masked) {
  for (int64_t pos = b; pos < e; ++pos) {
    const int64_t tok = p.x[pos];
    p.out[pos] = tok;
    p.status[pos] = (tok < 0) | (tok >= p.vocab) ? kMaskedBadToken : kMaskedOk;
    if (tok == p.mask_id) masked(pos, static_cast<const T*>(p.logits) + pos * p.vocab);
  }
}

}  // namespace

void unmask_ancestral(const AncestralParams& a) {
  const MaskedStepParams& p = a.step;
  parallel_for(0, p.batch * p.length, position_grain(p.vocab), [&](int64_t b, int64_t e) {
    std::vector<double> sums;
    visit_dtype(p.dtype, [&](auto tag) {
      using T = decltype(tag);
      visit_positions<T>(p, b, e, [&](int64_t pos, const T* row) {
        const int64_t r = pos / p.length;
        double u_token, u_coin;
        masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(pos), &u_token, &u_coin);
        const bool unmask = u_coin < unmask_probability(a.alpha_t[r], a.alpha_s[r]);
        const Draw d =
            draw_position<Score::kNone>(row, p.vocab, p.mask_id, p.temperature[r], u_token, unmask, sums);
        p.status[pos] = d.status;
        if (unmask && d.status == kMaskedOk) p.out[pos] = d.token;
      });
    });
  });
}

void unmask_by_confidence(const ConfidenceParams& c) {
  const MaskedStepParams& p = c.step;
  const int64_t L = p.length;
  // Pass 1, per position: a candidate token in out and its confidence.
  parallel_for(0, p.batch * L, position_grain(p.vocab), [&](int64_t b, int64_t e) {
    std::vector<double> sums;
    visit_dtype(p.dtype, [&](auto tag) {
      using T = decltype(tag);
      for (int64_t pos = b; pos < e; ++pos) c.score[pos] = -kInf;
      visit_positions<T>(p, b, e, [&](int64_t pos, const T* row) {
        const int64_t r = pos / L;
        double u_token, u_random;
        masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(pos), &u_token, &u_random);
        const float t = p.temperature[r];
        const Draw d =
            c.confidence == Confidence::kProbability
                ? draw_position<Score::kProbability>(row, p.vocab, p.mask_id, t, u_token, true, sums)
            : c.confidence == Confidence::kMargin
                ? draw_position<Score::kMargin>(row, p.vocab, p.mask_id, t, u_token, true, sums)
                : draw_position<Score::kNone>(row, p.vocab, p.mask_id, t, u_token, true, sums);
        p.status[pos] = d.status;
        if (d.status != kMaskedOk) return;
        p.out[pos] = d.token;
        c.score[pos] = c.confidence == Confidence::kRandom ? float(u_random) : d.score;
      });
    });
  });
  // Pass 2, per row: the k largest keys keep their candidates; the other masked
  // positions get the mask token back. nth_element finds the k-th key in O(length).
  parallel_for(0, p.batch, 1, [&](int64_t b, int64_t e) {
    std::vector<uint64_t> keys;
    for (int64_t r = b; r < e; ++r) {
      const auto key = [&](int64_t l) {
        const int64_t pos = r * L + l;
        double u_token = 0, u_random = 0;
        if (c.confidence == Confidence::kRandom)
          masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(pos), &u_token, &u_random);
        return confidence_key(confidence_order(c.confidence, c.score[pos], u_random), l);
      };
      keys.clear();
      for (int64_t l = 0; l < L; ++l)
        if (p.x[r * L + l] == p.mask_id) keys.push_back(key(l));
      const size_t k = size_t(std::min<int64_t>(c.k[r], int64_t(keys.size())));
      if (k == keys.size()) continue;
      uint64_t threshold = ~uint64_t(0);  // above every key: k = 0 unmasks nothing
      if (k > 0) {
        std::nth_element(keys.begin(), keys.begin() + std::ptrdiff_t(k - 1), keys.end(),
                         std::greater<uint64_t>());
        threshold = keys[k - 1];
      }
      for (int64_t l = 0; l < L; ++l)
        if (p.x[r * L + l] == p.mask_id && key(l) < threshold) p.out[r * L + l] = p.mask_id;
    }
  });
}

void unmask_first_hitting(const MaskedStepParams& p) {
  const int64_t L = p.length;
  parallel_for(0, p.batch, 1, [&](int64_t b, int64_t e) {
    std::vector<double> sums;
    visit_dtype(p.dtype, [&](auto tag) {
      using T = decltype(tag);
      for (int64_t r = b; r < e; ++r) {
        int64_t n = 0;
        visit_positions<T>(p, r * L, (r + 1) * L, [&](int64_t, const T*) { ++n; });
        if (n == 0) continue;
        double u_token, u_position;
        masked_uniforms(uint64_t(p.seed[r]), p.offset, uint64_t(r), &u_token, &u_position);
        int64_t j = first_hitting_choice(u_position, n), pos = r * L;
        for (;; ++pos)
          if (p.x[pos] == p.mask_id && j-- == 0) break;
        const T* row = static_cast<const T*>(p.logits) + pos * p.vocab;
        const Draw d =
            draw_position<Score::kNone>(row, p.vocab, p.mask_id, p.temperature[r], u_token, true, sums);
        p.status[pos] = d.status;
        if (d.status == kMaskedOk) p.out[pos] = d.token;
      }
    });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
