#pragma once
/// \file fft.hpp
/// Real-to-complex FFT plans in float and double over one of two backends chosen at configure time:
/// FFTW 3 (the default, GPL; ssm/core/fft_fftw.hpp) or Eigen's own FFT module with its bundled kissfft
/// (MPL-2.0, header-only, no GPL code; ssm/core/fft_eigen.hpp), selected by defining
/// SSM_FFT_BACKEND_EIGEN=1 (CMake: -DSSM_FFT_BACKEND=Eigen). `backend::name` and `backend::gpl` say which
/// one a build uses. Every translation unit of a program must see the same choice.
///
/// `RealFFT<T>` is an immutable pair of transforms for one size n: forward X = rfft(x) (n reals to
/// n/2 + 1 complex values, X_k = sum_j x_j e^{-2 pi i jk/n}, unnormalised) and inverse
/// x = irfft(X) (unnormalised, so irfft(rfft(x)) = n x). Executing is thread-safe, so many threads share
/// one plan.
///
/// Plan cache: `real_fft<T>(n)` makes the plans for a size on first use and keeps them in a per-precision
/// `ByteBudgetCache` (least recently used evicted beyond `plan_cache_budget()`, default 64 MiB per
/// precision; `clear_plan_cache()` drops them all). An evicted plan stays valid for whoever still holds
/// its shared_ptr and is destroyed when the last holder lets go. A plan's memory is estimated as
/// 2 n complex values (the backend's file comment says why): about 0.5 MB for n = 32768 in float.
///
/// Planning (making and destroying plans) is serialised under one lock of ssm's; the FFTW backend's file
/// comment says how FFTW's own planner is made thread-safe process-wide.
/// `Buffer<T>` is SIMD-aligned memory from the backend, which the plans were made for.

#include "ssm/core/byte_budget_cache.hpp"
#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <algorithm>
#include <complex>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>

namespace ssm::fft {

/// How hard FFTW searches for a fast plan when a size is first seen. `estimate` plans at once;
/// `measure` times candidate algorithms (tens of ms to seconds per new size, then faster runs).
/// The Eigen backend has nothing to plan and ignores it.
enum class Planning { estimate, measure, patient };

namespace detail {

/// Serialises ssm's own planning and the planning setting. Made before any plan cache (see
/// `plan_cache`), so it outlives them at program exit, when the caches destroy their plans.
inline std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

inline Planning& planning_setting() {
  static Planning p = Planning::estimate;
  return p;
}

}  // namespace detail
}  // namespace ssm::fft

#if defined(SSM_FFT_BACKEND_EIGEN) && SSM_FFT_BACKEND_EIGEN
#include "ssm/core/fft_eigen.hpp"
#else
#include "ssm/core/fft_fftw.hpp"
#endif

namespace ssm::fft {

/// Sets how hard the backend plans sizes seen from now on (plans already cached are kept).
inline void set_planning(Planning p) {
  std::lock_guard<std::mutex> lock(detail::planner_mutex());
  detail::planning_setting() = p;
}

/// The planning effort used for new sizes.
inline Planning planning() {
  std::lock_guard<std::mutex> lock(detail::planner_mutex());
  return detail::planning_setting();
}

/// SIMD-aligned array of `count` values of `V` (real or complex), from the backend's allocator. Move-only.
template <class V>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Index count) : count_(count) {
    check(count >= 0, "fft::Buffer", "count", ">= 0", ssm::detail::concat(count));
    if (count > 0) {
      data_ = static_cast<V*>(backend::aligned_malloc(sizeof(V) * static_cast<std::size_t>(count)));
      if (!data_) throw std::bad_alloc();
      std::memset(static_cast<void*>(data_), 0, sizeof(V) * static_cast<std::size_t>(count));
    }
  }
  Buffer(Buffer&& other) noexcept : data_(other.data_), count_(other.count_) {
    other.data_ = nullptr;
    other.count_ = 0;
  }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = other.data_;
      count_ = other.count_;
      other.data_ = nullptr;
      other.count_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  V* data() { return data_; }
  const V* data() const { return data_; }
  Index size() const { return count_; }
  V& operator[](Index i) { return data_[i]; }
  const V& operator[](Index i) const { return data_[i]; }
  /// The buffer as an Eigen column vector.
  Eigen::Map<VectorX<V>> vector() { return Eigen::Map<VectorX<V>>(data_, count_); }

 private:
  void release() {
    if (data_) backend::aligned_free(data_);
    data_ = nullptr;
  }
  V* data_ = nullptr;
  Index count_ = 0;
};

/// Forward and inverse real FFT of one size n >= 1 for scalar `T`. Obtain through `real_fft<T>(n)`.
template <class T>
class RealFFT {
 public:
  /// Plans both directions for size n. Call only with the planner lock held (`real_fft` does).
  explicit RealFFT(Index n, Planning planning) : n_(n), plan_(make_plan(n, planning)) {}
  RealFFT(const RealFFT&) = delete;
  RealFFT& operator=(const RealFFT&) = delete;
  ~RealFFT() {
    std::lock_guard<std::mutex> lock(detail::planner_mutex());
    plan_.reset();
  }

  /// Transform size n.
  Index size() const { return n_; }
  /// Number of complex outputs of the forward transform: n/2 + 1.
  Index spectrum_size() const { return n_ / 2 + 1; }
  /// Estimated memory the backend holds for the two directions: 2 n complex values (see the file comment).
  std::size_t bytes() const { return sizeof(*this) + backend::Plan<T>::bytes(n_); }

  /// out[k] = sum_j in[j] e^{-2 pi i jk / n}, k < n/2 + 1. `in` (n values) is preserved.
  /// Both arrays must be `Buffer`s (SIMD-aligned) and must not overlap.
  void forward(Buffer<T>& in, Buffer<std::complex<T>>& out) const {
    check_sizes(in.size(), out.size(), "forward");
    plan_->forward(in.data(), out.data());
  }

