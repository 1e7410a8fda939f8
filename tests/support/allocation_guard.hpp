#pragma once
/// \file allocation_guard.hpp
/// Proves that code allocates nothing: global operator new is replaced by a counting one, and Eigen's
/// own heap use is forbidden at run time (EIGEN_RUNTIME_NO_MALLOC) with eigen_assert turned into an
/// exception, so that a forbidden allocation fails the test instead of being compiled out (Release
/// builds drop eigen_assert) or aborting.
///
/// All twelve replaceable allocation functions and their deallocation functions are replaced together:
/// a partial set would pair the library's operator new (ASan's, under sanitizers) with this free().
///
/// Include it in exactly one translation unit per executable: it defines the replacement operator new /
/// delete. Eigen's side (EIGEN_RUNTIME_NO_MALLOC, a throwing eigen_assert) is set for every test file
/// and the shared layer instances alike by eigen_test_config.hpp, which the build force-includes.

#if !defined(EIGEN_RUNTIME_NO_MALLOC)
#error "allocation_guard.hpp: build with tests/support/eigen_test_config.hpp force-included (tests/CMakeLists.txt)"
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // the counting operator new is malloc-based
#endif

#include <cstdlib>
#include <new>
#include <stdexcept>

#include <Eigen/Core>

#include <atomic>
#include <string>

namespace ssm::test::allocation_counter {
inline std::atomic<long> allocations{0};
inline thread_local bool counting = false;

inline void* counted_allocation(std::size_t n) {
  if (counting) ++allocations;
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void* counted_aligned_allocation(std::size_t n, std::align_val_t alignment) {
  if (counting) ++allocations;
  const std::size_t a = static_cast<std::size_t>(alignment);
  void* p = std::aligned_alloc(a, (n + a - 1) / a * a);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void* counted_nothrow(std::size_t n) noexcept {
  if (counting) ++allocations;
  return std::malloc(n ? n : 1);
}
}  // namespace ssm::test::allocation_counter

void* operator new(std::size_t n) { return ssm::test::allocation_counter::counted_allocation(n); }
void* operator new[](std::size_t n) { return ssm::test::allocation_counter::counted_allocation(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return ssm::test::allocation_counter::counted_nothrow(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return ssm::test::allocation_counter::counted_nothrow(n); }
void* operator new(std::size_t n, std::align_val_t a) { return ssm::test::allocation_counter::counted_aligned_allocation(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return ssm::test::allocation_counter::counted_aligned_allocation(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return ssm::test::allocation_counter::counted_aligned_allocation(n, a); } catch (...) { return nullptr; }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return ssm::test::allocation_counter::counted_aligned_allocation(n, a); } catch (...) { return nullptr; }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace ssm::test {

/// Runs `body` with operator new counted and Eigen's heap forbidden on this thread. Returns the
/// number of operator new calls, or -1 with the reason in `why` when Eigen tried to allocate.
template <class F>
long allocations_during(F&& body, std::string& why) {
  const long before = allocation_counter::allocations.load();
  Eigen::internal::set_is_malloc_allowed(false);
  allocation_counter::counting = true;
  long result;
  try {
    body();
    result = allocation_counter::allocations.load() - before;
  } catch (const std::exception& e) {
    why = e.what();
    result = -1;
  }
  allocation_counter::counting = false;
  Eigen::internal::set_is_malloc_allowed(true);
  return result;
}

}  // namespace ssm::test
