#include "csrc/solvers/solver_update.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void solver_update(const SolverUpdateParams& p))

void solver_update_cpu(const SolverUpdateParams& p) { PYGEN_CPU_DISPATCH(solver_update, p); }

}  // namespace pygen
