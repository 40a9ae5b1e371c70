// CPU kernel of sample_categorical, compiled once per ISA (PYGEN_CPU_NS). Rows run in
// parallel; a batch of fewer long rows than threads runs its rows one after another, each
// split in blocks over the threads. Every reduction over a row has a shape that does not
// depend on that split (the maximum; float64 sums per chunk, added in chunk order; top-p's
// histograms per fixed block, added in block order; candidates in index order), so the
// result is the same for any thread count, bit for bit. Within a chunk, lane arrays keep
// the float64 sums vectorizable.
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

// The unit of work when a row is split over threads; top-p keeps its histograms per block.
constexpr int64_t kBlock = 8 * kCategoricalChunk;
constexpr int64_t kChunksPerBlock = kBlock / kCategoricalChunk;

int64_t blocks_of(int64_t vocab) { return (vocab + kBlock - 1) / kBlock; }

// Runs body(b, e) over [0, n): on ranges spread over the threads when the row is split,
// otherwise once over all of [0, n) on this thread.
struct Split {
  bool parallel;
  template <class F>
  void operator()(int64_t n, int64_t grain, const F& body) const {
    if (parallel)
      parallel_for(0, n, grain, body);
    else if (n > 0)
      body(0, n);
  }
};

struct Candidate {
  int64_t index;
  float y;  // scaled logit
};

// One pass over a row: its maximum logit, whether any is NaN or +inf, and with Collect
// the categories whose scaled logit x * inv_t is >= cut, in index order.
struct Scan {
  float x_max;
  int32_t bad;
};

// The largest and smallest order key (float_order_key) of a part of a row; the identity
// of their reduction is {0, ~0}.
struct KeyRange {
  uint32_t max = 0, min = ~0u;
};

// A row's scratch space, reused across the rows one thread samples.
struct Workspace {
  std::vector<double> chunk_sums;
  std::vector<KeyRange> scans;                // per block (or per range of blocks)
  std::vector<std::vector<Candidate>> found;  // per block, the candidates it collected
  std::vector<Candidate> cands;               // top-k: candidates in index order
  std::vector<uint32_t> keys;                 // top-k thresholds; top-p: weight bits per block
  std::vector<int64_t> key_count;             // top-p: keys per block
  std::vector<double> hist;                   // top-p: 256 masses per block
  std::vector<float> sample;                  // top-k: the guess's sample
};

// Top-p's cut among the top-k candidates: radix selection from the top over 32-bit keys,
// 8 bits a pass, each pass histogramming only the candidates the previous digits left
// (compacted in place), each key counting its float64 mass. Returns the threshold key.
uint32_t radix_select_mass(std::vector<uint32_t>& keys, double needed) {
  size_t n = keys.size();
  uint32_t prefix = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    double hist[256] = {};
    for (size_t i = 0; i < n; ++i) hist[(keys[i] >> shift) & 255u] += double(bits_float(keys[i]));
    const uint32_t digit = radix_select_digit(hist, &needed);
    prefix |= digit << shift;
    size_t m = 0;
    for (size_t i = 0; i < n; ++i)
      if (((keys[i] >> shift) & 255u) == digit) keys[m++] = keys[i];
    n = m;
  }
  return prefix;
}

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

// The scan of categories [begin, end), in groups of kScanGroup. The maximum is taken over
// order keys (float_order_key): integer max and min reductions vectorize, where float
// ones would not without -ffast-math, and the extreme keys also tell NaN and +inf (above
// +inf's key: +inf and positive NaNs; below -inf's: negative NaNs). Integer keys also
// order -0 below +0, so the maximum is one value whatever the order of the reduction. A
// group's maximum tells whether any of it passes the cut (mul_rn is monotone).
constexpr int kScanGroup = 32;
constexpr uint32_t kKeyPlusInf = 0xff800000u, kKeyMinusInf = 0x007fffffu;

