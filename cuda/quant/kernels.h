// The quant kernels' launchers inside cuda/quant/, behind the public ones of matmul.h.
#pragma once

#include <cuda_runtime.h>

#include "csrc/quant/quant.h"
#include "cuda/quant/common.cuh"

namespace pygen {
namespace quant_cuda {

// M <= kGemvMaxRows.
void launch_gemv(const QuantMatmulParams& p, cudaStream_t stream);
void launch_gemv_int8(const QuantMatmulInt8Params& p, cudaStream_t stream);

// Tiled schedules; with plan.splits > 1 they write partial sums [splits, M, N] to
// `partials` (float32; int32 for int8) instead of the output.
void launch_gemm_mma(const QuantMatmulParams& p, const SplitPlan& plan, float* partials, cudaStream_t stream);
void launch_gemm_simt_f32(const QuantMatmulParams& p, const SplitPlan& plan, float* partials,
                          cudaStream_t stream);
void launch_gemm_simt_int8(const QuantMatmulInt8Params& p, const SplitPlan& plan, int32_t* partials,
                           cudaStream_t stream);

}  // namespace quant_cuda
}  // namespace pygen
