// CUDA launchers of the quant ops (sm_80+). Torch-free: the params structs of
// csrc/quant/quant.h, a stream, and for the matmuls a workspace the caller allocates.
//
// quant_matmul picks a schedule by M (rows of x):
//   M <= kGemvMaxRows: GEMV, a warp per two output rows, 16-byte loads of packed rows;
//   larger M, bfloat16 / float16 x, or float32 x with that compute dtype (rounded as
//     it is staged): tiles of W dequantized into shared memory in the compute dtype,
//     mma.sync m16n8k16 tensor cores, float32 accumulators (gemm_mma.cu);
//   larger M, float32 x computed in float32: a SIMT float32 tile (gemm_simt.cu). Not tensor cores: W
//     dequantized to bfloat16 alone has a relative error of 2^-9 per element (8-bit
//     significand), so splitting x into hi + lo bfloat16 halves still misses the 1e-3
//     bound unless W is split too (three products); float16 W overflows for float32
//     scales; the SIMT tile keeps float32 x exactly as accurate as the CPU kernels.
// quant_matmul_int8 (ternary W x int8 x) runs the same GEMV / SIMT schedules with dp4a
// on integer codes: exact int32 sums.
//
// When a tiled schedule has too few tiles to fill the GPU, K is split across blocks:
// each writes float32 (int32 for int8) partial sums to the workspace, and a second
// kernel adds them in a fixed order (deterministic), then the bias.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "csrc/quant/quant.h"

namespace pygen {

constexpr int64_t kGemvMaxRows = 4;

// Workspace bytes quant_matmul_cuda / quant_matmul_int8_cuda need for these params on
// the current device (0 when K is not split).
size_t quant_matmul_cuda_workspace(const QuantMatmulParams& p);
size_t quant_matmul_int8_cuda_workspace(const QuantMatmulInt8Params& p);

// x, packed and the workspace must be 16-byte aligned (the kernels load 16 bytes).
cudaError_t quant_matmul_cuda(const QuantMatmulParams& p, void* workspace, cudaStream_t stream);
cudaError_t quant_matmul_int8_cuda(const QuantMatmulInt8Params& p, void* workspace, cudaStream_t stream);
cudaError_t dequantize_cuda(const DequantizeParams& p, cudaStream_t stream);

}  // namespace pygen
