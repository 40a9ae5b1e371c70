// Low-bit weight ops (quant family): checks, params and the CPU implementation.
#include "bindings/quant.h"

#include <torch/library.h>

#include <cstdint>
#include <string>

#include "bindings/checks.h"

namespace pygen {

namespace {

QuantFormat to_format(const std::string& f) {
  if (f == "int4") return QuantFormat::kInt4;
  if (f == "mxfp4") return QuantFormat::kMxfp4;
  TORCH_CHECK_VALUE(f == "ternary", "format must be 'int4', 'mxfp4' or 'ternary', got '", f, "'");
  return QuantFormat::kTernary;
}

QuantLayout to_layout(const std::string& l) {
  if (l == "int4") return QuantLayout::kNibbles;
  if (l == "int2") return QuantLayout::kCrumbs;
  TORCH_CHECK_VALUE(l == "base3",
                    "layout must be 'int4' (nibbles), 'int2' (crumbs) or 'base3' (trits), got '", l, "'");
  return QuantLayout::kTrits;
}

ScaleType to_scale_type(at::ScalarType t, const char* arg) {
  switch (t) {
    case at::kFloat:
      return ScaleType::kFloat32;
    case at::kHalf:
      return ScaleType::kFloat16;
    case at::kBFloat16:
      return ScaleType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, arg, " must be float32, float16 or bfloat16, got ", t);
  }
}

// K must split into whole 16-byte blocks of the layout and whole groups.
void check_in_features(QuantFormat f, int64_t K, int64_t group) {
  if (f == QuantFormat::kTernary) {
    TORCH_CHECK_VALUE(K % kCrumbBlock == 0, "ternary weights need in_features (K) to be a multiple of ",
                      kCrumbBlock, ", got K=", K);
    return;
  }
  if (f == QuantFormat::kInt4) {
    TORCH_CHECK_VALUE(group == 32 || group == 64 || group == 128, "group_size must be 32, 64 or 128, got ",
                      group);
  } else {
    TORCH_CHECK_VALUE(group == kMxBlock, "mxfp4 has one scale per 32 elements: group_size must be 32, got ",
                      group);
  }
  TORCH_CHECK_VALUE(K % group == 0, "in_features (K=", K, ") must be a multiple of group_size ", group);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_weight_cpu(const at::Tensor& weight,
                                                                   const std::string& format,
                                                                   int64_t group_size, bool symmetric,
                                                                   at::ScalarType scale_dtype,
                                                                   bool per_channel) {
  const QuantFormat f = to_format(format);
  TORCH_CHECK_VALUE(weight.dim() == 2, "weight must be 2-D [out_features, in_features], got shape ",
                    weight.sizes());
  to_dtype(weight.scalar_type(), "weight");
  const int64_t N = weight.size(0), K = weight.size(1);
  check_in_features(f, K, f == QuantFormat::kTernary ? K : group_size);
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE(at::isfinite(w).all().item<bool>(), "weight must be finite: it has NaN or inf values");
  const at::TensorOptions u8 = w.options().dtype(at::kByte);
  at::Tensor codes = at::empty({N, K}, u8), scales, zeros = at::empty({0}, u8);
  QuantizeParams p{f,
                   N,
                   K,
                   group_size,
                   symmetric,
                   w.data_ptr<float>(),
                   nullptr,
                   per_channel,
                   codes.data_ptr<uint8_t>(),
                   nullptr,
                   ScaleType::kFloat32,
                   nullptr};
  if (f == QuantFormat::kTernary) {
    // BitNet b1.58's absmean scale, summed in float64 (pygen/quant/reference.py does the same).
    scales = per_channel ? w.abs().to(at::kDouble).mean({1}).to(at::kFloat)
                         : w.abs().to(at::kDouble).mean().to(at::kFloat).reshape({1});
    p.group = K;
    p.ternary_scale = scales.data_ptr<float>();
  } else if (f == QuantFormat::kInt4) {
    p.scale_type = to_scale_type(scale_dtype, "scale_dtype");
    scales = at::empty({N, K / group_size}, w.options().dtype(scale_dtype));
    if (!symmetric) zeros = at::empty({N, K / group_size}, u8);
    p.zeros = symmetric ? nullptr : zeros.data_ptr<uint8_t>();
  } else {
    p.scale_type = ScaleType::kE8M0;
    scales = at::empty({N, K / kMxBlock}, u8);
  }
  p.scales = scales.data_ptr();
  quantize_cpu(p);
  if (f == QuantFormat::kInt4 && scale_dtype != at::kFloat) {
    TORCH_CHECK_VALUE(at::isfinite(scales).all().item<bool>(), "weight has a group whose scale overflows ",
                      scale_dtype, ": use scale_dtype=torch.float32");
  }
  return {codes, scales, zeros};
}

void check_codes_tensor(const at::Tensor& t, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kByte, arg, " must be uint8, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2, arg, " must be 2-D [rows, bytes], got shape ", t.sizes());
}

at::Tensor pack_codes_cpu_op(const at::Tensor& codes, const std::string& layout) {
  const QuantLayout l = to_layout(layout);
  check_codes_tensor(codes, "codes");
  const int64_t rows = codes.size(0), cols = codes.size(1);
  const int64_t block = l == QuantLayout::kNibbles  ? kNibbleBlock
                        : l == QuantLayout::kCrumbs ? kCrumbBlock
                                                    : 1;
  TORCH_CHECK_VALUE(cols % block == 0, "codes' columns must be a multiple of ", block, " for layout '",
                    layout, "', got ", cols);
  const int64_t limit = l == QuantLayout::kNibbles ? 16 : 3;
  TORCH_CHECK_VALUE(codes.numel() == 0 || codes.max().item<int64_t>() < limit, "codes must be below ", limit,
                    " for layout '", layout, "'");
  const at::Tensor c = codes.contiguous();
  at::Tensor packed = at::empty({rows, layout_row_bytes(l, cols)}, codes.options());
  pack_codes_cpu({l, rows, cols, c.data_ptr<uint8_t>(), packed.data_ptr<uint8_t>()});
  return packed;
}

at::Tensor unpack_codes_cpu_op(const at::Tensor& packed, const std::string& layout, int64_t cols) {
  const QuantLayout l = to_layout(layout);
  check_codes_tensor(packed, "packed");
  TORCH_CHECK_VALUE(cols >= 0 && packed.size(1) == layout_row_bytes(l, cols), "packed must have ",
                    layout_row_bytes(l, cols), " bytes per row for ", cols, " columns in layout '", layout,
                    "', got ", packed.size(1));
  const int64_t block = l == QuantLayout::kNibbles  ? kNibbleBlock
                        : l == QuantLayout::kCrumbs ? kCrumbBlock
                                                    : 1;
  TORCH_CHECK_VALUE(cols % block == 0, "cols must be a multiple of ", block, " for layout '", layout,
                    "', got ", cols);
  const at::Tensor in = packed.contiguous();
  at::Tensor codes = at::empty({packed.size(0), cols}, packed.options());
  const int64_t bad =
      unpack_codes_cpu({l, packed.size(0), cols, codes.data_ptr<uint8_t>(), in.data_ptr<uint8_t>()});
  TORCH_CHECK_VALUE(bad < 0, "packed row ", bad, " has a byte above 242, which is not 5 base-3 digits");
  return codes;
}

// The QuantWeight a packed tensor, its scales and zeros describe, after checking them.
QuantWeight quant_weight(const at::Tensor& packed, const at::Tensor& scales,
                         const std::optional<at::Tensor>& zeros, const std::string& format,
                         int64_t group_size) {
  const QuantFormat f = to_format(format);
  check_codes_tensor(packed, "packed");
  TORCH_CHECK_VALUE(packed.is_contiguous(), "packed must be contiguous");
  const int64_t N = packed.size(0), K = packed.size(1) * (f == QuantFormat::kTernary ? 4 : 2);
  const int64_t group = f == QuantFormat::kTernary ? K : group_size;
  check_in_features(f, K, group);
  TORCH_CHECK(scales.device() == packed.device(), "scales must be on packed's device ", packed.device(),
              ", got ", scales.device());
  TORCH_CHECK_VALUE(scales.is_contiguous(), "scales must be contiguous");
  QuantWeight w{
      f, N, K, group, packed.data_ptr<uint8_t>(), scales.data_ptr(), ScaleType::kFloat32, K / group, nullptr};
  if (f == QuantFormat::kTernary) {
    TORCH_CHECK_TYPE(scales.scalar_type() == at::kFloat, "ternary scales must be float32, got ",
                     scales.scalar_type());
    TORCH_CHECK_VALUE(scales.dim() == 1 && (scales.size(0) == N || scales.size(0) == 1),
                      "ternary scales must be [", N, "] (per channel) or [1] (per tensor), got ",
                      scales.sizes());
    w.scale_row_stride = scales.size(0) == 1 ? 0 : 1;
  } else {
    TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(0) == N && scales.size(1) == K / group,
                      "scales must be [", N, ", ", K / group,
                      "] (out_features, in_features / group_size), got ", scales.sizes());
    if (f == QuantFormat::kMxfp4) {
      TORCH_CHECK_TYPE(scales.scalar_type() == at::kByte, "mxfp4 scales must be uint8 (E8M0), got ",
                       scales.scalar_type());
    }
    w.scale_type =
        f == QuantFormat::kMxfp4 ? ScaleType::kE8M0 : to_scale_type(scales.scalar_type(), "scales");
  }
  if (zeros && zeros->numel() > 0) {
    TORCH_CHECK_VALUE(f == QuantFormat::kInt4, "zeros are for int4 weights only, got format '", format, "'");
    TORCH_CHECK_TYPE(zeros->scalar_type() == at::kByte, "zeros must be uint8, got ", zeros->scalar_type());
    TORCH_CHECK_VALUE(zeros->sizes() == scales.sizes() && zeros->is_contiguous(),
                      "zeros must be contiguous and shaped as scales ", scales.sizes(), ", got ",
                      zeros->sizes());
    TORCH_CHECK(zeros->device() == packed.device(), "zeros must be on packed's device");
    w.zeros = zeros->data_ptr<uint8_t>();
  }
  return w;
}

// The dtype the products run in (QuantMatmulParams::compute) for x of dtype t.
DType compute_of(at::ScalarType t, std::optional<at::ScalarType> c, bool half_compute) {
  if (!c || *c == t) return to_dtype(t, "x");
  TORCH_CHECK_VALUE(t == at::kFloat, "compute_dtype must be None or x's dtype ", t,
                    " for 16-bit x (only float32 x converts), got ", *c);
  TORCH_CHECK_VALUE(*c != at::kHalf || half_compute,
                    "compute_dtype float16 is CUDA only; on the CPU float32 x computes in float32 or "
                    "bfloat16, got float16");
  TORCH_CHECK_VALUE(*c == at::kBFloat16 || *c == at::kHalf, "compute_dtype must be None, float32, bfloat16",
                    half_compute ? " or float16" : "", " for float32 x, got ", *c);
  return to_dtype(*c, "compute_dtype");
}

// The kernels load 16 bytes at a time: a contiguous view at an odd offset is copied.
at::Tensor aligned16(const at::Tensor& t) {
  return t.is_contiguous() && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 ? t.clone() : t;
}

}  // namespace

