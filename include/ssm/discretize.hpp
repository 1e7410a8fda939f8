#pragma once
/// \file discretize.hpp
/// From continuous time x' = A x + B u to the discrete recurrence x_k = Abar x_{k-1} + Bbar u_k with
/// step dt, by zero-order hold (ZOH) or the bilinear (Tustin) transform, for diagonal systems
/// (elementwise) and DPLR systems (bilinear, through the Woodbury identity: O(N rank) per application,
/// never a dense inverse). Dense systems (the matrix exponential) are in ssm/discretize_dense.hpp, apart
/// because only they need Eigen's MatrixFunctions module.
///
///   ZOH:      Abar = exp(dt A),                      Bbar = A^{-1} (exp(dt A) - I) B
///   bilinear: Abar = (I - dt/2 A)^{-1} (I + dt/2 A), Bbar = (I - dt/2 A)^{-1} dt B
///
/// All arithmetic is done in double, whatever the scalar of the result.

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/LU>

#include <algorithm>
#include <cmath>
#include <complex>
#include <vector>

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

/// The low-rank factor of a DPLR system over H channels: `rank` matrices, each H x M complex;
/// P[r](h, n) is entry n of the r-th correction vector of channel h (the reference's P[r, h, n]).
template <class T>
using LowRank = std::vector<MatrixXc<T>>;

/// A DPLR system discretised by the bilinear transform, factored so that one step costs O(M rank).
///
/// The continuous system of one channel keeps M = N/2 complex modes x (their conjugates implied) with
///   x' = A x + B u,   A x = diag(Lambda) x - P 2 Re(P^* x),     y = 2 Re(C x),
/// which is the real N-dimensional system A = diag(Lambda) - P P^* written over one mode of each conjugate
/// pair (the low-rank term couples x and conj(x), hence the 2 Re). Bilinear with step dt:
///   x_k = (2/dt - A)^{-1} [ (2/dt + A) x_{k-1} + 2 B u_k ].
///
/// Increment form. The step is evaluated as the update it makes,
///   x_k = x_{k-1} + dx,   dx = (2/dt - A)^{-1} (2 A x_{k-1} + 2 B u_k)
///                            = (I - dt/2 A)^{-1} (dt A x_{k-1} + dt B u_k),
/// never as the product of the rounded factors (2/dt - A)^{-1} and (2/dt + A): for small dt those are
/// 2/dt + O(1) and dt/2 + O(dt^2), and rounding 2/dt + Lambda to T loses the O(1) part that *is* the
/// dynamics (in float at dt = 1e-6 the per-step decay came out ~24% off, and below dt ~ 2e-7 |Abar| could
/// exceed 1). Here dx ~ dt |A x| is computed to a few ulps relative to itself, and only the final
/// x + dx rounds at the scale of x, so a stable system never gains norm beyond that last rounding.
/// That last rounding is a limit of storing the state in T: once a mode's per-step change dt |A x| is
/// below half an ulp of x (dt |Re Lambda| < eps/2, e.g. dt < 1e-7 in float for |Re Lambda| ~ 1) it is
/// lost, whatever the formula, and the decay stalls (at dt = 1e-7 in float, about a third of the decay of
/// 20000 steps was lost in a test). `step_compensated` keeps the rounding residual in a second array
/// (x + x_lo is the state, as in compensated summation) and follows the exact recurrence over long runs.
///
/// (2/dt - A)^{-1} = (diag(1/D) + P 2Re(P^* .))^{-1} by Woodbury: y = D (v - P 2 Re(R v)), with
///   D = 1 / (2/dt - Lambda),   R = (I_r + 2 Re(P^* diag(D) P))^{-1} P^* diag(D)   (r x M, real r x r inverse).
/// Per step, with sigma = 2 Re(P^* x) (r reals):
///   v  = 2 Lambda x + 2 B u - 2 P sigma   (= 2 A x + 2 B u),
///   rho = 2 Re(R v),   dx = D (v - P rho).
/// Layout: unlike the parameters (H x M), every array here is M x H, column h holding channel h's modes
/// contiguously, which is what the per-channel step reads; rank-indexed ones are vectors of M x H matrices.
namespace detail {

/// s + e = a + b exactly (Knuth's TwoSum, any magnitudes): s = fl(a + b), e its rounding error.
template <class T>
inline void two_sum(T a, T b, T& s, T& e) {
  s = a + b;
  const T bb = s - a;
  e = (a - (s - bb)) + (b - bb);
}

}  // namespace detail

