#include "csrc/sampling/masked_diffusion.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void unmask_ancestral(const AncestralParams& p))
PYGEN_DECLARE_CPU_KERNEL(void unmask_by_confidence(const ConfidenceParams& p))
PYGEN_DECLARE_CPU_KERNEL(void unmask_first_hitting(const MaskedStepParams& p))

void unmask_ancestral_cpu(const AncestralParams& p) { PYGEN_CPU_DISPATCH(unmask_ancestral, p); }
void unmask_by_confidence_cpu(const ConfidenceParams& p) { PYGEN_CPU_DISPATCH(unmask_by_confidence, p); }
void unmask_first_hitting_cpu(const MaskedStepParams& p) { PYGEN_CPU_DISPATCH(unmask_first_hitting, p); }

}  // namespace pygen