at::Tensor dequantize_weight_impl(const at::Tensor& packed, const at::Tensor& scales,
                                  const std::optional<at::Tensor>& zeros, const std::string& format,
                                  int64_t group_size, at::ScalarType dtype,
                                  const std::function<void(const DequantizeParams&)>& launch) {
  const at::Tensor pk = aligned16(packed);
  const QuantWeight w = quant_weight(pk, scales, zeros, format, group_size);
  at::Tensor out = at::empty({w.N, w.K}, packed.options().dtype(dtype));
  launch({w, to_dtype(dtype, "dtype"), out.data_ptr()});
  return out;
}

at::Tensor quant_matmul_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                             const std::optional<at::Tensor>& zeros, const std::string& format,
                             int64_t group_size, const std::optional<at::Tensor>& bias,
                             std::optional<at::ScalarType> compute_dtype, bool half_compute,
                             const std::function<void(const QuantMatmulParams&)>& launch) {
  const at::Tensor pk = aligned16(packed);
  const QuantWeight w = quant_weight(pk, scales, zeros, format, group_size);
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf,
                   "x must be float32, bfloat16 or float16, got ", t);
  const DType compute = compute_of(t, compute_dtype, half_compute);
  TORCH_CHECK(x.device() == packed.device(), "x must be on packed's device ", packed.device(), ", got ",
              x.device());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.K, "x must be [..., in_features=", w.K, "], got shape ",
                    x.sizes());
  if (bias) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w.N, "bias must be [out_features=", w.N,
                      "], got shape ", bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == t, "bias must have x's dtype ", t, ", got ", bias->scalar_type());
    TORCH_CHECK(bias->device() == x.device(), "bias must be on x's device");
  }
  const at::Tensor x2 = aligned16(x.reshape({-1, w.K}).contiguous());
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = w.N;
  at::Tensor out = at::empty(shape, x.options());
  launch({w, x2.size(0), to_dtype(t, "x"), compute, x2.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
          out.data_ptr()});
  return out;
}

