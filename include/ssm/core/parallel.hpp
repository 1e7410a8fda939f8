#pragma once
/// \file parallel.hpp
/// OpenMP parallel regions that neither allocate nor let an exception escape.
///
/// An exception leaving an OpenMP structured block calls std::terminate, and the most likely one is
/// std::bad_alloc from scratch allocated inside the region. So the library's regions follow one pattern:
///
///     const int team = detail::team_size(H > 1 && work > threshold, H);   // 1 without OpenMP
///     detail::PerThread<Scratch> scratch(team, [&] { return Scratch(sizes...); });  // allocates here
///     detail::RegionErrors errors;
///     #pragma omp parallel num_threads(team) if (team > 1)
///     {
///       Scratch& s = scratch.local();                     // slot omp_get_thread_num(), no allocation
///       #pragma omp for schedule(static)
///       for (Index h = 0; h < H; ++h) errors.run([&] { work(h, s); });
///     }
///     errors.rethrow();                                   // the first exception, on the calling thread
///
/// `num_threads(team)` bounds the team by the number of slots, so `local()` is always in range.
/// `RegionErrors::run` catches whatever the body throws (for instance an Eigen product that allocates
/// its blocking workspace on the heap), skips the remaining iterations and rethrows after the region.

#include "ssm/core/types.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ssm::detail {

/// Threads a parallel region started here would get: 1 without OpenMP, or when nested inside an
/// active region beyond the allowed nesting depth; otherwise omp_get_max_threads().
inline int available_threads() noexcept {
#if defined(_OPENMP)
  if (omp_in_parallel() && omp_get_active_level() >= omp_get_max_active_levels()) return 1;
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

/// The team size for a region over `items` independent work items: 1 when `parallel` is false,
/// else min(available_threads(), items) (at least 1). Use it both for the scratch and `num_threads`.
inline int team_size(bool parallel, Index items) noexcept {
  if (!parallel || items <= 1) return 1;
  return int(std::min<Index>(available_threads(), items));
}

/// Index of the calling thread in the innermost team (0 outside a region or without OpenMP).
inline int thread_index() noexcept {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// One `Scratch` per thread of a team, all constructed before the region (where allocation may throw
/// safely). Inside a region started with `num_threads(threads())`, `local()` is the calling thread's.
template <class Scratch>
class PerThread {
 public:
  /// `threads` >= 1 slots, each `make()` (called `threads` times, on the calling thread).
  template <class Make>
  PerThread(int threads, Make&& make) {
    slots_.reserve(std::size_t(std::max(1, threads)));
    for (int i = 0; i < std::max(1, threads); ++i) slots_.push_back(make());
  }
  /// Number of slots: the team size to request.
  int threads() const noexcept { return int(slots_.size()); }
  /// The calling thread's slot.
  Scratch& local() noexcept { return slots_[std::size_t(thread_index())]; }
  Scratch& operator[](int i) noexcept { return slots_[std::size_t(i)]; }

 private:
  std::vector<Scratch> slots_;
};

/// Carries the first exception thrown by a region's work out of it (see the file comment).
class RegionErrors {
 public:
  /// Runs `body()` unless a previous body failed; catches anything it throws. Never throws.
  template <class Body>
  void run(Body&& body) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      std::forward<Body>(body)();
    } catch (...) {
      if (!failed_.exchange(true)) first_ = std::current_exception();  // one thread only writes first_
    }
  }
  /// Whether a body has thrown.
  bool failed() const noexcept { return failed_.load(); }
  /// After the region (whose end is a barrier): rethrows the first exception, if any.
  void rethrow() {
    if (failed_.load() && first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr first_;
};

}  // namespace ssm::detail