template <class T>
struct DPLRDiscrete {
  MatrixXc<T> D;        ///< M x H: 1 / (2/dt - Lambda)
  MatrixXc<T> Lambda2;  ///< M x H: 2 Lambda
  MatrixXc<T> B2;       ///< M x H: 2 B
  LowRank<T> P;         ///< rank x (M x H): the low-rank factor, transposed
  LowRank<T> R;         ///< rank x (M x H): rows of (I + 2Re(P^* D P))^{-1} P^* D, transposed

  Index channels() const { return D.cols(); }
  Index modes() const { return D.rows(); }
  Index rank() const { return Index(P.size()); }

  /// One step of channel h in place: x <- Abar x + Bbar u = x + dx, for the M modes at `x` (increment
  /// form, see the struct comment). `scratch` holds at least 2 rank reals. O(M rank); allocates nothing.
  void step(Index h, std::complex<T>* x, T u, T* scratch) const { apply<true>(h, x, u, x, scratch); }

  /// One step with a compensated state: the state is x + x_lo (both M values, x_lo starting at zero), and
  /// x + x_lo <- Abar (x + x_lo) + Bbar u with the rounding residual of x + dx kept in x_lo (TwoSum), so
  /// changes below an ulp of x accumulate instead of being lost (see the struct comment). dx is formed
  /// from x alone: x_lo changes it by dt |A| |x_lo| <= dt |A| ulp(x), far below its own rounding.
  /// `scratch` holds at least 2 rank reals. Allocates nothing.
  void step_compensated(Index h, std::complex<T>* x, std::complex<T>* x_lo, T u, T* scratch) const {
    apply<false>(h, x, u, x, scratch, x_lo);
  }

  /// The increment alone: dx = Abar x + Bbar u - x = (2/dt - A)^{-1} (2 A x + 2 B u), written to `dx`
  /// (M values; may be `x` itself). `scratch` holds at least 2 rank reals. Allocates nothing.
  void increment(Index h, const std::complex<T>* x, T u, std::complex<T>* dx, T* scratch) const {
    apply<false>(h, x, u, dx, scratch);
  }

  /// Abar x for channel h (no input): the same step with u = 0.
  void apply_A(Index h, std::complex<T>* x, T* scratch) const { step(h, x, T(0), scratch); }

