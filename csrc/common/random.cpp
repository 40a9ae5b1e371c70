#include "csrc/common/random.h"

#include "csrc/common/cpu_isa.h"
#include "csrc/common/parallel_for.h"
#include "csrc/common/philox.h"

namespace pygen {

PYGEN_DECLARE_CPU_KERNEL(void fill_random(const RandomFillParams& p))

void fill_random_cpu(const RandomFillParams& p) { PYGEN_CPU_DISPATCH(fill_random, p); }

void philox4x32_10_cpu(const PhiloxParams& p) {
  parallel_for(0, p.n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint32_t* c = p.counter + 4 * i;
      const Philox4x32 r = philox4x32_10({{c[0], c[1], c[2], c[3]}}, p.key[2 * i], p.key[2 * i + 1]);
      for (int j = 0; j < 4; ++j) p.out[4 * i + j] = r.v[j];
    }
  });
}

}  // namespace pygen
