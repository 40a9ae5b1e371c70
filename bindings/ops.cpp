// The table of contents: every pygen op's schema, in one place. Implementations
// register per family and device in bindings/<family>.cpp and <family>_cuda.cpp;
// fake (meta) implementations live beside the Python wrappers in pygen/ops/.
#include <torch/library.h>

TORCH_LIBRARY(pygen, m) {
  // common: counter-based random numbers (Philox4x32-10), pygen/ops/random.py
  m.def("rand(SymInt[] size, int seed, int offset, ScalarType dtype, Device device) -> Tensor");
  m.def("randn(SymInt[] size, int seed, int offset, ScalarType dtype, Device device) -> Tensor");
  m.def("philox4x32_10(Tensor counter, Tensor key) -> Tensor");

  // sampling: exact categorical sampling, pygen/ops/sampling.py
  m.def(
      "sample_categorical(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
      "Tensor seed, int offset) -> (Tensor token, Tensor logprob)");
}
