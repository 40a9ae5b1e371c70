// Params and CPU entry point of solver_update, the fused step of every ODE/SDE solver in
// pygen.solvers: one read of each input and one write of each output per element.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"

namespace pygen {

// Columns of the per-sample coefficient table coef [batch, kSolverCoefHistory + n]
// (float64, computed on the host before the sampling loop):
//   g    = out                      without uncond
//        = uncond + w (out - uncond) with uncond (classifier-free guidance)
//   pred = cx x + co g              (the model output converted to the solver's
//                                    parameterization: x0, eps, velocity ...)
//   y    = a x + bp pred + sum_j bh_j hist_j + c noise
// hist_j are any tensors of x's shape (earlier predictions or states); noise is the standard normal stream
// (seed, offset), value i from Philox block offset + i / 4 (float64: i / 2), as pygen.ops.randn.
enum SolverCoef : int { kCoefW, kCoefCx, kCoefCo, kCoefA, kCoefBp, kCoefC, kSolverCoefHistory };

constexpr int kSolverMaxHistory = 8;

struct SolverUpdateParams {
  DType dtype;
  int64_t batch;
  int64_t numel;  // per sample
  const void* x;
  const void* out;     // null: no prediction (pred is not written, bp ignored)
  const void* uncond;  // null: no guidance
  const void* hist[kSolverMaxHistory];
  int n_hist;
  const double* coef;  // [batch, kSolverCoefHistory + n_hist]
  // Dynamic thresholding (Imagen): with thresh non-null, pred is read from `out` as is
  // (cx, co and guidance ignored), clamped to [-s, s] and divided by s, s = thresh[b].
  const double* thresh;
  bool noise;
  uint64_t seed;
  uint64_t offset;
  void* pred;  // written when out is given and pred is non-null
  void* y;     // written when non-null
};

void solver_update_cpu(const SolverUpdateParams& p);

}  // namespace pygen
