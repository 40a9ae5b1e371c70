#include "csrc/flows/affine_coupling.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void affine_coupling(const AffineCouplingParams& p))
PYGEN_DECLARE_CPU_KERNEL(void affine_coupling_backward(const AffineCouplingBackwardParams& p))

void affine_coupling_cpu(const AffineCouplingParams& p) { PYGEN_CPU_DISPATCH(affine_coupling, p); }

void affine_coupling_backward_cpu(const AffineCouplingBackwardParams& p) {
  PYGEN_CPU_DISPATCH(affine_coupling_backward, p);
}

}  // namespace pygen
