#include "csrc/flows/rq_spline.h"

#include "csrc/common/cpu_isa.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void rq_spline(const RqSplineParams& p))
PYGEN_DECLARE_CPU_KERNEL(void rq_spline_backward(const RqSplineBackwardParams& p))
PYGEN_DECLARE_CPU_KERNEL(void rq_spline_coupling(const RqCouplingParams& p))
PYGEN_DECLARE_CPU_KERNEL(void rq_spline_coupling_backward(const RqCouplingBackwardParams& p))

void rq_spline_cpu(const RqSplineParams& p) { PYGEN_CPU_DISPATCH(rq_spline, p); }
void rq_spline_backward_cpu(const RqSplineBackwardParams& p) { PYGEN_CPU_DISPATCH(rq_spline_backward, p); }
void rq_spline_coupling_cpu(const RqCouplingParams& p) { PYGEN_CPU_DISPATCH(rq_spline_coupling, p); }
void rq_spline_coupling_backward_cpu(const RqCouplingBackwardParams& p) {
  PYGEN_CPU_DISPATCH(rq_spline_coupling_backward, p);
}

}  // namespace pygen
