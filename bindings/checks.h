// Input checks shared by the bindings: each failure names the argument and what was
// expected, and surfaces in Python as a RuntimeError/ValueError/TypeError.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "csrc/common/dtype.h"

namespace pygen {

// pygen.set_debug_checks: whether checks that read a GPU value back to the host (and so
// wait for the GPU) run. They always run on the CPU, where they cost nothing. Defined in
// module.cpp.
bool debug_checks();
void set_debug_checks(bool enabled);

inline DType to_dtype(at::ScalarType t, const char* arg) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, arg, " must be float32, float64, float16 or bfloat16, got ", t);
  }
}

inline void check_device_compiled(const at::Device& device, const char* arg) {
  TORCH_CHECK(device.is_cpu() || device.is_cuda() || device.is_meta(), arg,
              " must be a cpu, cuda or meta device, got ", device);
#ifndef PYGEN_WITH_CUDA
  TORCH_CHECK(!device.is_cuda(), arg, " is ", device,
              " but this pygen build has no CUDA kernels (see pygen.info()['devices'])");
#endif
}

inline void check_sizes(c10::SymIntArrayRef size, const char* arg) {
  for (size_t i = 0; i < size.size(); ++i)
    TORCH_CHECK_VALUE(size[i] >= 0, arg, " must be non-negative, got ", size[i], " at dim ", i);
}

}  // namespace pygen
