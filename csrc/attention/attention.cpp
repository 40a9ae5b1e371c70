#include "csrc/attention/attention.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void attention_forward(const AttentionForwardParams& p))
PYGEN_DECLARE_CPU_KERNEL(void attention_backward(const AttentionBackwardParams& p))

void attention_forward_cpu(const AttentionForwardParams& p) { PYGEN_CPU_DISPATCH(attention_forward, p); }
void attention_backward_cpu(const AttentionBackwardParams& p) { PYGEN_CPU_DISPATCH(attention_backward, p); }

}  // namespace pygen
