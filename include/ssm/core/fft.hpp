#pragma once
/// \file fft.hpp
/// Real-to-complex FFT plans over FFTW 3, in float (fftwf_*) and double (fftw_*).
///
/// `RealFFT<T>` is an immutable pair of plans for one size n: forward X = rfft(x) (n reals to
/// n/2 + 1 complex values, X_k = sum_j x_j e^{-2 pi i jk/n}, unnormalised) and inverse
/// x = irfft(X) (unnormalised, so irfft(rfft(x)) = n x). Plans are made once per (scalar, n)
/// under a global lock, because FFTW's planner is not thread-safe, and cached for the life of
/// the program; executing a cached plan is thread-safe, so many threads share one plan.
/// `Buffer<T>` is SIMD-aligned memory from fftw_malloc, which the plans were made for.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <fftw3.h>

#include <complex>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>

namespace ssm::fft {

/// How hard FFTW searches for a fast plan when a size is first seen. `estimate` plans at once;
/// `measure` times candidate algorithms (tens of ms to seconds per new size, then faster runs).
enum class Planning { estimate, measure, patient };

namespace detail {

inline std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

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
    if (!forward_ || !inverse_) throw error(ssm::detail::concat("fft: FFTW could not plan size ", n));
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

/// The cached plans for size n (made on first use, thread-safe).
template <class T>
std::shared_ptr<const RealFFT<T>> real_fft(Index n) {
  static_assert(is_supported_scalar_v<T>, "ssm::fft: T must be float or double");
  check(n >= 1 && n <= (Index(1) << 30), "fft::real_fft", "n", "a size in [1, 2^30]", ssm::detail::concat(n));
  // The mutex is made before the cache so that it outlives it at program exit.
  std::mutex& mutex = detail::planner_mutex();
  static std::map<Index, std::shared_ptr<const RealFFT<T>>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  // RealFFT's constructor runs the planner under the lock held here; its destructor (only at
  // program exit, from the cache) takes the lock itself.
  std::shared_ptr<const RealFFT<T>> made(new RealFFT<T>(n, detail::planning_setting()));
  cache.emplace(n, made);
  return made;
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
  // std::complex<T> is laid out as T[2] (real, imaginary): [complex.numbers.general].
  T* x = reinterpret_cast<T*>(a);
  const T* y = reinterpret_cast<const T*>(b);
  for (Index i = 0; i < count; ++i) {
    const T ar = x[2 * i], ai = x[2 * i + 1], br = y[2 * i], bi = y[2 * i + 1];
    x[2 * i] = ar * br - ai * bi;
    x[2 * i + 1] = ar * bi + ai * br;
  }
}

}  // namespace ssm::fft
