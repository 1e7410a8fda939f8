#pragma once
// Helpers shared by the benchmark executables: OpenMP thread control and seeded inputs.

#include <benchmark/benchmark.h>

#include "ssm/core/types.hpp"

#include <random>
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

}  // namespace ssm::bench
