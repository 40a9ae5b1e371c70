#include "csrc/sampling/categorical.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void sample_categorical(const CategoricalParams& p))

void sample_categorical_cpu(const CategoricalParams& p) { PYGEN_CPU_DISPATCH(sample_categorical, p); }

}  // namespace pygen
