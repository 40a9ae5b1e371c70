// The element types kernels see, named without torch.
#pragma once

namespace pygen {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

}  // namespace pygen
