#include "csrc/common/parallel_for.h"

#include <atomic>

namespace pygen {

static std::atomic<ParallelBackend> g_backend{nullptr};

void set_parallel_backend(ParallelBackend backend) { g_backend.store(backend); }

void parallel_for_erased(int64_t begin, int64_t end, int64_t grain, ParallelBody body, void* ctx) {
  if (begin >= end) return;
  const ParallelBackend backend = g_backend.load();
  if (backend == nullptr || end - begin <= grain) {
    body(ctx, begin, end);
    return;
  }
  backend(begin, end, grain, body, ctx);
}

}  // namespace pygen
