#pragma once
/// \file causal_convolution.hpp
/// Causal (linear, not circular) convolution of an L x H sequence with H kernels, by real FFTs.
///
///   y[t, h] = sum_{j = 0}^{t} k[j, h] u[t - j, h],   t = 0 .. L-1,
///
/// computed as irfft(rfft(u_pad) * rfft(k_pad)) / n with both zero-padded to a fast size
/// n >= L + Lk - 1, so the circular wrap-around never reaches the first L outputs. A kernel's
/// spectrum can be computed once (`KernelSpectrum`) and reused for every input of that length.
/// Channels are spread across threads with OpenMP when it is enabled; the per-thread FFT buffers are
/// allocated before the parallel region (core/parallel.hpp), so nothing inside it allocates.

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/types.hpp"

#include <algorithm>

namespace ssm {

/// The spectra of H kernels, zero-padded for inputs of length `input_length`.
/// `spectrum` is (n/2 + 1) x H, scaled by 1/n so that the convolution needs no further scaling.
template <class T>
struct KernelSpectrum {
  Index input_length = 0;   ///< L: the input length these spectra serve.
  Index kernel_length = 0;  ///< Lk: taps per kernel (taps beyond L are dropped: they never reach an output).
  Index fft_size = 0;       ///< n: the padded transform size, >= L + Lk - 1.
  MatrixXc<T> spectrum;     ///< (n/2 + 1) x H, rfft(k_pad) / n.

  Index channels() const { return spectrum.cols(); }
  /// Memory held, in bytes: (n/2 + 1) x H complex values plus this struct (what a `SpectrumCache` counts).
  std::size_t bytes() const {
    return sizeof(*this) + static_cast<std::size_t>(spectrum.size()) * sizeof(std::complex<T>);
  }
};

/// Computes the padded spectra of the kernels `k` (Lk x H, one column per channel) for inputs of
/// length L. Kernel taps at index >= L cannot affect an output of length L and are dropped.
template <class T, class Derived>
KernelSpectrum<T> make_kernel_spectrum(const Eigen::MatrixBase<Derived>& k, Index L) {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");
  check(L >= 1, "make_kernel_spectrum", "L", ">= 1", ssm::detail::concat(L));
  check(k.rows() >= 1 && k.cols() >= 1, "make_kernel_spectrum", "k", "a non-empty Lk x H matrix",
        shape_string(k.rows(), k.cols()));
  KernelSpectrum<T> out;
  out.input_length = L;
  out.kernel_length = std::min<Index>(k.rows(), L);
  out.fft_size = fft::fast_size(L + out.kernel_length - 1);
  const Index n = out.fft_size, bins = n / 2 + 1, H = k.cols();
  out.spectrum.resize(bins, H);
  const auto plan = fft::real_fft<T>(n);
  const T scale = T(1) / static_cast<T>(n);
  // An expression is evaluated once here (a plain matrix binds without a copy), never per coefficient.
  const Eigen::Ref<const MatrixX<typename Derived::Scalar>> taps(k.derived());
  struct Scratch {
    fft::Buffer<T> padded;
    fft::Buffer<std::complex<T>> spectrum;
  };
  const int team = ssm::detail::team_size(H > 1 && n * H > 16384, H);
  ssm::detail::PerThread<Scratch> scratch(team, [&] { return Scratch{fft::Buffer<T>(n), fft::Buffer<std::complex<T>>(bins)}; });
  ssm::detail::RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
  {
    Scratch& s = scratch.local();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index h = 0; h < H; ++h) {
      errors.run([&] {
        for (Index j = 0; j < out.kernel_length; ++j) s.padded[j] = static_cast<T>(taps(j, h));
        std::fill(s.padded.data() + out.kernel_length, s.padded.data() + n, T(0));
        plan->forward(s.padded, s.spectrum);
        for (Index b = 0; b < bins; ++b) out.spectrum(b, h) = s.spectrum[b] * scale;
      });
    }
  }
  errors.rethrow();
  return out;
}

/// y = u * k (causal, per channel) using precomputed kernel spectra, written into `y` (L x H, any
/// column-major block; it may not alias u). u is L x H with L equal to `spectrum.input_length` and H
/// its channel count. Reusing `y` across calls avoids allocating (and first-touching) the output.
template <class T, class Derived>
void causal_convolution_into(const Eigen::MatrixBase<Derived>& u, const KernelSpectrum<T>& spectrum,
                             Eigen::Ref<Sequence<typename Derived::Scalar>> y) {
  static_assert(std::is_same_v<typename Derived::Scalar, T>, "u must hold the kernel's scalar type");
  check_shape(u, spectrum.input_length, spectrum.channels(), "causal_convolution", "u", "L x H of the kernel spectrum");
  check_shape(y, u.rows(), u.cols(), "causal_convolution", "y", "L x H, the shape of u");
  const Index L = u.rows(), H = u.cols(), n = spectrum.fft_size, bins = n / 2 + 1;
  const Eigen::Ref<const Sequence<T>> input(u.derived());  // evaluates an expression once; a matrix is not copied
  const auto plan = fft::real_fft<T>(n);
  // The input buffer's zero tail is written once: the r2c transform preserves its input, and the
  // inverse writes into a second buffer, so each channel only copies its L samples in.
  struct Scratch {
    fft::Buffer<T> padded, result;
    fft::Buffer<std::complex<T>> work;
  };
  const int team = ssm::detail::team_size(H > 1 && n * H > 16384, H);
  ssm::detail::PerThread<Scratch> scratch(
      team, [&] { return Scratch{fft::Buffer<T>(n), fft::Buffer<T>(n), fft::Buffer<std::complex<T>>(bins)}; });
  ssm::detail::RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
  {
    Scratch& s = scratch.local();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index h = 0; h < H; ++h) {
      errors.run([&] {
        std::copy(input.col(h).data(), input.col(h).data() + L, s.padded.data());
        plan->forward(s.padded, s.work);
        cmul_inplace(s.work.data(), spectrum.spectrum.col(h).data(), bins);
        plan->inverse(s.work, s.result);
        std::copy(s.result.data(), s.result.data() + L, y.col(h).data());
      });
    }
  }
  errors.rethrow();
}

/// y = u * k (causal, per channel) using precomputed kernel spectra. u is L x H with L equal to
/// `spectrum.input_length` and H equal to its channel count; returns L x H.
template <class T, class Derived>
Sequence<T> causal_convolution(const Eigen::MatrixBase<Derived>& u, const KernelSpectrum<T>& spectrum) {
  Sequence<T> y(u.rows(), u.cols());
  causal_convolution_into(u, spectrum, y);
  return y;
}

/// y = u * k (causal, per channel): u is L x H, k is Lk x H (any Lk >= 1); returns L x H.
template <class Derived, class KernelDerived>
Sequence<typename Derived::Scalar> causal_convolution(const Eigen::MatrixBase<Derived>& u,
                                                      const Eigen::MatrixBase<KernelDerived>& k) {
  using T = typename Derived::Scalar;
  check(k.cols() == u.cols(), "causal_convolution", "k", ssm::detail::concat("one column per channel of u (", u.cols(), ")"),
        ssm::detail::concat(k.cols(), " columns"));
  check(u.rows() >= 1, "causal_convolution", "u", "L >= 1 rows", shape_string(u.rows(), u.cols()));
  return causal_convolution(u, make_kernel_spectrum<T>(k, u.rows()));
}

}  // namespace ssm
