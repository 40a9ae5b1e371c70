// The element types kernels see, named without torch, and the storage types of the
// 16-bit floats.
#pragma once

#include <cstdint>
#include <type_traits>

#include "csrc/common/hd.h"
#include "csrc/common/math.h"

namespace pygen {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// fp16 and bf16 travel as their bit patterns; `round` is round-to-nearest-even from
// float, and kBits their significand bits.
struct Half {
  static constexpr int kBits = 11;
  uint16_t bits;
  PYGEN_HD static Half round(float x) { return {f32_to_f16_bits(x)}; }
};
struct BFloat16 {
  static constexpr int kBits = 8;
  uint16_t bits;
  PYGEN_HD static BFloat16 round(float x) { return {f32_to_bf16_bits(x)}; }
};

// Any element type as float (float64 rounds; the 16-bit floats widen exactly).
PYGEN_HD float to_float(float x) { return x; }
PYGEN_HD float to_float(double x) { return float(x); }
PYGEN_HD float to_float(Half x) { return f16_bits_to_f32(x.bits); }
PYGEN_HD float to_float(BFloat16 x) { return bf16_bits_to_f32(x.bits); }

// The type kernels compute in: float64 for float64 data (the precision gradcheck and
// the references need), float32 for the rest.
template <class T>
using AccOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

// An element in its compute type, and back (16-bit floats round to nearest even).
template <class T>
PYGEN_HD AccOf<T> to_acc(T v) {
  if constexpr (std::is_same_v<T, double>)
    return v;
  else
    return to_float(v);
}
template <class T>
PYGEN_HD T from_acc(AccOf<T> v) {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>)
    return v;
  else
    return T::round(v);
}

// Calls f(T{}) with the element type `dtype` names: float, double, Half or BFloat16.
template <class F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat64:
      return f(double{});
    case DType::kFloat16:
      return f(Half{});
    case DType::kBFloat16:
      return f(BFloat16{});
    case DType::kFloat32:
      break;
  }
  return f(float{});
}

}  // namespace pygen
