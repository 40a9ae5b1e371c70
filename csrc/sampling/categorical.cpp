#include "csrc/sampling/categorical.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

namespace cpu_scalar {
void sample_categorical(const CategoricalParams& p);
}
namespace cpu_avx2 {
void sample_categorical(const CategoricalParams& p);
}
namespace cpu_avx512 {
void sample_categorical(const CategoricalParams& p);
}

void sample_categorical_cpu(const CategoricalParams& p) { PYGEN_CPU_DISPATCH(sample_categorical, p); }

}  // namespace pygen
