#pragma once
// Helpers shared by the benchmark executables: OpenMP thread control, seeded inputs, and the rotation of
// distinct blocks behind the cold-weight step benchmarks (BlockStack).
//
// With SSM_BENCH_COUNT_ALLOCATIONS defined before this header is included, it also replaces malloc with
// a counting wrapper (allocation_count) and provides step_blocks, the step benchmark loop, which reports
// heap allocations per step. A replaced malloc must be defined once per executable: every bench_*.cpp is
// its own one-file executable, so defining the macro in the bench_*.cpp that includes this header is
// right; it must never be defined in a header or in a second file of one program.

#include <benchmark/benchmark.h>

#include "ssm/core/types.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ssm::bench {

/// Sets the OpenMP thread count for one benchmark run and restores it afterwards; without OpenMP a
/// multi-threaded run is skipped with an error, since it would only repeat the one-thread figure.
class ThreadScope {
 public:
  ThreadScope(benchmark::State& state, int threads) {
#if defined(_OPENMP)
    previous_ = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    if (threads > 1) {
      state.SkipWithError("built without OpenMP");
      ok_ = false;
    }
#endif
    state.counters["threads"] = threads;
  }
  ~ThreadScope() {
#if defined(_OPENMP)
    omp_set_num_threads(previous_);
#endif
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
  bool ok() const { return ok_; }

 private:
  int previous_ = 1;
  bool ok_ = true;
};

/// An L x H sequence of standard normal values from `seed`.
template <class T>
ssm::Sequence<T> random_sequence(ssm::Index L, ssm::Index H, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<T> normal;
  ssm::Sequence<T> m(L, H);
  for (ssm::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
  return m;
}

/// The size of the largest cache the benchmark library reports (0 if none).
inline std::int64_t last_level_cache_bytes() {
  std::int64_t best = 0;
  for (const auto& c : benchmark::CPUInfo::Get().caches) best = std::max<std::int64_t>(best, c.size);
  return best;
}

/// Bytes of a block's stream state: the convolution window and the SSM state (the step scratch excluded).
/// Works for any State with `conv` and `ssm` matrices (Mamba, Mamba2).
template <class State>
std::int64_t state_bytes(const State& s) {
  using Scalar = typename decltype(s.ssm)::Scalar;
  return std::int64_t(s.conv.size() + s.ssm.size()) * std::int64_t(sizeof(Scalar));
}

/// A rotation of distinct blocks of one layer type (Mamba<T>, Mamba2<T>, ...), each with its own stream
/// state, for the step benchmarks. A model reads every block's weights once per token and its blocks
/// together do not fit in cache; one block stepped over and over keeps its weights in the last-level cache
/// and measures the cache instead. A cold stack therefore holds enough blocks that their weights and
/// states exceed 4x the last-level cache (taken as at least 32 MiB; 2 to 64 blocks); a hot stack holds
/// one block.
///
/// Layer needs `Scalar`, `State`, `initial_state()`, `channels()` and `step(u, state, y)`. Building many
/// blocks is slow and Google Benchmark calls a benchmark function several times, so a stack is built once
/// per (sizes, cold) and kept for the life of the process: `get` takes the benchmark's sizes as the key,
/// `make(seed)` builds the block drawn from `seed` (seeds 1, 2, ...: the hot block is the cold stack's
/// first) and `count_weight_bytes(block)` counts one block's parameters.
template <class Layer>
struct BlockStack {
  std::vector<std::unique_ptr<const Layer>> blocks;  ///< Separate allocations, so separate memory.
  std::vector<typename Layer::State> states;         ///< states[k] is block k's stream.
  std::int64_t weight_bytes = 0;                     ///< One block's parameters.
  std::int64_t state_bytes = 0;                      ///< One block's stream state (ssm::bench::state_bytes).

  static BlockStack& get(const std::vector<ssm::Index>& sizes, bool cold,
                         const std::function<Layer(std::uint64_t seed)>& make,
                         const std::function<std::int64_t(const Layer&)>& count_weight_bytes) {
    static std::map<std::pair<std::vector<ssm::Index>, bool>, std::unique_ptr<BlockStack>> cache;
    auto& slot = cache[{sizes, cold}];
    if (!slot) {
      slot = std::make_unique<BlockStack>();
      slot->add(make(1));
      slot->weight_bytes = count_weight_bytes(*slot->blocks.front());
      slot->state_bytes = ssm::bench::state_bytes(slot->states.front());
      if (cold) {
        const std::int64_t footprint = slot->weight_bytes + slot->state_bytes;
        const std::int64_t llc = std::max<std::int64_t>(last_level_cache_bytes(), 32 << 20);
        const std::int64_t count = std::clamp<std::int64_t>((4 * llc + footprint - 1) / footprint, 2, 64);
        for (std::int64_t k = 1; k < count; ++k) slot->add(make(std::uint64_t(k + 1)));
      }
    }
    return *slot;
  }

 private:
  void add(Layer block) {
    blocks.push_back(std::make_unique<const Layer>(std::move(block)));
    states.push_back(blocks.back()->initial_state());
  }
};

}  // namespace ssm::bench

#if defined(SSM_BENCH_COUNT_ALLOCATIONS)
// Counts heap allocations, so that a step's "allocates nothing" is checked where it is timed. Eigen
// allocates with malloc (operator new does too, in libstdc++), so malloc itself is wrapped: glibc's own
// allocator stays underneath (__libc_malloc); free, calloc, realloc and posix_memalign are not counted.
namespace ssm::bench {
inline std::atomic<std::int64_t> g_allocations{0};
/// Heap allocations (malloc calls) since the program started.
inline std::int64_t allocation_count() { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace ssm::bench

extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* malloc(std::size_t size) {
  ssm::bench::g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}

namespace ssm::bench {

/// The step benchmark loop: one thread, one step of one block per iteration, the stack's blocks in turn
/// (each with its own state), the same input token every time. Reports items/s = steps/s, bytes/s =
/// `bytes_per_step` per step, and the counters weight_bytes (one block's parameters), blocks (the
/// rotation's length) and allocations (heap allocations per step).
template <class Layer>
void step_blocks(benchmark::State& state, BlockStack<Layer>& stack, std::int64_t bytes_per_step) {
  using T = typename Layer::Scalar;
  ThreadScope threads(state, 1);
  const ssm::Index d_model = stack.blocks.front()->channels();
  const ssm::VectorX<T> u = random_sequence<T>(d_model, 1, 9);
  ssm::VectorX<T> y(d_model);
  const std::size_t count = stack.blocks.size();
  for (std::size_t k = 0; k < count; ++k) stack.blocks[k]->step(u, stack.states[k], y);  // warm the code paths
  std::size_t k = 0;
  const std::int64_t before = allocation_count();
  for (auto _ : state) {
    stack.blocks[k]->step(u, stack.states[k], y);
    benchmark::DoNotOptimize(y.data());
    if (++k == count) k = 0;
  }
  const std::int64_t allocations = allocation_count() - before;
  state.SetItemsProcessed(std::int64_t(state.iterations()));
  state.SetBytesProcessed(std::int64_t(state.iterations()) * bytes_per_step);
  state.counters["weight_bytes"] = double(stack.weight_bytes);
  state.counters["blocks"] = double(count);
  state.counters["allocations"] = state.iterations() ? double(allocations) / double(state.iterations()) : 0.0;
}

}  // namespace ssm::bench
#endif  // SSM_BENCH_COUNT_ALLOCATIONS
