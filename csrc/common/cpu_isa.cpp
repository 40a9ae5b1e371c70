#include "csrc/common/cpu_isa.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace pygen {

CpuIsa cpu_isa_detected() {
  // libgcc's checks include the OS (XCR0) support for the wider registers.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

static CpuIsa choose_isa() {
  const CpuIsa best = cpu_isa_detected();
  const char* env = std::getenv("PYGEN_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (std::strcmp(env, cpu_isa_name(isa)) == 0) return isa < best ? isa : best;
  }
  throw std::invalid_argument(std::string("PYGEN_CPU_ISA must be scalar, avx2 or avx512, got '") + env + "'");
}

CpuIsa cpu_isa() {
  static const CpuIsa isa = choose_isa();
  return isa;
}

}  // namespace pygen
