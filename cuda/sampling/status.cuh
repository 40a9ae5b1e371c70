// Device-side reporting of a bad row, for the sampling ops run without debug checks
// (pygen.set_debug_checks): the op then never reads the status back to the host, so a
// bad row ends the kernel with an assertion instead. Like torch's device-side asserts,
// this leaves the CUDA context unusable: the next synchronizing call raises
// "device-side assert triggered", and the message below is on stderr.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

// glibc's assertion handler, which CUDA also provides in device code. Declared as torch
// declares it (c10's CUDA_KERNEL_ASSERT), since <assert.h> leaves it out under NDEBUG:
// exactly as glibc does, so both declarations can meet.
extern "C" {
#if defined(__CUDA_ARCH__)
__host__ __device__
#endif
    void __assert_fail(const char* assertion, const char* file, unsigned int line,
                       const char* function) noexcept __attribute__((__noreturn__));
}

namespace pygen {

// Prints "pygen.ops.<op>: <cause> (row r[, position l])" and fails an assertion. Called
// by one thread of the block that found the row bad. `position` < 0: a row-level op.
inline __device__ __noinline__ void fail_row(const char* op, const char* cause, int64_t row,
                                             int64_t position) {
  if (position < 0)
    printf("pygen.ops.%s: %s (row %lld)\n", op, cause, (long long)row);
  else
    printf("pygen.ops.%s: %s (row %lld, position %lld)\n", op, cause, (long long)row, (long long)position);
  // __assert_fail rather than assert, which NDEBUG (release builds) turns off.
  __assert_fail("input rejected, see the pygen.ops message above; pygen.set_debug_checks(True) raises it",
                __FILE__, __LINE__, __func__);
}

}  // namespace pygen
