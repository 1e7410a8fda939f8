#pragma once
/// \file fft.hpp
/// Real-to-complex FFT plans over FFTW 3, in float (fftwf_*) and double (fftw_*).
///
/// `RealFFT<T>` is an immutable pair of plans for one size n: forward X = rfft(x) (n reals to
/// n/2 + 1 complex values, X_k = sum_j x_j e^{-2 pi i jk/n}, unnormalised) and inverse
/// x = irfft(X) (unnormalised, so irfft(rfft(x)) = n x). Executing a plan is thread-safe, so many
/// threads share one plan.
///
/// Plan cache: `real_fft<T>(n)` makes the plans for a size on first use and keeps them in a per-precision
/// `ByteBudgetCache` (least recently used evicted beyond `plan_cache_budget()`, default 64 MiB per
/// precision; `clear_plan_cache()` drops them all). An evicted plan stays valid for whoever still holds
/// its shared_ptr and is destroyed when the last holder lets go. A plan's memory is estimated as
/// 2 n complex values (FFTW's twiddle tables for both directions, plus the work buffers its algorithms for
/// sizes with large prime factors keep): about 0.5 MB for n = 32768 in float.
///
/// Thread safety of planning: FFTW's planner (plan creation and destruction) is not thread-safe. ssm
/// calls fftw_make_planner_thread_safe() and fftwf_make_planner_thread_safe() once per process (FFTW's
/// own lock, so planning is safe also against other code in the process that uses FFTW, and against
/// other copies of these headers, e.g. in another shared library) during static initialisation, before
/// main() runs (code that starts FFTW-planning threads from static constructors of its own must call
/// fftw_make_planner_thread_safe() itself first); it needs libfftw3_threads and
/// libfftw3f_threads, which the ssm::ssm CMake target links. Define SSM_FFTW_THREADS=0 to build without
/// them (the CMake package does so when they are missing): ssm then only serialises its own planning, under
/// the lock below, which protects its plan cache either way.
/// `Buffer<T>` is SIMD-aligned memory from fftw_malloc, which the plans were made for.

#include "ssm/core/byte_budget_cache.hpp"
#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <fftw3.h>

#ifndef SSM_FFTW_THREADS
/// 1: make FFTW's planner thread-safe process-wide (link fftw3_threads and fftw3f_threads); 0: do not.
#define SSM_FFTW_THREADS 1
#endif

#include <complex>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>

namespace ssm::fft {

/// How hard FFTW searches for a fast plan when a size is first seen. `estimate` plans at once;
/// `measure` times candidate algorithms (tens of ms to seconds per new size, then faster runs).
enum class Planning { estimate, measure, patient };

namespace detail {

/// Serialises ssm's own planning and the planning setting. Made before any plan cache (see
/// `plan_cache`), so it outlives them at program exit, when the caches destroy their plans.
inline std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

/// Installs FFTW's planner lock in both precisions, once per process (thread-safe: a function-local
/// static). Idempotent in FFTW too, so copies of this header in several libraries may all call it.
inline void make_planner_thread_safe() {
#if SSM_FFTW_THREADS
  static const bool done = [] {
    fftw_make_planner_thread_safe();
    fftwf_make_planner_thread_safe();
    return true;
  }();
  (void)done;
#endif
}

/// Runs make_planner_thread_safe() during static initialisation of every program that includes this
/// header, so FFTW's planner lock is in place before main() starts threads that plan with raw FFTW calls
/// (installing the lock while another thread is inside the planner would corrupt FFTW's state).
inline const bool planner_thread_safe_at_startup = (make_planner_thread_safe(), true);

inline Planning& planning_setting() {
  static Planning p = Planning::estimate;
  return p;
}

inline unsigned planner_flags(Planning p) {
  switch (p) {
    case Planning::estimate: return FFTW_ESTIMATE;
    case Planning::measure: return FFTW_MEASURE;
    case Planning::patient: return FFTW_PATIENT;
  }
  return FFTW_ESTIMATE;
}

/// The FFTW functions for one precision, behind one name.
template <class T>
struct fftw_api;

template <>
struct fftw_api<double> {
  using plan_type = fftw_plan;
  using complex_type = fftw_complex;
  static void* malloc(std::size_t bytes) { return fftw_malloc(bytes); }
  static void free(void* p) { fftw_free(p); }
  static plan_type plan_r2c(int n, double* in, complex_type* out, unsigned flags) {
    return fftw_plan_dft_r2c_1d(n, in, out, flags);
  }
  static plan_type plan_c2r(int n, complex_type* in, double* out, unsigned flags) {
    return fftw_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void r2c(plan_type p, double* in, complex_type* out) { fftw_execute_dft_r2c(p, in, out); }
  static void c2r(plan_type p, complex_type* in, double* out) { fftw_execute_dft_c2r(p, in, out); }
  static void destroy(plan_type p) { fftw_destroy_plan(p); }
  static int alignment_of(double* p) { return fftw_alignment_of(p); }
};

template <>
struct fftw_api<float> {
  using plan_type = fftwf_plan;
  using complex_type = fftwf_complex;
  static void* malloc(std::size_t bytes) { return fftwf_malloc(bytes); }
  static void free(void* p) { fftwf_free(p); }
  static plan_type plan_r2c(int n, float* in, complex_type* out, unsigned flags) {
    return fftwf_plan_dft_r2c_1d(n, in, out, flags);
  }
  static plan_type plan_c2r(int n, complex_type* in, float* out, unsigned flags) {
    return fftwf_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void r2c(plan_type p, float* in, complex_type* out) { fftwf_execute_dft_r2c(p, in, out); }
  static void c2r(plan_type p, complex_type* in, float* out) { fftwf_execute_dft_c2r(p, in, out); }
  static void destroy(plan_type p) { fftwf_destroy_plan(p); }
  static int alignment_of(float* p) { return fftwf_alignment_of(p); }
};

}  // namespace detail

/// Sets how hard FFTW plans sizes seen from now on (plans already cached are kept).
inline void set_planning(Planning p) {
  std::lock_guard<std::mutex> lock(detail::planner_mutex());
  detail::planning_setting() = p;
}

/// The planning effort used for new sizes.
inline Planning planning() {
  std::lock_guard<std::mutex> lock(detail::planner_mutex());
  return detail::planning_setting();
}

/// SIMD-aligned array of `count` values of `V` (real or complex), from fftw_malloc. Move-only.
template <class V>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Index count) : count_(count) {
    check(count >= 0, "fft::Buffer", "count", ">= 0", ssm::detail::concat(count));
    if (count > 0) {
      data_ = static_cast<V*>(fftw_malloc(sizeof(V) * static_cast<std::size_t>(count)));
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
    if (data_) fftw_free(data_);
    data_ = nullptr;
  }
  V* data_ = nullptr;
  Index count_ = 0;
};

/// Forward and inverse real FFT of one size n >= 1 for scalar `T`. Obtain through `real_fft<T>(n)`.
template <class T>
class RealFFT {
  using api = detail::fftw_api<T>;
  using fftw_complex_t = typename api::complex_type;