at::Tensor quant_matmul_int8_impl(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& packed,
                                  const at::Tensor& scales, const std::optional<at::Tensor>& bias,
                                  const std::function<void(const QuantMatmulInt8Params&)>& launch) {
  const at::Tensor pk = aligned16(packed);
  const QuantWeight w = quant_weight(pk, scales, std::nullopt, "ternary", 0);
  TORCH_CHECK_TYPE(x.scalar_type() == at::kChar, "x must be int8, got ", x.scalar_type());
  TORCH_CHECK(x.device() == packed.device(), "x must be on packed's device ", packed.device(), ", got ",
              x.device());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.K, "x must be [..., in_features=", w.K, "], got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(w.K < (int64_t(1) << 24) / 127, "in_features must be below ", (int64_t(1) << 24) / 127,
                    " for exact int32 sums, got ", w.K);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.pop_back();
  TORCH_CHECK_TYPE(x_scale.scalar_type() == at::kFloat, "x_scale must be float32, got ",
                   x_scale.scalar_type());
  TORCH_CHECK_VALUE(x_scale.sizes() == at::IntArrayRef(shape),
                    "x_scale must be x's shape without the last dim ", at::IntArrayRef(shape), ", got ",
                    x_scale.sizes());
  TORCH_CHECK(x_scale.device() == x.device(), "x_scale must be on x's device");
  if (bias) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w.N, "bias must be [out_features=", w.N,
                      "], got shape ", bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat, "bias must be float32, got ", bias->scalar_type());
    TORCH_CHECK(bias->device() == x.device(), "bias must be on x's device");
  }
  const at::Tensor x2 = aligned16(x.reshape({-1, w.K}).contiguous()), s = x_scale.reshape({-1}).contiguous();
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  shape.push_back(w.N);
  at::Tensor out = at::empty(shape, x.options().dtype(at::kFloat));
  launch({w, x2.size(0), x2.data_ptr<int8_t>(), s.data_ptr<float>(),
          b.defined() ? b.data_ptr<float>() : nullptr, out.data_ptr<float>()});
  return out;
}