template <bool Collect, class T>
KeyRange scan_range(const T* row, int64_t begin, int64_t end, float inv_t, float cut,
                    std::vector<Candidate>& cands) {
  const auto collect = [&](int64_t i) {
    const float y = mul_rn(to_float(row[i]), inv_t);
    if (y >= cut) cands.push_back({i, y});
  };
  uint32_t key_max = 0, key_min = ~0u;
  int64_t i = begin;
  for (; i + kScanGroup <= end; i += kScanGroup) {
    uint32_t group_max = 0, group_min = ~0u;
    for (int j = 0; j < kScanGroup; ++j) {
      const uint32_t key = float_order_key(to_float(row[i + j]));
      group_max = key > group_max ? key : group_max;
      group_min = key < group_min ? key : group_min;
    }
    key_max = group_max > key_max ? group_max : key_max;
    key_min = group_min < key_min ? group_min : key_min;
    if (Collect && mul_rn(float_from_order_key(group_max), inv_t) >= cut) {
      // Branch-free: which logits of a passing group pass is unpredictable.
      Candidate passed[kScanGroup];
      int n = 0;
      for (int j = 0; j < kScanGroup; ++j) {
        const float y = mul_rn(to_float(row[i + j]), inv_t);
        passed[n] = {i + j, y};
        n += y >= cut;
      }
      cands.insert(cands.end(), passed, passed + n);
    }
  }
  for (; i < end; ++i) {
    const uint32_t key = float_order_key(to_float(row[i]));
    key_max = key > key_max ? key : key_max;
    key_min = key < key_min ? key : key_min;
    if (Collect) collect(i);
  }
  return KeyRange{key_max, key_min};
}

// The scan of a whole row, by blocks; with Collect the candidates land in ws.cands.
template <bool Collect, class T>
Scan scan_row(const T* row, int64_t V, float inv_t, float cut, Split split, Workspace& ws) {
  const int64_t n_blocks = blocks_of(V);
  ws.scans.assign(size_t(n_blocks), KeyRange{});
  ws.found.resize(size_t(n_blocks));
  for (auto& f : ws.found) f.clear();
  // A range of blocks reports in the slot of its first block.
  split(n_blocks, 1, [&](int64_t b, int64_t e) {
    ws.scans[size_t(b)] =
        scan_range<Collect>(row, b * kBlock, std::min(e * kBlock, V), inv_t, cut, ws.found[size_t(b)]);
  });
  KeyRange keys;
  for (const KeyRange& part : ws.scans) {
    keys.max = std::max(keys.max, part.max);
    keys.min = std::min(keys.min, part.min);
  }
  if (Collect) {
    ws.cands.swap(ws.found[0]);
    for (size_t b = 1; b < ws.found.size(); ++b)
      ws.cands.insert(ws.cands.end(), ws.found[b].begin(), ws.found[b].end());
  }
  return Scan{float_from_order_key(keys.max), int32_t(keys.max >= kKeyPlusInf || keys.min < kKeyMinusInf)};
}

// Float64 sum of the weights of categories [begin, end), in lanes.
template <class T>
double chunk_sum(const T* row, int64_t begin, int64_t end, float inv_t, float y_max, float y_min,
                 float w_min) {
  double lane_sum[kLanes] = {};
  int64_t j = begin;
  for (; j + kLanes <= end; j += kLanes) {
    for (int l = 0; l < kLanes; ++l)
      lane_sum[l] += categorical_weight(mul_rn(to_float(row[j + l]), inv_t), y_max, y_min, w_min);
  }
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
  for (; j < end; ++j) s += categorical_weight(mul_rn(to_float(row[j]), inv_t), y_max, y_min, w_min);
  return s;
}

