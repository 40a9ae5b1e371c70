// The one CPU parallel loop. csrc/ stays torch-free, so the thread pool is plugged in
// from above: bindings/ installs a backend that runs at::parallel_for, which follows
// torch.get_num_threads(), and reports that thread count. Without a backend the loop
// runs serially.
#pragma once

#include <cstdint>

namespace pygen {

using ParallelBody = void (*)(void* ctx, int64_t begin, int64_t end);
using ParallelBackend = void (*)(int64_t begin, int64_t end, int64_t grain, ParallelBody body, void* ctx);
using ParallelThreads = int (*)();

void set_parallel_backend(ParallelBackend backend, ParallelThreads threads);
void parallel_for_erased(int64_t begin, int64_t end, int64_t grain, ParallelBody body, void* ctx);

// How many threads parallel_for may run on (1 without a backend), for kernels that pick
// a schedule by how many tasks keep the threads busy.
int parallel_threads();

// Calls f(b, e) on disjoint chunks covering [begin, end), each at least `grain` long
// except the last. Chunks may run on any thread in any order.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  parallel_for_erased(
      begin, end, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); },
      const_cast<F*>(&f));
}

}  // namespace pygen
