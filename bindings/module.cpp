// The Python module pygen._C. Loading it registers every op (TORCH_LIBRARY in ops.cpp
// and the per-family files). The module reports how it was built, plugs torch's
// thread pool into csrc's parallel_for, holds the debug-checks switch, and each
// family's eager entry points: the ops' dispatcher calls without torch.ops' Python-side
// overhead.
#include <ATen/Parallel.h>
#include <torch/python.h>

#include <atomic>

#include "bindings/checks.h"
#include "bindings/sampling.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/parallel_for.h"

namespace py = pybind11;

namespace pygen {
void bind_random(py::module_& m);
void bind_flows(py::module_& m);

namespace {
std::atomic<bool> g_debug_checks{false};
std::atomic<int64_t> g_categorical_split{0};
}  // namespace

bool debug_checks() { return g_debug_checks.load(std::memory_order_relaxed); }
void set_debug_checks(bool enabled) { g_debug_checks.store(enabled, std::memory_order_relaxed); }
int64_t categorical_split_override() { return g_categorical_split.load(std::memory_order_relaxed); }
void set_categorical_split_override(int64_t blocks) {
  TORCH_CHECK_VALUE(blocks >= 0, "blocks must be >= 0, got ", blocks);
  g_categorical_split.store(blocks, std::memory_order_relaxed);
}

}  // namespace pygen

namespace {

void at_parallel_backend(int64_t begin, int64_t end, int64_t grain, pygen::ParallelBody body, void* ctx) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(ctx, b, e); });
}

py::dict build_info() {
  py::dict info;
  info["version"] = PYGEN_VERSION;
#ifdef PYGEN_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = PYGEN_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_archs"] = "";
#endif
  info["cpu_isa"] = pygen::cpu_isa_name(pygen::cpu_isa());
  info["cpu_isa_detected"] = pygen::cpu_isa_name(pygen::cpu_isa_detected());
  info["parallel"] = at::get_parallel_info();
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  pygen::set_parallel_backend(&at_parallel_backend, [] { return at::get_num_threads(); });
  m.def("build_info", &build_info, "How this extension was built and which CPU path it runs.");
  m.def("set_debug_checks", &pygen::set_debug_checks,
        "Turns on or off the ops' checks that synchronize with a GPU (pygen.set_debug_checks).");
  m.def("debug_checks", &pygen::debug_checks, "Whether pygen.set_debug_checks is on.");
  m.def("_categorical_split", &pygen::categorical_split_override,
        "The forced blocks per row of sample_categorical's CUDA kernel (a test knob; 0: chosen).");
  m.def("_set_categorical_split", &pygen::set_categorical_split_override,
        "Forces sample_categorical's CUDA blocks per row (pygen.ops.sampling._cuda_split).");
  pygen::bind_random(m);
  pygen::bind_flows(m);
}