  /// out[j] = sum_k X_k e^{+2 pi i jk / n} over the Hermitian extension of `in` (n/2+1 values):
  /// unnormalised, so inverse(forward(x)) = n x. `in` may be overwritten (FFTW's c2r destroys it).
  void inverse(Buffer<std::complex<T>>& in, Buffer<T>& out) const {
    check_sizes(out.size(), in.size(), "inverse");
    plan_->inverse(in.data(), out.data());
  }

 private:
  void check_sizes(Index real_size, Index complex_size, const char* what) const {
    // Cheap, once per call: a size mismatch would make the backend read or write out of bounds.
    if (real_size < n_ || complex_size < n_ / 2 + 1) {
      throw error(ssm::detail::concat("RealFFT::", what, ": buffers: expected at least ", n_, " reals and ",
                                      n_ / 2 + 1, " complex values, got ", real_size, " and ", complex_size));
    }
  }

  /// The backend's plans, made on aligned scratch arrays of the sizes they will run on.
  static std::unique_ptr<backend::Plan<T>> make_plan(Index n, Planning planning) {
    Buffer<T> real(n);
    Buffer<std::complex<T>> spectrum(n / 2 + 1);
    return std::make_unique<backend::Plan<T>>(n, planning, real.data(), spectrum.data());
  }

  Index n_;
  std::unique_ptr<backend::Plan<T>> plan_;  ///< destroyed under the planner lock (~RealFFT)
};

namespace detail {

/// The plan cache of one precision. The planner mutex is made first, so it is destroyed after the
/// cache (whose destruction destroys the remaining plans, each taking that mutex).
template <class T>
ByteBudgetCache<Index, RealFFT<T>>& plan_cache() {
  static std::mutex& mutex = planner_mutex();
  (void)mutex;
  static ByteBudgetCache<Index, RealFFT<T>> cache(std::size_t(64) << 20);
  return cache;
}

}  // namespace detail

/// The cached plans for size n (made on first use, thread-safe; see the file comment for the cache).
template <class T>
std::shared_ptr<const RealFFT<T>> real_fft(Index n) {
  static_assert(is_supported_scalar_v<T>, "ssm::fft: T must be float or double");
  check(n >= 1 && n <= (Index(1) << 30), "fft::real_fft", "n", "a size in [1, 2^30]", ssm::detail::concat(n));
  backend::prepare();
  return detail::plan_cache<T>().get_or_make(n, [n] {
    // Planning runs under the planner lock, outside the cache's lock; a plan that loses a race is
    // destroyed by the cache after it releases its lock (RealFFT's destructor takes the planner lock).
    std::lock_guard<std::mutex> lock(detail::planner_mutex());
    return std::shared_ptr<const RealFFT<T>>(new RealFFT<T>(n, detail::planning_setting()));
  });
}

/// Sets the plan cache budget, in (estimated) bytes per precision, evicting least recently used plans
/// to fit. Default 64 MiB. 0 keeps no plan: every call plans anew (slow; for tests and tight memory).
inline void set_plan_cache_budget(std::size_t bytes) {
  detail::plan_cache<float>().set_budget(bytes);
  detail::plan_cache<double>().set_budget(bytes);
}

/// The plan cache budget per precision, in bytes.
inline std::size_t plan_cache_budget() { return detail::plan_cache<double>().budget(); }

/// Estimated bytes held by the cached plans of both precisions.
inline std::size_t plan_cache_bytes() { return detail::plan_cache<float>().bytes() + detail::plan_cache<double>().bytes(); }

/// Number of cached sizes, both precisions together.
inline std::size_t plan_cache_size() { return detail::plan_cache<float>().size() + detail::plan_cache<double>().size(); }

/// Drops every cached plan of both precisions (plans still held by callers stay valid until released).
inline void clear_plan_cache() {
  detail::plan_cache<float>().clear();
  detail::plan_cache<double>().clear();
}

/// Smallest n >= m that is a multiple of `backend::fast_multiple` and whose only prime factors are
/// `backend::fast_primes`: the sizes the backend transforms fastest (FFTW: even, 2 3 5 7; Eigen's
/// kissfft: multiples of 4, 2 3 5).
inline Index fast_size(Index m) {
  check(m >= 1 && m <= (Index(1) << 30), "fft::fast_size", "m", "a size in [1, 2^30]", ssm::detail::concat(m));
  const Index limit = Index(1) << 32;  // above every answer: a power of two >= 2^30 qualifies
  Index best = limit;
  // Depth-first over the products fast_multiple * p1^a1 * p2^a2 * ... below the best so far.
  const auto search = [&](auto&& self, Index product, std::size_t prime) -> void {
    if (product >= m) {
      best = std::min(best, product);
      return;
    }
    if (prime == std::size(backend::fast_primes)) return;
    for (Index q = product; q < best; q *= backend::fast_primes[prime]) self(self, q, prime + 1);
  };
  search(search, backend::fast_multiple, 0);
  return best;
}

/// a[i] *= b[i] for i < count, written as real arithmetic: (ar + i ai)(br + i bi) =
/// (ar br - ai bi) + i (ar bi + ai br). std::complex's operator*= follows C's Annex G (a NaN result
/// is re-examined by a library call to recover infinities), and that branch keeps the loop from
/// vectorising; spectra of finite signals never need it. a and b may not overlap.
template <class T>
void multiply_spectra(std::complex<T>* a, const std::complex<T>* b, Index count) {
  cmul_inplace(a, b, count);  // ssm/core/complex_arith.hpp
}

}  // namespace ssm::fft
