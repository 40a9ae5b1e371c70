// Run-time choice of the CPU SIMD path. Kernel translation units are compiled once per
// ISA (see CMakeLists.txt) into namespaces pygen::cpu_scalar / cpu_avx2 / cpu_avx512,
// and callers pick one with PYGEN_CPU_DISPATCH.
#pragma once

namespace pygen {

enum class CpuIsa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Best ISA this CPU and OS support, lowered by the environment variable
// PYGEN_CPU_ISA=scalar|avx2|avx512 when set (never raised above what the CPU has).
// Read once, at first use.
CpuIsa cpu_isa();
CpuIsa cpu_isa_detected();
const char* cpu_isa_name(CpuIsa isa);

}  // namespace pygen

// Declares a kernel in the three per-ISA namespaces, for PYGEN_CPU_DISPATCH; use it
// inside namespace pygen: PYGEN_DECLARE_CPU_KERNEL(void fill(const Params& p)).
#define PYGEN_DECLARE_CPU_KERNEL(SIGNATURE) \
  namespace cpu_scalar {                    \
  SIGNATURE;                                \
  }                                         \
  namespace cpu_avx2 {                      \
  SIGNATURE;                                \
  }                                         \
  namespace cpu_avx512 {                    \
  SIGNATURE;                                \
  }

// Calls FN(args...) from the namespace of the ISA chosen at run time.
#define PYGEN_CPU_DISPATCH(FN, ...)           \
  do {                                        \
    switch (::pygen::cpu_isa()) {             \
      case ::pygen::CpuIsa::kAvx512:          \
        ::pygen::cpu_avx512::FN(__VA_ARGS__); \
        break;                                \
      case ::pygen::CpuIsa::kAvx2:            \
        ::pygen::cpu_avx2::FN(__VA_ARGS__);   \
        break;                                \
      default:                                \
        ::pygen::cpu_scalar::FN(__VA_ARGS__); \
    }                                         \
  } while (0)