 public:
  /// Plans both directions for size n. Call only with the planner lock held (`real_fft` does).
  explicit RealFFT(Index n, Planning planning) : n_(n) {
    Buffer<T> real(n);
    Buffer<std::complex<T>> spectrum(n / 2 + 1);
    const unsigned flags = detail::planner_flags(planning);
    auto* c = reinterpret_cast<fftw_complex_t*>(spectrum.data());
    forward_ = api::plan_r2c(static_cast<int>(n), real.data(), c, flags);
    inverse_ = api::plan_c2r(static_cast<int>(n), c, real.data(), flags);
    if (!forward_ || !inverse_) {
      // The lock is held by our caller: destroy directly (the destructor will not run).
      if (forward_) api::destroy(forward_);
      if (inverse_) api::destroy(inverse_);
      throw error(ssm::detail::concat("fft: FFTW could not plan size ", n));
    }
  }
  RealFFT(const RealFFT&) = delete;
  RealFFT& operator=(const RealFFT&) = delete;
  ~RealFFT() {
    std::lock_guard<std::mutex> lock(detail::planner_mutex());
    if (forward_) api::destroy(forward_);
    if (inverse_) api::destroy(inverse_);
  }

  /// Transform size n.
  Index size() const { return n_; }
  /// Number of complex outputs of the forward transform: n/2 + 1.
  Index spectrum_size() const { return n_ / 2 + 1; }
  /// Estimated memory FFTW holds for the two plans: 2 n complex values (see the file comment).
  std::size_t bytes() const { return sizeof(*this) + 2 * static_cast<std::size_t>(n_) * sizeof(std::complex<T>); }

  /// out[k] = sum_j in[j] e^{-2 pi i jk / n}, k < n/2 + 1. `in` (n values) is preserved.
  /// Both arrays must be `Buffer`s (SIMD-aligned) and must not overlap.
  void forward(Buffer<T>& in, Buffer<std::complex<T>>& out) const {
    check_sizes(in.size(), out.size(), "forward");
    api::r2c(forward_, in.data(), reinterpret_cast<fftw_complex_t*>(out.data()));
  }

  /// out[j] = sum_k X_k e^{+2 pi i jk / n} over the Hermitian extension of `in` (n/2+1 values):
  /// unnormalised, so inverse(forward(x)) = n x. `in` is overwritten (FFTW's c2r destroys it).
  void inverse(Buffer<std::complex<T>>& in, Buffer<T>& out) const {
    check_sizes(out.size(), in.size(), "inverse");
    api::c2r(inverse_, reinterpret_cast<fftw_complex_t*>(in.data()), out.data());
  }

 private:
  void check_sizes(Index real_size, Index complex_size, const char* what) const {
    // Cheap, once per call: a size mismatch would make FFTW read or write out of bounds.
    if (real_size < n_ || complex_size < n_ / 2 + 1) {
      throw error(ssm::detail::concat("RealFFT::", what, ": buffers: expected at least ", n_, " reals and ",
                                      n_ / 2 + 1, " complex values, got ", real_size, " and ", complex_size));
    }
  }

  Index n_;
  typename api::plan_type forward_ = nullptr;
  typename api::plan_type inverse_ = nullptr;
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
  detail::make_planner_thread_safe();
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

/// Smallest even n >= m whose only prime factors are 2, 3, 5 and 7: sizes FFTW transforms fastest.
inline Index fast_size(Index m) {
  check(m >= 1 && m <= (Index(1) << 30), "fft::fast_size", "m", "a size in [1, 2^30]", ssm::detail::concat(m));
  if (m <= 2) return 2;
  Index best = Index(1) << 31;
  for (Index p2 = 2; p2 < best; p2 *= 2)
    for (Index p3 = p2; p3 < best; p3 *= 3)
      for (Index p5 = p3; p5 < best; p5 *= 5)
        for (Index p7 = p5; p7 < best; p7 *= 7)
          if (p7 >= m) {
            best = p7;
            break;
          }
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
