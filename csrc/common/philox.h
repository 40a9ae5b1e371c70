// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011). Counter based: block n of a stream is a pure function of
// (key, counter), so any thread on any device can produce any block.
#pragma once

#include <cstdint>

#include "csrc/common/hd.h"

namespace pygen {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

PYGEN_HD Philox4x32 round(const Philox4x32& c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = uint64_t(kMul0) * c.v[0];
  const uint64_t p1 = uint64_t(kMul1) * c.v[2];
  return {{uint32_t(p1 >> 32) ^ c.v[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c.v[3] ^ k1, uint32_t(p0)}};
}
}  // namespace philox_detail

// The raw generator: ten rounds, the key bumped by the Weyl constants between rounds.
PYGEN_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    ctr = round(ctr, k0, k1);
  }
  return ctr;
}

// The stream layout every pygen random op uses: the 64-bit seed is the key, block n of
// the stream is counter (n, 0) read as two 64-bit halves. `offset` in the ops counts
// blocks, so a caller that used `b` blocks continues with offset + b.
PYGEN_HD Philox4x32 philox_block(uint64_t seed, uint64_t n) {
  return philox4x32_10({{uint32_t(n), uint32_t(n >> 32), 0u, 0u}}, uint32_t(seed), uint32_t(seed >> 32));
}

}  // namespace pygen