// Top-p's first pass over block b: each chunk's kept mass (weights cut by y_min alone,
// summed as chunk_sum does) into ws.chunk_sums, the bits of the block's positive weights
// into its slots of ws.keys (positive floats order as their bits), and the histogram of
// their float64 masses by top digit.
template <class T>
void top_p_block(const T* row, int64_t V, int64_t b, float inv_t, float y_max, float y_min, Workspace& ws) {
  uint32_t* keys = ws.keys.data() + b * kBlock;
  double* hist = ws.hist.data() + b * 256;
  std::fill(hist, hist + 256, 0.0);
  int64_t n = 0;
  const auto add_key = [&](double w) {
    if (w > 0) {
      keys[n] = float_bits(float(w));
      hist[keys[n++] >> 24] += w;
    }
  };
  const int64_t last_chunk = std::min((b + 1) * kChunksPerBlock, categorical_chunks(V));
  for (int64_t c = b * kChunksPerBlock; c < last_chunk; ++c) {
    const int64_t begin = c * kCategoricalChunk, end = std::min(begin + kCategoricalChunk, V);
    double lane_sum[kLanes] = {};
    int64_t j = begin;
    for (; j + kLanes <= end; j += kLanes) {
      double w[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        w[l] = categorical_weight(mul_rn(to_float(row[j + l]), inv_t), y_max, y_min, 0.0f);
        lane_sum[l] += w[l];
      }
      for (int l = 0; l < kLanes; ++l) add_key(w[l]);
    }
    double s = 0;
    for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
    for (; j < end; ++j) {
      const double w = categorical_weight(mul_rn(to_float(row[j]), inv_t), y_max, y_min, 0.0f);
      s += w;
      add_key(w);
    }
    ws.chunk_sums[size_t(c)] = s;
  }
  ws.key_count[size_t(b)] = n;
}

// Top-p as a cut on weights: the smallest w_min such that the categories with weight >=
// w_min hold at least top_p of the kept mass. Radix selection from the top over the
// weights' bits, 8 bits a pass: each block histograms the keys the previous digits left
// (compacted in place), and the blocks' histograms are added in block order.
template <class T>
float top_p_cut(const T* row, int64_t V, float inv_t, float y_max, float y_min, float top_p, Split split,
                Workspace& ws) {
  const int64_t n_blocks = blocks_of(V), n_chunks = categorical_chunks(V);
  ws.keys.resize(size_t(n_blocks * kBlock));
  ws.key_count.resize(size_t(n_blocks));
  ws.hist.resize(size_t(n_blocks * 256));
  ws.chunk_sums.resize(size_t(n_chunks));
  split(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) top_p_block(row, V, b, inv_t, y_max, y_min, ws);
  });
  double kept = 0;
  for (int64_t c = 0; c < n_chunks; ++c) kept += ws.chunk_sums[size_t(c)];
  double needed = double(top_p) * kept;
  uint32_t prefix = 0;
  for (int shift = 24;; shift -= 8) {
    double hist[256] = {};
    for (int64_t b = 0; b < n_blocks; ++b)
      for (int i = 0; i < 256; ++i) hist[i] += ws.hist[size_t(b * 256 + i)];
    prefix |= radix_select_digit(hist, &needed) << shift;
    if (shift == 0) break;
    // Later passes see the keys the digits left, often few: not worth a split then.
    int64_t left = 0;
    for (int64_t b = 0; b < n_blocks; ++b) left += ws.key_count[size_t(b)];
    const Split pass{split.parallel && left > 2 * kBlock};
    pass(n_blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        uint32_t* keys = ws.keys.data() + b * kBlock;
        double* bh = ws.hist.data() + b * 256;
        std::fill(bh, bh + 256, 0.0);
        int64_t m = 0;
        for (int64_t i = 0; i < ws.key_count[size_t(b)]; ++i) {
          if ((keys[i] >> shift) != (prefix >> shift)) continue;
          keys[m++] = keys[i];
          bh[(keys[i] >> (shift - 8)) & 255u] += double(bits_float(keys[i]));
        }
        ws.key_count[size_t(b)] = m;
      }
    });
  }
  return bits_float(prefix);
}

