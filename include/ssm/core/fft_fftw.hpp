#pragma once
/// \file fft_fftw.hpp
/// The FFTW 3 backend of ssm/core/fft.hpp (the default; FFTW is GPL: a distributed binary that links it
/// must come with its whole source. Build with SSM_FFT_BACKEND_EIGEN=1 for the GPL-free backend).
/// Include ssm/core/fft.hpp, not this file.
///
/// `Plan<T>` holds FFTW's two plans of one size n (fftw_* for double, fftwf_* for float), made with the
/// planning effort the user chose (`fft::set_planning`). Executing a plan is thread-safe (FFTW's new-array
/// execute functions), so one plan serves every thread. Its memory is estimated as 2 n complex values
/// (FFTW's twiddle tables for both directions, plus the work buffers its algorithms for sizes with large
/// prime factors keep): about 0.5 MB for n = 32768 in float.
///
/// Thread safety of planning: FFTW's planner (plan creation and destruction) is not thread-safe. ssm
/// calls fftw_make_planner_thread_safe() and fftwf_make_planner_thread_safe() once per process (FFTW's
/// own lock, so planning is safe also against other code in the process that uses FFTW, and against
/// other copies of these headers, e.g. in another shared library) during static initialisation, before
/// main() runs (code that starts FFTW-planning threads from static constructors of its own must call
/// fftw_make_planner_thread_safe() itself first); it needs libfftw3_threads and libfftw3f_threads, which
/// the ssm::fft CMake target links. Define SSM_FFTW_THREADS=0 to build without them (the CMake package
/// does so when they are missing): ssm then only serialises its own planning, under fft.hpp's planner
/// lock, which protects its plan cache either way.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include "ssm/core/fftw_api.hpp"

#include <fftw3.h>

#ifndef SSM_FFTW_THREADS
/// 1: make FFTW's planner thread-safe process-wide (link fftw3_threads and fftw3f_threads); 0: do not.
#define SSM_FFTW_THREADS 1
#endif

#include <complex>
#include <cstddef>
#include <mutex>

namespace ssm::fft::backend {

/// The backend's name, for logs and benchmark labels.
inline constexpr const char* name = "FFTW 3";
/// Whether a binary that uses this backend is bound by the GPL (FFTW's licence).
inline constexpr bool gpl = true;

/// Memory aligned the way FFTW's SIMD code wants it (fftw_malloc); freed with aligned_free.
inline void* aligned_malloc(std::size_t bytes) { return fftw_malloc(bytes); }
inline void aligned_free(void* p) { fftw_free(p); }

/// Transform sizes FFTW does fastest: even products of these primes (its codelets cover 2, 3, 5, 7).
inline constexpr int fast_primes[] = {2, 3, 5, 7};
/// A fast size is a multiple of this.
inline constexpr Index fast_multiple = 2;

/// Installs FFTW's planner lock in both precisions, once per process (thread-safe: a function-local
/// static). Idempotent in FFTW too, so copies of this header in several libraries may all call it.
inline void prepare() {
#if SSM_FFTW_THREADS
  static const bool done = [] {
    fftw_make_planner_thread_safe();
    fftwf_make_planner_thread_safe();
    return true;
  }();
  (void)done;
#endif
}

namespace detail {

/// Runs prepare() during static initialisation of every program that includes this header, so FFTW's
/// planner lock is in place before main() starts threads that plan with raw FFTW calls (installing the
/// lock while another thread is inside the planner would corrupt FFTW's state).
inline const bool planner_thread_safe_at_startup = (prepare(), true);

inline unsigned planner_flags(Planning p) {
  switch (p) {
    case Planning::estimate: return FFTW_ESTIMATE;
    case Planning::measure: return FFTW_MEASURE;
    case Planning::patient: return FFTW_PATIENT;
  }
  return FFTW_ESTIMATE;
}

}  // namespace detail

/// FFTW's forward (r2c) and inverse (c2r) plans of size n, planned for aligned_malloc'd arrays.
/// Made and destroyed under fft.hpp's planner lock (`real_fft` and `RealFFT` take it).
template <class T>
class Plan {
  using api = fftw::api<T>;
  using fftw_complex_t = typename api::complex_type;

 public:
  /// `real` (n values) and `spectrum` (n/2 + 1 values) are aligned scratch arrays FFTW plans on.
  Plan(Index n, Planning planning, T* real, std::complex<T>* spectrum) {
    const unsigned flags = detail::planner_flags(planning);
    auto* c = reinterpret_cast<fftw_complex_t*>(spectrum);
    forward_ = api::plan_r2c(static_cast<int>(n), real, c, flags);
    inverse_ = api::plan_c2r(static_cast<int>(n), c, real, flags);
    if (!forward_ || !inverse_) {
      release();
      throw error(ssm::detail::concat("fft: FFTW could not plan size ", n));
    }
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() { release(); }

  /// Estimated bytes FFTW holds for the two plans of size n (see the file comment).
  static std::size_t bytes(Index n) { return 2 * static_cast<std::size_t>(n) * sizeof(std::complex<T>); }

  /// out = rfft(in): n reals to n/2 + 1 complex values; `in` is preserved. Thread-safe.
  void forward(T* in, std::complex<T>* out) const {
    api::r2c(forward_, in, reinterpret_cast<fftw_complex_t*>(out));
  }
  /// out = unnormalised irfft(in); `in` is overwritten (FFTW's c2r destroys it). Thread-safe.
  void inverse(std::complex<T>* in, T* out) const {
    api::c2r(inverse_, reinterpret_cast<fftw_complex_t*>(in), out);
  }

 private:
  void release() {
    if (forward_) api::destroy(forward_);
    if (inverse_) api::destroy(inverse_);
    forward_ = nullptr;
    inverse_ = nullptr;
  }
  typename api::plan_type forward_ = nullptr;
  typename api::plan_type inverse_ = nullptr;
};

}  // namespace ssm::fft::backend
