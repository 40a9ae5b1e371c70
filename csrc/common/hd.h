// Marks functions that run on the host and on CUDA devices. csrc/ and cuda/ share
// their numerics through headers built on this macro, so the CPU tests cover the
// arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define PYGEN_HD __host__ __device__ __forceinline__
#else
#define PYGEN_HD inline
#endif
