#include "csrc/common/parallel_for.h"

#include <atomic>

namespace pygen {

static std::atomic<ParallelBackend> g_backend{nullptr};
static std::atomic<ParallelThreads> g_threads{nullptr};

void set_parallel_backend(ParallelBackend backend, ParallelThreads threads) {
  g_backend.store(backend);
  g_threads.store(threads);
}

int parallel_threads() {
  const ParallelThreads threads = g_threads.load();
  return threads ? threads() : 1;
}

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
