// Marks functions that run on the host and on CUDA devices. csrc/ and cuda/ share
// their numerics through headers built on this macro, so the CPU tests cover the
// arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define PYGEN_HD __host__ __device__ __forceinline__
#else
// Always inlined on the host too: CPU kernels are compiled once per ISA, and an
// out-of-line copy would be one symbol the linker picks from any of them (the scalar
// one, calling libm's fmaf, inside an AVX-512 loop).
#define PYGEN_HD inline __attribute__((always_inline))
#endif
