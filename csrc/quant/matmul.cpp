#include "csrc/common/cpu_isa.h"
#include "csrc/quant/quant.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void quant_matmul(const QuantMatmulParams& p))
PYGEN_DECLARE_CPU_KERNEL(void quant_matmul_int8(const QuantMatmulInt8Params& p))

void quant_matmul_cpu(const QuantMatmulParams& p) { PYGEN_CPU_DISPATCH(quant_matmul, p); }
void quant_matmul_int8_cpu(const QuantMatmulInt8Params& p) { PYGEN_CPU_DISPATCH(quant_matmul_int8, p); }

}  // namespace pygen
