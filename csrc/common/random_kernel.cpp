// CPU fill kernel for the random ops. Compiled once per ISA (PYGEN_CPU_NS names the
// namespace): Philox for a tile of blocks in SIMD lanes, then the transforms, whose
// lane loop the compiler vectorizes.
#include <algorithm>
#include <cstring>

#include "csrc/common/distributions.h"
#include "csrc/common/parallel_for.h"
#include "csrc/common/philox_cpu.h"
#include "csrc/common/random.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

template <class T, template <class> class Dist>
void fill(T* out, int64_t numel, uint64_t seed, uint64_t offset) {
  using D = Dist<T>;
  constexpr int V = D::kPerBlock;
  constexpr int kTile = 16;
  const int64_t nblocks = (numel + V - 1) / V;
  parallel_for(0, nblocks, 4096, [&](int64_t b0, int64_t b1) {
    uint32_t w[4][kTile];  // structure of arrays, so both lane loops vectorize
    T vals[kTile * V];
    for (int64_t b = b0; b < b1; b += kTile) {
      philox_tile(seed, offset + uint64_t(b), w);
      for (int l = 0; l < kTile; ++l) D::apply({{w[0][l], w[1][l], w[2][l], w[3][l]}}, vals + l * V);
      const int64_t first = b * V;
      const int64_t count = std::min<int64_t>(std::min<int64_t>(kTile, b1 - b) * V, numel - first);
      std::memcpy(out + first, vals, size_t(count) * sizeof(T));
    }
  });
}

template <template <class> class Dist>
void fill_dtype(const RandomFillParams& p) {
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    fill<T, Dist>(static_cast<T*>(p.out), p.numel, p.seed, p.offset);
  });
}

}  // namespace

void fill_random(const RandomFillParams& p) {
  if (p.dist == Distribution::kUniform)
    fill_dtype<Uniform>(p);
  else
    fill_dtype<Normal>(p);
}

}  // namespace pygen::PYGEN_CPU_NS