 private:
  /// out = (Accumulate ? x : 0) + dx. `out` may be `x`: entry n is read before it is written.
  /// With `lo`: out + lo <- x + lo + dx by TwoSum (`out` may be `x`).
  template <bool Accumulate>
  void apply(Index h, const std::complex<T>* x, T u, std::complex<T>* out, T* scratch,
             std::complex<T>* lo = nullptr) const {
    // Complex products in real arithmetic (core/complex_arith.hpp): no Annex G library call.
    const Index M = modes(), r = rank();
    T* sigma = scratch;
    T* rho = scratch + r;
    for (Index q = 0; q < r; ++q) {  // sigma = 2 Re(P^* x)
      const std::complex<T>* p = P[std::size_t(q)].col(h).data();
      T acc = 0;
      for (Index n = 0; n < M; ++n) acc += re_conj_mul(p[n], x[n]);
      sigma[q] = 2 * acc;
    }
    const std::complex<T>* l2 = Lambda2.col(h).data();
    const std::complex<T>* b2 = B2.col(h).data();
    // v_n = 2 Lambda_n x_n + 2 B_n u - 2 sum_q P_qn sigma_q, formed on the fly twice (it costs less than
    // storing M values, and keeps the scratch at 2 rank reals).
    auto v = [&](Index n) {
      std::complex<T> value = cmuladd(l2[n], x[n], std::complex<T>(b2[n].real() * u, b2[n].imag() * u));
      for (Index q = 0; q < r; ++q) {
        const std::complex<T> pq = P[std::size_t(q)].col(h).data()[n];
        const T s2 = 2 * sigma[q];
        value = std::complex<T>(value.real() - pq.real() * s2, value.imag() - pq.imag() * s2);
      }
      return value;
    };
    for (Index q = 0; q < r; ++q) rho[q] = 0;
    for (Index n = 0; n < M; ++n) {  // rho = 2 Re(R v)
      const std::complex<T> vn = v(n);
      for (Index q = 0; q < r; ++q) rho[q] += re_mul(R[std::size_t(q)].col(h).data()[n], vn);
    }
    for (Index q = 0; q < r; ++q) rho[q] *= 2;
    const std::complex<T>* d = D.col(h).data();
    for (Index n = 0; n < M; ++n) {  // dx = D (v - P rho)
      std::complex<T> w = v(n);
      for (Index q = 0; q < r; ++q) {
        const std::complex<T> pq = P[std::size_t(q)].col(h).data()[n];
        w = std::complex<T>(w.real() - pq.real() * rho[q], w.imag() - pq.imag() * rho[q]);
      }
      const std::complex<T> dx = cmul(d[n], w);
      if (lo) {
        T hr, lr, hi, li;
        detail::two_sum(x[n].real(), dx.real() + lo[n].real(), hr, lr);
        detail::two_sum(x[n].imag(), dx.imag() + lo[n].imag(), hi, li);
        out[n] = std::complex<T>(hr, hi);
        lo[n] = std::complex<T>(lr, li);
      } else {
        out[n] = Accumulate ? std::complex<T>(x[n].real() + dx.real(), x[n].imag() + dx.imag()) : dx;
      }
    }
  }
};

/// Checks the shapes of a DPLR system: Lambda, B are H x M, P is rank >= 1 matrices of H x M, dt has H entries.
template <class T>
void check_dplr(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B, const VectorX<T>& dt,
                const char* where) {
  check(!P.empty(), where, "P", "rank >= 1 low-rank factors", "none");
  for (const auto& p : P) check_shape(p, Lambda.rows(), Lambda.cols(), where, "P[r]", "H x M, the shape of Lambda");
  check_shape(B, Lambda.rows(), Lambda.cols(), where, "B", "H x M, the shape of Lambda");
  check_size(dt, Lambda.rows(), where, "dt", "one per channel");
  check_finite(Lambda, where, "Lambda");
  check_finite(B, where, "B");
  for (const auto& p : P) check_finite(p, where, "P[r]");
  check_all_positive(dt, where, "dt");
  for (Index n = 0; n < Lambda.cols(); ++n)
    for (Index h = 0; h < Lambda.rows(); ++h)
      if (!(Lambda(h, n).real() < 0))  // the message is built only on failure
        check(false, where, "Lambda", "real parts < 0 (a stable diagonal part)",
              ssm::detail::concat(Lambda(h, n), " at (", h, ", ", n, ")"));
}

