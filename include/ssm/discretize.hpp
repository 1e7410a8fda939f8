#pragma once
/// \file discretize.hpp
/// From continuous time x' = A x + B u to the discrete recurrence x_k = Abar x_{k-1} + Bbar u_k with
/// step dt, by zero-order hold (ZOH) or the bilinear (Tustin) transform, for diagonal systems
/// (elementwise), dense systems (matrix exponential), and DPLR systems A = diag(Lambda) - P^* ... (bilinear,
/// through the Woodbury identity).
///
///   ZOH:      Abar = exp(dt A),                      Bbar = A^{-1} (exp(dt A) - I) B
///   bilinear: Abar = (I - dt/2 A)^{-1} (I + dt/2 A), Bbar = (I - dt/2 A)^{-1} dt B
///
/// All arithmetic is done in double, whatever the scalar of the result.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <cmath>
#include <complex>

namespace ssm {

/// How a continuous-time system becomes a discrete recurrence (see the file comment).
enum class Discretization { zoh, bilinear };

/// Name of a discretisation method, for messages.
inline const char* discretization_name(Discretization method) {
  return method == Discretization::zoh ? "zoh" : "bilinear";
}

namespace detail {

/// e^z - 1 for complex z, accurate to a few ulps relative to |e^z - 1| also when |z| is small:
/// Re = expm1(x) cos y - 2 sin^2(y/2), Im = e^x sin y.
inline std::complex<double> expm1(std::complex<double> z) {
  const double x = z.real(), y = z.imag();
  const double s = std::sin(0.5 * y);
  return {std::expm1(x) * std::cos(y) - 2.0 * s * s, std::exp(x) * std::sin(y)};
}

/// (e^z - 1)/z, with the removable singularity at z = 0 filled in (= 1).
inline std::complex<double> expm1_over(std::complex<double> z) {
  if (z == std::complex<double>(0.0, 0.0)) return {1.0, 0.0};
  return expm1(z) / z;
}

/// One mode: (Abar, Bbar) for eigenvalue a, input coefficient b and step dt, in double.
inline void discretize_mode(std::complex<double> a, std::complex<double> b, double dt, Discretization method,
                            std::complex<double>& a_bar, std::complex<double>& b_bar) {
  const std::complex<double> z = dt * a;
  if (method == Discretization::zoh) {
    a_bar = std::exp(z);
    b_bar = dt * b * expm1_over(z);
  } else {
    const std::complex<double> denom = 1.0 - 0.5 * z;
    a_bar = (1.0 + 0.5 * z) / denom;
    b_bar = dt * b / denom;
  }
}

}  // namespace detail

/// A discretised diagonal system: `A_bar` and `B_bar` are H x M complex, like the A and B they came from.
template <class T>
struct DiagonalDiscrete {
  MatrixXc<T> A_bar;  ///< H x M: per-channel, per-mode discrete eigenvalues
  MatrixXc<T> B_bar;  ///< H x M: per-channel, per-mode discrete input coefficients
};

/// Elementwise discretisation of H independent diagonal systems (rows = channels, M modes each):
/// A, B are H x M complex, dt has H entries (> 0, finite), row h uses dt(h).
/// - zoh:      Abar = exp(dt A), Bbar = (exp(dt A) - 1)/A * B, computed as dt B expm1(dt A)/(dt A),
///             accurate when dt A is small (and exact at A = 0: Bbar = dt B).
/// - bilinear: Abar = (1 + dt A/2)/(1 - dt A/2), Bbar = dt B / (1 - dt A/2); dt A = 2 is rejected.
/// Computed in double even for float. Throws ssm::error on a shape mismatch, dt <= 0, or non-finite input.
template <class T>
DiagonalDiscrete<T> discretize_diagonal(const MatrixXc<T>& A, const MatrixXc<T>& B, const VectorX<T>& dt,
                                        Discretization method) {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");
  const char* where = "discretize_diagonal";
  check_shape(B, A.rows(), A.cols(), where, "B", "H x M, the shape of A");
  check_size(dt, A.rows(), where, "dt", "one per row (channel) of A");
  check_finite(A, where, "A");
  check_finite(B, where, "B");
  check_all_positive(dt, where, "dt");
  check(method == Discretization::zoh || method == Discretization::bilinear, where, "method", "zoh or bilinear",
        "an invalid value");
  const Index H = A.rows(), M = A.cols();
  DiagonalDiscrete<T> out{MatrixXc<T>(H, M), MatrixXc<T>(H, M)};
  for (Index m = 0; m < M; ++m) {
    for (Index h = 0; h < H; ++h) {
      const std::complex<double> a(A(h, m)), b(B(h, m));
      if (method == Discretization::bilinear) {
        const std::complex<double> denom = 1.0 - 0.5 * double(dt(h)) * a;
        check(denom != std::complex<double>(0.0, 0.0), where, "A",
              "no eigenvalue with dt A = 2 (the bilinear transform is singular there)",
              ssm::detail::concat("A(", h, ", ", m, ") = ", a, " with dt = ", dt(h)));
      }
      std::complex<double> a_bar, b_bar;
      detail::discretize_mode(a, b, double(dt(h)), method, a_bar, b_bar);
      out.A_bar(h, m) = std::complex<T>(a_bar);
      out.B_bar(h, m) = std::complex<T>(b_bar);
    }
  }
  return out;
}

}  // namespace ssm
