#include "csrc/flows/mix_logistic.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void mix_logistic_cdf(const MixLogisticParams& p))
PYGEN_DECLARE_CPU_KERNEL(void mix_logistic_cdf_backward(const MixLogisticBackwardParams& p))

void mix_logistic_cdf_cpu(const MixLogisticParams& p) { PYGEN_CPU_DISPATCH(mix_logistic_cdf, p); }

void mix_logistic_cdf_backward_cpu(const MixLogisticBackwardParams& p) {
  PYGEN_CPU_DISPATCH(mix_logistic_cdf_backward, p);
}

}  // namespace pygen