/// Bilinear discretisation of H DPLR systems A = diag(Lambda) - P P^* (see `DPLRDiscrete`), computed in
/// double and rounded to T. Lambda, B: H x M; P: rank matrices H x M; dt: H entries > 0. Re(Lambda) < 0.
template <class T>
DPLRDiscrete<T> discretize_dplr(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B,
                                const VectorX<T>& dt) {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");
  check_dplr(Lambda, P, B, dt, "discretize_dplr");
  const Index H = Lambda.rows(), M = Lambda.cols(), r = Index(P.size());
  DPLRDiscrete<T> out;
  out.D.resize(M, H);
  out.Lambda2 = (Lambda.transpose().template cast<std::complex<double>>() * 2.0).template cast<std::complex<T>>();
  out.B2 = (B.transpose().template cast<std::complex<double>>() * 2.0).template cast<std::complex<T>>();
  for (const auto& p : P) out.P.push_back(p.transpose());
  out.R.assign(std::size_t(r), MatrixXc<T>(M, H));
  MatrixX<double> G(r, r);
  MatrixXc<double> PD(r, M);
  for (Index h = 0; h < H; ++h) {
    const double two_over_dt = 2.0 / double(dt(h));
    VectorXc<double> d(M);
    for (Index n = 0; n < M; ++n) {
      const std::complex<double> lambda(Lambda(h, n));
      d(n) = 1.0 / (two_over_dt - lambda);
      out.D(n, h) = std::complex<T>(d(n));
    }
    for (Index q = 0; q < r; ++q)
      for (Index n = 0; n < M; ++n) PD(q, n) = std::conj(std::complex<double>(P[std::size_t(q)](h, n))) * d(n);
    for (Index q = 0; q < r; ++q)
      for (Index s = 0; s < r; ++s) {
        std::complex<double> acc = 0;
        for (Index n = 0; n < M; ++n) acc += PD(q, n) * std::complex<double>(P[std::size_t(s)](h, n));
        G(q, s) = (q == s ? 1.0 : 0.0) + 2.0 * acc.real();
      }
    Eigen::PartialPivLU<MatrixX<double>> lu(G);
    check(lu.rcond() > 1e-14, "discretize_dplr", "P", "I + 2 Re(P^* D P) invertible (Woodbury)",
          ssm::detail::concat("reciprocal condition number ", lu.rcond(), " in channel ", h));
    const MatrixXc<double> Rh = lu.inverse().template cast<std::complex<double>>() * PD;
    for (Index q = 0; q < r; ++q)
      for (Index n = 0; n < M; ++n) out.R[std::size_t(q)](n, h) = std::complex<T>(Rh(q, n));
  }
  return out;
}

/// The real 2M x 2M matrix of the real-linear map x -> Abar x of channel h on C^M, acting on [Re x; Im x],
/// written into `out` (resized to 2M x 2M if needed). Built column by column from `DPLRDiscrete::apply_A`
/// (O(M^2 rank)). `x` (M values) and `scratch` (2 rank reals) are caller-provided work space, so that a
/// caller running this for many channels in a parallel region allocates nothing there.
template <class T>
void dplr_transition_real_into(const DPLRDiscrete<T>& d, Index h, MatrixX<double>& out, std::complex<T>* x,
                               T* scratch) {
  const Index M = d.modes();
  out.resize(2 * M, 2 * M);
  for (Index j = 0; j < 2 * M; ++j) {
    std::fill(x, x + M, std::complex<T>(0));
    x[j % M] = j < M ? std::complex<T>(1, 0) : std::complex<T>(0, 1);
    d.apply_A(h, x, scratch);
    for (Index n = 0; n < M; ++n) {
      out(n, j) = double(x[n].real());
      out(M + n, j) = double(x[n].imag());
    }
  }
}

/// The real 2M x 2M matrix of the real-linear map x -> Abar x of channel h on C^M, acting on [Re x; Im x]
/// (see `dplr_transition_real_into`); used to form powers of Abar.
template <class T>
MatrixX<double> dplr_transition_real(const DPLRDiscrete<T>& d, Index h) {
  MatrixX<double> out;
  std::vector<std::complex<T>> x(static_cast<std::size_t>(d.modes()));
  std::vector<T> scratch(static_cast<std::size_t>(2 * d.rank()));
  dplr_transition_real_into(d, h, out, x.data(), scratch.data());
  return out;
}

}  // namespace ssm
