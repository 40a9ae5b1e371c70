// Parameters and CPU entry points of the random ops (Philox4x32-10 streams).
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"

namespace pygen {

enum class Distribution { kUniform, kNormal };

// Fills `numel` contiguous values of `dtype` at `out` with the stream (seed, offset):
// value i comes from Philox block offset + i / per_block, so the result does not
// depend on threads, tiles or device.
struct RandomFillParams {
  void* out;
  int64_t numel;
  uint64_t seed;
  uint64_t offset;
  DType dtype;
  Distribution dist;
};

// Values each Philox block yields for this dtype: 2 for fp64, 4 otherwise.
PYGEN_HD int values_per_block(DType dtype) { return dtype == DType::kFloat64 ? 2 : 4; }

// Raw generator: out[i] = philox4x32_10(counter[i], key[i]) for n rows; counter and
// out hold 4 words a row, key 2.
struct PhiloxParams {
  const uint32_t* counter;
  const uint32_t* key;
  uint32_t* out;
  int64_t n;
};

void fill_random_cpu(const RandomFillParams& p);
void philox4x32_10_cpu(const PhiloxParams& p);

}  // namespace pygen