// Rows with top-k (k < V), given the categories at or above the guessed cut (all of them
// are collected again when fewer than k pass it, so the guess never changes the result):
// the exact k-th largest among those, then top-p and the inversion on the few
// candidates. Ties with the k-th are kept.
template <class T>
void sample_top_k(const CategoricalParams& p, int64_t r, const T* row, int64_t V, float inv_t, float y_max,
                  float y_min, Split split, Workspace& ws) {
  const int64_t k = p.top_k[r];
  if (int64_t(ws.cands.size()) < k)
    scan_row<true>(row, V, inv_t, -std::numeric_limits<float>::infinity(), split, ws);
  const std::vector<Candidate>& cands = ws.cands;
  std::vector<uint32_t>& keys = ws.keys;
  keys.clear();
  for (const Candidate& c : cands) keys.push_back(float_order_key(c.y));
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint32_t>());
  y_min = std::max(y_min, float_from_order_key(keys[size_t(k - 1)]));

  float w_min = 0.0f;
  if (p.top_p[r] < 1) {
    double kept = 0;
    keys.clear();
    for (const Candidate& c : cands) {
      const double w = categorical_weight(c.y, y_max, y_min, 0.0f);
      if (w > 0) keys.push_back(float_bits(float(w)));
      kept += w;
    }
    w_min = bits_float(radix_select_mass(keys, double(p.top_p[r]) * kept));
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
  p.logprob[r] = categorical_logprob(token->y, y_max, total);
  p.status[r] = kCategoricalOk;
}

template <class T>
void sample_row(const CategoricalParams& p, int64_t r, Split split, Workspace& ws) {
  const T* row = static_cast<const T*>(p.logits) + r * p.vocab;
  const int64_t V = p.vocab;

  // Pass 1: maximum, and whether any logit is NaN or +inf; for top-k rows also the
  // candidates at or above a guessed cut, so the row is read once.
  const bool top_k = p.top_k[r] < V && p.temperature[r] > 0;
  const Scan scan =
      top_k ? scan_row<true>(row, V, 1.0f / p.temperature[r],
                             top_k_guess(row, V, p.top_k[r], 1.0f / p.temperature[r], ws.sample), split, ws)
            : scan_row<false>(row, V, 1.0f, 0.0f, split, ws);
  const float x_max = scan.x_max;
  if (scan.bad) {
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
  const float y_min = categorical_min_p_cut(y_max, p.min_p[r]);
  if (top_k) return sample_top_k(p, r, row, V, inv_t, y_max, y_min, split, ws);
  const float w_min = p.top_p[r] < 1 ? top_p_cut(row, V, inv_t, y_max, y_min, p.top_p[r], split, ws) : 0.0f;

  // Float64 sums of the weights per chunk, and their total in chunk order.
  const int64_t n_chunks = categorical_chunks(V);
  ws.chunk_sums.resize(size_t(n_chunks));
  split(n_chunks, kChunksPerBlock, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kCategoricalChunk;
      ws.chunk_sums[size_t(c)] =
          chunk_sum(row, begin, std::min(begin + kCategoricalChunk, V), inv_t, y_max, y_min, w_min);
    }
  });
  double total = 0;
  for (int64_t c = 0; c < n_chunks; ++c) total += ws.chunk_sums[size_t(c)];

  const double target = categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total;
  float y_token = 0;
  const int64_t token =
      categorical_invert(row, V, ws.chunk_sums.data(), target, inv_t, y_max, y_min, w_min, -1, &y_token);
  p.token[r] = token;
  p.logprob[r] = categorical_logprob(y_token, y_max, total);
  p.status[r] = kCategoricalOk;
}

}  // namespace

void sample_categorical(const CategoricalParams& p) {
  // Rows in parallel, unless they would leave threads idle (fewer rows than threads, or a
  // last round of rows that does not fill them) and are long enough to split: then the
  // rows one after another, each split over the threads.
  const int64_t threads = parallel_threads();
  if (p.vocab >= 2 * kBlock && p.rows < 2 * threads && p.rows % threads != 0) {
    Workspace ws;
    visit_dtype(p.dtype, [&](auto tag) {
      for (int64_t r = 0; r < p.rows; ++r) sample_row<decltype(tag)>(p, r, Split{true}, ws);
    });
    return;
  }
  parallel_for(0, p.rows, 1, [&](int64_t b, int64_t e) {
    Workspace ws;
    visit_dtype(p.dtype, [&](auto tag) {
      for (int64_t r = b; r < e; ++r) sample_row<decltype(tag)>(p, r, Split{false}, ws);
    });
  });
}

}  // namespace pygen::PYGEN_CPU_NS