namespace {

at::Tensor dequantize_weight_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                 const std::optional<at::Tensor>& zeros, const std::string& format,
                                 int64_t group_size, at::ScalarType dtype) {
  return dequantize_weight_impl(packed, scales, zeros, format, group_size, dtype, dequantize_cpu);
}

at::Tensor quant_matmul_cpu_op(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                               const std::optional<at::Tensor>& zeros, const std::string& format,
                               int64_t group_size, const std::optional<at::Tensor>& bias,
                               std::optional<at::ScalarType> compute_dtype) {
  return quant_matmul_impl(x, packed, scales, zeros, format, group_size, bias, compute_dtype,
                           /*half_compute=*/false, quant_matmul_cpu);
}

at::Tensor quant_matmul_int8_cpu_op(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& packed,
                                    const at::Tensor& scales, const std::optional<at::Tensor>& bias) {
  return quant_matmul_int8_impl(x, x_scale, packed, scales, bias, quant_matmul_int8_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("quantize_weight", quantize_weight_cpu);
  m.impl("pack_codes", pack_codes_cpu_op);
  m.impl("unpack_codes", unpack_codes_cpu_op);
  m.impl("dequantize_weight", dequantize_weight_cpu);
  m.impl("quant_matmul", quant_matmul_cpu_op);
  m.impl("quant_matmul_int8", quant_matmul_int8_cpu_op);
}

}  // namespace pygen
