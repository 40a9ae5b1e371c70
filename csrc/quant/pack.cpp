// Quantize, pack/unpack and dequantize on the CPU: offline or once per model load, so
// plain loops parallel over rows; the compiler vectorizes what it can. Every step
// rounds exactly as pygen/quant/reference.py does, so codes and scales match it bit
// for bit.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "csrc/common/parallel_for.h"
#include "csrc/quant/quant.h"

namespace pygen {

namespace {

// A scale as stored in `t` (written to scales[i]) and its float value.
float store_scale(void* scales, ScaleType t, int64_t i, float s) {
  switch (t) {
    case ScaleType::kFloat16: {
      const uint16_t b = f32_to_f16_bits(s);
      static_cast<uint16_t*>(scales)[i] = b;
      return f16_bits_to_f32(b);
    }
    case ScaleType::kBFloat16: {
      const uint16_t b = f32_to_bf16_bits(s);
      static_cast<uint16_t*>(scales)[i] = b;
      return bf16_bits_to_f32(b);
    }
    default:
      static_cast<float*>(scales)[i] = s;
      return s;
  }
}

float clamp_round(float v, float lo, float hi) { return std::min(std::max(std::nearbyint(v), lo), hi); }

void quantize_int4_group(const QuantizeParams& p, const float* w, int64_t i, uint8_t* codes) {
  const int64_t n = p.group;
  if (p.symmetric) {
    float amax = 0.0f;
    for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(w[k]));
    const float s = store_scale(p.scales, p.scale_type, i, amax / 7.0f);
    for (int64_t k = 0; k < n; ++k)
      codes[k] =
          uint8_t(s > 0.0f ? clamp_round(w[k] / s, -8.0f, 7.0f) + kInt4SymmetricZero : kInt4SymmetricZero);
    return;
  }
  // The range always holds 0, so that zero weights (padding, pruned) stay exact.
  float lo = 0.0f, hi = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    lo = std::min(lo, w[k]);
    hi = std::max(hi, w[k]);
  }
  const float s = store_scale(p.scales, p.scale_type, i, (hi - lo) / 15.0f);
  const float z = s > 0.0f ? clamp_round(-lo / s, 0.0f, 15.0f) : 0.0f;
  p.zeros[i] = uint8_t(z);
  for (int64_t k = 0; k < n; ++k)
    codes[k] = uint8_t(s > 0.0f ? clamp_round(w[k] / s + z, 0.0f, 15.0f) : 0.0f);
}

void quantize_mxfp4_block(const QuantizeParams& p, const float* w, int64_t i, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t k = 0; k < kMxBlock; ++k) amax = std::max(amax, std::fabs(w[k]));
  const uint32_t e = mx_scale_code(amax);
  static_cast<uint8_t*>(p.scales)[i] = uint8_t(e);
  const float s = e8m0_value(e);
  for (int64_t k = 0; k < kMxBlock; ++k) codes[k] = uint8_t(e2m1_encode(w[k] / s));
}

}  // namespace

void quantize_cpu(const QuantizeParams& p) {
  parallel_for(0, p.N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* w = p.weight + n * p.K;
      uint8_t* codes = p.codes + n * p.K;
      if (p.format == QuantFormat::kTernary) {
        const float d = p.ternary_scale[p.ternary_per_row ? n : 0] + kTernaryEps;
        for (int64_t k = 0; k < p.K; ++k) codes[k] = uint8_t(clamp_round(w[k] / d, -1.0f, 1.0f) + 1.0f);
        continue;
      }
      const int64_t groups = p.K / p.group;
      for (int64_t g = 0; g < groups; ++g) {
        if (p.format == QuantFormat::kInt4)
          quantize_int4_group(p, w + g * p.group, n * groups + g, codes + g * p.group);
        else
          quantize_mxfp4_block(p, w + g * p.group, n * groups + g, codes + g * p.group);
      }
    }
  });
}

void pack_codes_cpu(const PackParams& p) {
  const int64_t bytes = layout_row_bytes(p.layout, p.cols);
  parallel_for(0, p.rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* c = p.codes + r * p.cols;
      uint8_t* out = p.packed + r * bytes;
      for (int64_t b = 0; b < bytes; ++b) {
        if (p.layout == QuantLayout::kNibbles) {
          const int64_t k = (b / 16) * kNibbleBlock + b % 16;
          out[b] = uint8_t((c[k] & 15u) | (c[k + 16] & 15u) << 4);
        } else if (p.layout == QuantLayout::kCrumbs) {
          const int64_t k = (b / 16) * kCrumbBlock + b % 16;
          out[b] =
              uint8_t((c[k] & 3u) | (c[k + 16] & 3u) << 2 | (c[k + 32] & 3u) << 4 | (c[k + 48] & 3u) << 6);
        } else {
          uint32_t t[kTritsPerByte];
          for (int i = 0; i < kTritsPerByte; ++i) {
            const int64_t k = b * kTritsPerByte + i;
            t[i] = k < p.cols ? c[k] : 1u;  // padding: the code of weight 0
          }
          out[b] = trits_pack(t);
        }
      }
    }
  });
}

int64_t unpack_codes_cpu(const PackParams& p) {
  const int64_t bytes = layout_row_bytes(p.layout, p.cols);
  int64_t bad_row = -1;  // any offending row serves the error message
  parallel_for(0, p.rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* in = p.packed + r * bytes;
      uint8_t* c = p.codes + r * p.cols;
      for (int64_t k = 0; k < p.cols; ++k) {
        if (p.layout == QuantLayout::kNibbles) {
          c[k] = uint8_t(get_nibble(in, k));
        } else if (p.layout == QuantLayout::kCrumbs) {
          c[k] = uint8_t(get_crumb(in, k));
        } else {
          const uint32_t byte = in[k / kTritsPerByte];
          if (byte > 242) __atomic_store_n(&bad_row, r, __ATOMIC_RELAXED);
          c[k] = uint8_t(trits_get(byte, int(k % kTritsPerByte)));
        }
      }
    }
  });
  return bad_row;
}

void dequantize_cpu(const DequantizeParams& p) {
  const QuantWeight& w = p.w;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(p.out);
    parallel_for(0, w.N, 16, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t k = 0; k < w.K; ++k) {
          const int64_t g = k / w.group;
          const float v = code_value(w.format, weight_code(w, n, k), weight_zero(w, n, g));
          const float s = weight_scale(w, n, g);
          if constexpr (std::is_same_v<T, double>)
            out[n * w.K + k] = double(v) * double(s);  // exact: the float64 reference value
          else if constexpr (std::is_same_v<T, float>)
            out[n * w.K + k] = mul_rn(v, s);
          else
            out[n * w.K + k] = T::round(mul_rn(v, s));
        }
      }
    });
  });
}

}  // namespace pygen
