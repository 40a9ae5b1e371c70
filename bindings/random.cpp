// CPU implementations of the random ops, and the BackendSelect kernel that routes the
// factory ops (no tensor inputs) to the backend named by their `device` argument.
#include "bindings/random.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/python.h>

#include "bindings/checks.h"
#include "csrc/common/random.h"

namespace pygen {

RandomFillParams random_fill_params(const at::Tensor& out, int64_t seed, int64_t offset, Distribution dist) {
  return {out.data_ptr(),
          out.numel(),
          uint64_t(seed),
          uint64_t(offset),
          to_dtype(out.scalar_type(), "dtype"),
          dist};
}

at::Tensor random_empty(c10::SymIntArrayRef size, int64_t offset, at::ScalarType dtype, at::Device device) {
  check_sizes(size, "size");
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  to_dtype(dtype, "dtype");
  return at::empty(C10_AS_INTARRAYREF_SLOW(size), at::TensorOptions().dtype(dtype).device(device));
}

PhiloxCall philox_call(const at::Tensor& counter, const at::Tensor& key) {
  TORCH_CHECK_TYPE(counter.scalar_type() == at::kInt, "counter must be int32 (uint32 bit patterns), got ",
                   counter.scalar_type());
  TORCH_CHECK_TYPE(key.scalar_type() == at::kInt, "key must be int32 (uint32 bit patterns), got ",
                   key.scalar_type());
  TORCH_CHECK_VALUE(counter.dim() >= 1 && counter.size(-1) == 4, "counter must have shape [..., 4], got ",
                    counter.sizes());
  TORCH_CHECK_VALUE(key.dim() >= 1 && key.size(-1) == 2, "key must have shape [..., 2], got ", key.sizes());
  TORCH_CHECK_VALUE(counter.sizes().slice(0, counter.dim() - 1) == key.sizes().slice(0, key.dim() - 1),
                    "counter [..., 4] and key [..., 2] must have the same leading shape, got ",
                    counter.sizes(), " and ", key.sizes());
  TORCH_CHECK(counter.device() == key.device(), "counter and key must be on the same device, got ",
              counter.device(), " and ", key.device());
  PhiloxCall call{
      counter.contiguous(), key.contiguous(), at::empty_like(counter, at::MemoryFormat::Contiguous), {}};
  call.params = {reinterpret_cast<const uint32_t*>(call.counter.data_ptr<int32_t>()),
                 reinterpret_cast<const uint32_t*>(call.key.data_ptr<int32_t>()),
                 reinterpret_cast<uint32_t*>(call.out.data_ptr<int32_t>()), call.counter.numel() / 4};
  return call;
}

namespace {

void fill_cpu(const at::Tensor&, const RandomFillParams& p) { fill_random_cpu(p); }

at::Tensor philox4x32_10_cpu_op(const at::Tensor& counter, const at::Tensor& key) {
  const PhiloxCall call = philox_call(counter, key);
  philox4x32_10_cpu(call.params);
  return call.out;
}

using FactoryFn = at::Tensor(c10::SymIntArrayRef, int64_t, int64_t, at::ScalarType, at::Device);

// Factory ops have no tensor argument for the dispatcher to read a backend from, so
// this kernel picks it from `device`, as ATen's generated BackendSelect kernels do.
template <const char* kName>
at::Tensor backend_select(c10::SymIntArrayRef size, int64_t seed, int64_t offset, at::ScalarType dtype,
                          at::Device device) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<FactoryFn>();
  check_device_compiled(device, "device");
  const c10::DispatchKeySet ks(c10::computeDispatchKey(dtype, at::kStrided, device));
  return op.redispatch(ks, size, seed, offset, dtype, device);
}

constexpr char kRand[] = "pygen::rand";
constexpr char kRandn[] = "pygen::randn";

// The same dispatcher call as torch.ops.pygen.<op>, without the ~3 us that torch.ops
// spends boxing arguments in Python; it dominates small shapes.
template <const char* kName>
at::Tensor eager_factory(const std::vector<int64_t>& size, int64_t seed, int64_t offset, at::ScalarType dtype,
                         at::Device device) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<FactoryFn>();
  return op.call(c10::fromIntArrayRefSlow(size), seed, offset, dtype, device);
}

}  // namespace

void bind_random(pybind11::module_& m) {
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("rand", &eager_factory<kRand>, no_gil, "Eager pygen::rand (pygen.ops.rand calls it).");
  m.def("randn", &eager_factory<kRandn>, no_gil, "Eager pygen::randn (pygen.ops.randn calls it).");
}

TORCH_LIBRARY_IMPL(pygen, BackendSelect, m) {
  m.impl("rand", backend_select<kRand>);
  m.impl("randn", backend_select<kRandn>);
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("rand", random_factory<Distribution::kUniform, fill_cpu>);
  m.impl("randn", random_factory<Distribution::kNormal, fill_cpu>);
  m.impl("philox4x32_10", philox4x32_10_cpu_op);
}

}  // namespace pygen
