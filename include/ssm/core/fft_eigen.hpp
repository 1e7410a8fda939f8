#pragma once
/// \file fft_eigen.hpp
/// The GPL-free backend of ssm/core/fft.hpp: Eigen's own FFT module (unsupported/Eigen/FFT with its
/// bundled kissfft, MPL-2.0 like the rest of Eigen, header-only). Chosen at configure time
/// (CMake -DSSM_FFT_BACKEND=Eigen, which defines SSM_FFT_BACKEND_EIGEN=1). Include ssm/core/fft.hpp,
/// not this file.
///
/// kissfft is a mixed-radix Cooley-Tukey FFT with butterflies for the radices 2, 3, 4 and 5 (other
/// prime factors take an O(p) generic butterfly per output). A real transform of a size divisible by 4
/// runs as a complex transform of half the size plus one twiddle pass; other sizes run as a full complex
/// transform. So the fast sizes of this backend are multiples of 4 whose prime factors are 2, 3 and 5.
///
/// Thread safety: an `Eigen::FFT` object keeps its twiddle tables *and* scratch vectors inside itself,
/// so one object cannot run two transforms at once. `Plan<T>` therefore keeps a small pool of engines
/// (each an Eigen::FFT warmed up for size n, so running it never allocates): a call borrows an idle
/// engine under a mutex, runs, and returns it; when every engine is busy it makes another. The pool
/// grows to the number of threads that ever transformed this size at the same time. Memory: about 2 n
/// complex values per engine (the forward and inverse twiddles of the half-size transform, the real
/// twiddles, the scratch vector); `bytes(n)` reports one engine.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#if defined(EIGEN_FFTW_DEFAULT) || defined(EIGEN_MKL_DEFAULT) || defined(EIGEN_POCKETFFT_DEFAULT)
#error "ssm: the Eigen FFT backend uses Eigen's bundled kissfft; EIGEN_FFTW_DEFAULT / EIGEN_MKL_DEFAULT / EIGEN_POCKETFFT_DEFAULT would swap it for another library (FFTW is GPL). Undefine them for ssm code, or build ssm with its FFTW backend."
#endif
#include <unsupported/Eigen/FFT>

#include <complex>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace ssm::fft::backend {

/// The backend's name, for logs and benchmark labels.
inline constexpr const char* name = "Eigen FFT (kissfft)";
/// Whether a binary that uses this backend is bound by the GPL: no (Eigen is MPL-2.0).
inline constexpr bool gpl = false;

/// 64-byte aligned memory (a cache line, the widest SIMD register); freed with aligned_free.
inline constexpr std::size_t alignment = 64;
inline void* aligned_malloc(std::size_t bytes) {
  return ::operator new(bytes, std::align_val_t(alignment), std::nothrow);
}
inline void aligned_free(void* p) { ::operator delete(p, std::align_val_t(alignment)); }

/// Transform sizes kissfft does fastest: multiples of 4 (the half-size real transform) whose prime
/// factors have butterflies of their own (see the file comment).
inline constexpr int fast_primes[] = {2, 3, 5};
/// A fast size is a multiple of this.
inline constexpr Index fast_multiple = 4;

/// Nothing to prepare: kissfft has no global state.
inline void prepare() {}

/// Forward and inverse real FFT of size n over a pool of Eigen::FFT engines (see the file comment).
template <class T>
class Plan {
  using Engine = Eigen::FFT<T, Eigen::internal::kissfft_impl<T>>;

 public:
  /// The scratch arrays are unused (kissfft needs no planning on the caller's arrays); `planning`
  /// has no effect on this backend.
  Plan(Index n, Planning /*planning*/, T* /*real*/, std::complex<T>* /*spectrum*/) : n_(n) {
    idle_.push_back(make_engine());
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  /// Estimated bytes of one engine of size n (see the file comment).
  static std::size_t bytes(Index n) { return 2 * static_cast<std::size_t>(n) * sizeof(std::complex<T>); }

  /// out = rfft(in): n reals to n/2 + 1 complex values; `in` is preserved. Thread-safe.
  void forward(T* in, std::complex<T>* out) const {
    if (n_ == 1) {  // kissfft's size-1 transform reads an empty scratch vector: the identity, done here
      out[0] = std::complex<T>(in[0], T(0));
      return;
    }
    Borrowed engine(*this);
    engine->fwd(out, in, n_);
  }
  /// out = unnormalised irfft(in) (Eigen's `Unscaled` flag); `in` is preserved. Thread-safe.
  void inverse(std::complex<T>* in, T* out) const {
    if (n_ == 1) {
      out[0] = in[0].real();
      return;
    }
    Borrowed engine(*this);
    engine->inv(out, in, n_);
  }

 private:
  /// An engine taken from the idle pool (or made) for one call, and given back when it ends.
  class Borrowed {
   public:
    explicit Borrowed(const Plan& plan) : plan_(plan) {
      {
        std::lock_guard<std::mutex> lock(plan_.mutex_);
        if (!plan_.idle_.empty()) {
          engine_ = std::move(plan_.idle_.back());
          plan_.idle_.pop_back();
        }
      }
      if (!engine_) engine_ = plan_.make_engine();  // every engine busy: one more, made outside the lock
    }
    ~Borrowed() {
      std::lock_guard<std::mutex> lock(plan_.mutex_);
      plan_.idle_.push_back(std::move(engine_));  // cannot throw: capacity reserved in make_engine
    }
    Borrowed(const Borrowed&) = delete;
    Borrowed& operator=(const Borrowed&) = delete;
    Engine* operator->() const { return engine_.get(); }

   private:
    const Plan& plan_;
    std::unique_ptr<Engine> engine_;
  };

  /// A new engine for size n with its tables and scratch made by one transform each way, so later
  /// calls neither allocate nor touch shared state.
  std::unique_ptr<Engine> make_engine() const {
    auto engine = std::make_unique<Engine>();
    engine->SetFlag(Engine::HalfSpectrum);
    engine->SetFlag(Engine::Unscaled);
    if (n_ > 1) {
      std::vector<T> real(static_cast<std::size_t>(n_), T(0));
      std::vector<std::complex<T>> spectrum(static_cast<std::size_t>(n_ / 2 + 1));
      engine->fwd(spectrum.data(), real.data(), n_);
      engine->inv(real.data(), spectrum.data(), n_);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.reserve(++engines_);  // room for every engine in existence, so giving one back never allocates
    return engine;
  }

  Index n_;
  mutable std::mutex mutex_;
  mutable std::vector<std::unique_ptr<Engine>> idle_;
  mutable std::size_t engines_ = 0;
};

}  // namespace ssm::fft::backend
