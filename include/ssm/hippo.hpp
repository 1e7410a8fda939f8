#pragma once
/// \file hippo.hpp
/// HiPPO theory as initialisations: the continuous-time transition matrices (A, B) of the HiPPO
/// measures, their normal-plus-low-rank (NPLR) form, the diagonal S4D initialisations and the
/// log-uniform draw of the step sizes dt.
///
/// Everything here is computed in double: initialisations are made once, and a float layer is
/// best initialised from double values rounded once.
///
/// Conventions (those of the reference implementation, state-spaces/s4 `hippo.py` / `dplr.py`):
/// - x'(t) = A x(t) + B u(t), A is N x N, B has N entries, indices n = 0 .. N-1.
/// - NPLR: A = V (diag(W) - P^T conj(P)) V^*, written over all N modes (see `NPLR`); only one
///   eigenvalue of each conjugate pair is kept, so W, B and each row of P have N/2 entries and
///   real quantities are recovered as 2 Re(...).

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <type_traits>

namespace ssm::hippo {

/// The HiPPO measures with a closed-form transition.
enum class Measure {
  legs,   ///< scaled Legendre (HiPPO-LegS, the S4 default)
  legt,   ///< translated Legendre, halved for timescale as in the reference (HiPPO-LegT)
  lagt,   ///< translated Laguerre (beta = 1 by default)
  glagt,  ///< generalised Laguerre (alpha = 0, beta = 0.01 by default)
  fout,   ///< translated Fourier (FouT, the reference's "fourier")
};

/// Name of a measure, for messages.
inline const char* measure_name(Measure m) {
  switch (m) {
    case Measure::legs: return "legs";
    case Measure::legt: return "legt";
    case Measure::lagt: return "lagt";
    case Measure::glagt: return "glagt";
    case Measure::fout: return "fout";
  }
  return "?";
}

/// A continuous-time linear system x' = A x + B u: A is N x N, B has N entries.
struct Transition {
  MatrixX<double> A;  ///< N x N
  VectorX<double> B;  ///< N
};

namespace detail {
inline void check_order(Index N, const char* where, bool even) {
  if (even) {
    check(N >= 2 && N % 2 == 0, where, "N", "an even state size >= 2", ssm::detail::concat(N));
  } else {
    check(N >= 1, where, "N", "a state size >= 1", ssm::detail::concat(N));
  }
}
}  // namespace detail

/// HiPPO-LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;
/// B_n = sqrt(2n+1).
inline Transition legs(Index N) {
  detail::check_order(N, "hippo::legs", false);
  Transition t{MatrixX<double>::Zero(N, N), VectorX<double>(N)};
  for (Index n = 0; n < N; ++n) {
    const double rn = std::sqrt(2.0 * double(n) + 1.0);
    t.B(n) = rn;
    for (Index k = 0; k < n; ++k) t.A(n, k) = -rn * std::sqrt(2.0 * double(k) + 1.0);
    t.A(n, n) = -double(n + 1);
  }
  return t;
}

/// HiPPO-LegT, halved for timescale as the reference does:
/// A_nk = -(1/2) sqrt(2n+1) sqrt(2k+1) (n >= k: 1; n < k: (-1)^(n-k)); B_n = (1/2) sqrt(2n+1).
inline Transition legt(Index N) {
  detail::check_order(N, "hippo::legt", false);
  Transition t{MatrixX<double>(N, N), VectorX<double>(N)};
  for (Index n = 0; n < N; ++n) {
    const double rn = std::sqrt(2.0 * double(n) + 1.0);
    t.B(n) = 0.5 * rn;
    for (Index k = 0; k < N; ++k) {
      const double sign = (n >= k || (k - n) % 2 == 0) ? 1.0 : -1.0;
      t.A(n, k) = -0.5 * sign * rn * std::sqrt(2.0 * double(k) + 1.0);
    }
  }
  return t;
}

/// Translated Laguerre: A = I/2 - (lower triangle of ones, diagonal included), B_n = beta.
inline Transition lagt(Index N, double beta = 1.0) {
  detail::check_order(N, "hippo::lagt", false);
  check(std::isfinite(beta), "hippo::lagt", "beta", "a finite value", ssm::detail::concat(beta));
  Transition t{MatrixX<double>::Zero(N, N), VectorX<double>::Constant(N, beta)};
  for (Index n = 0; n < N; ++n) {
    for (Index k = 0; k < n; ++k) t.A(n, k) = -1.0;
    t.A(n, n) = -0.5;
  }
  return t;
}

/// Generalised Laguerre (alpha > -1, alpha < 1, beta > 0). With l_n = sqrt(Gamma(n+alpha+1)/Gamma(n+1)):
/// A_nk = -(l_k / l_n) (1 for n > k, (1+beta)/2 for n = k, 0 for n < k),
/// B_n = binom(alpha+n, n) / l_n * Gamma(1-alpha)^(-1/2) * beta^((1-alpha)/2).
inline Transition glagt(Index N, double alpha = 0.0, double beta = 0.01) {
  detail::check_order(N, "hippo::glagt", false);
  check(alpha > -1.0 && alpha < 1.0, "hippo::glagt", "alpha", "a value in (-1, 1)", ssm::detail::concat(alpha));
  check_positive(beta, "hippo::glagt", "beta");
  VectorX<double> log_l(N);
  for (Index n = 0; n < N; ++n) log_l(n) = 0.5 * (std::lgamma(double(n) + alpha + 1.0) - std::lgamma(double(n) + 1.0));
  Transition t{MatrixX<double>::Zero(N, N), VectorX<double>(N)};
  const double b_scale = std::exp(-0.5 * std::lgamma(1.0 - alpha)) * std::pow(beta, 0.5 * (1.0 - alpha));
  for (Index n = 0; n < N; ++n) {
    for (Index k = 0; k < n; ++k) t.A(n, k) = -std::exp(log_l(k) - log_l(n));
    t.A(n, n) = -(1.0 + beta) / 2.0;
    const double binom =
        std::exp(std::lgamma(alpha + double(n) + 1.0) - std::lgamma(double(n) + 1.0) - std::lgamma(alpha + 1.0));
    t.B(n) = binom * std::exp(-log_l(n)) * b_scale;
  }
  return t;
}

/// FouT (the reference's "fourier"), N even: with e = (1, 0, sqrt2, 0, sqrt2, 0, ...),
/// A = pi * J - e e^T where J is block diagonal with blocks [[0, -k], [k, 0]] on modes (2k, 2k+1)
/// (frequencies k = 0 .. N/2-1), and B = e.
inline Transition fout(Index N) {
  detail::check_order(N, "hippo::fout", true);
  VectorX<double> e = VectorX<double>::Zero(N);
  for (Index n = 0; n < N; n += 2) e(n) = n == 0 ? 1.0 : std::sqrt(2.0);
  Transition t{-e * e.transpose(), e};
  const double pi = 3.14159265358979323846;
  for (Index k = 1; k < N / 2; ++k) {
    t.A(2 * k, 2 * k + 1) -= pi * double(k);
    t.A(2 * k + 1, 2 * k) += pi * double(k);
  }
  return t;
}

/// The transition of `measure` with its default parameters (lagt beta 1, glagt alpha 0 beta 0.01).
inline Transition transition(Measure measure, Index N) {
  switch (measure) {
    case Measure::legs: return legs(N);
    case Measure::legt: return legt(N);
    case Measure::lagt: return lagt(N);
    case Measure::glagt: return glagt(N);
    case Measure::fout: return fout(N);
  }
  throw error("hippo::transition: measure: expected a known measure, got an invalid value");
}

/// Smallest rank of the correction that makes the measure's A normal: legs 1, legt 2, lagt 1, fout 1.
/// glagt has none (throws).
inline Index minimum_rank(Measure measure) {
  switch (measure) {
    case Measure::legs: return 1;
    case Measure::legt: return 2;
    case Measure::lagt: return 1;
    case Measure::fout: return 1;
    case Measure::glagt: break;
  }
  throw error(ssm::detail::concat("hippo::minimum_rank: measure: expected legs, legt, lagt or fout, got ",
                                  measure_name(measure)));
}

/// The real low-rank correction P0 (rank x N) for which A + P0^T P0 is normal, indeed
/// (skew-symmetric) + (constant) I. Rows beyond the measure's own rank are zero.
/// legs: sqrt(n + 1/2). legt: sqrt((2n+1)/2) on odd n (row 0) and on even n (row 1).
/// lagt: sqrt(1/2). fout: (1, 0, sqrt2, 0, sqrt2, 0, ...).
inline MatrixX<double> rank_correction(Measure measure, Index N, Index rank) {
  const Index r0 = minimum_rank(measure);
  check(rank >= r0, "hippo::rank_correction", "rank", ssm::detail::concat(">= ", r0, " for ", measure_name(measure)),
        ssm::detail::concat(rank));
  detail::check_order(N, "hippo::rank_correction", measure == Measure::fout);
  MatrixX<double> P = MatrixX<double>::Zero(rank, N);
  for (Index n = 0; n < N; ++n) {
    switch (measure) {
      case Measure::legs: P(0, n) = std::sqrt(double(n) + 0.5); break;
      case Measure::legt: P(n % 2 == 0 ? 1 : 0, n) = std::sqrt((2.0 * double(n) + 1.0) / 2.0); break;
      case Measure::lagt: P(0, n) = std::sqrt(0.5); break;
      case Measure::fout: P(0, n) = n % 2 ? 0.0 : (n == 0 ? 1.0 : std::sqrt(2.0)); break;
      case Measure::glagt: break;
    }
  }
  return P;
}

/// Normal-plus-low-rank form of a HiPPO system, over one mode of each conjugate pair (M = N/2):
///
///   A = V diag(W) V^* + conj(V) diag(conj W) V^T - P0^T P0,   P0 = 2 Re(V P^T)^T,   B0 = 2 Re(V B),
///
/// equivalently A = 2 Re(V diag(W) V^*) - (2 Re(V P^T)) (2 Re(V P^T))^T, where the columns of V and
/// conj(V) together form a unitary matrix.
/// - W (M): eigenvalues of the normal part A + P0^T P0, those with imag <= 0, sorted by increasing
///   imaginary part (most negative first); Re(W) is the (constant) mean of the diagonal (-1/2 for legs).
/// - V (N x M): orthonormal eigenvectors. Canonical phase: the first component of each column whose
///   magnitude exceeds 1e-6 is real and positive. (The reference takes LAPACK's choice, which makes the
///   first component real with either sign, so V, P and B agree with it up to the sign of each mode.)
///   A zero eigenvalue pair (FouT's frequency 0) gets v = (a + i b)/sqrt2 for a real orthonormal basis
///   (a, b) of the null space, oriented like the reference's (e0 + i e1)/sqrt2.
/// - P (rank x M) = (V^* P0^T)^T: row r holds the r-th correction vector in the eigenbasis.
/// - B (M) = V^* B0, with imag(B) clipped to [-B_clip, B_clip] when B_clip is set (the reference's B_clip).
struct NPLR {
  VectorXc<double> W;  ///< M = N/2 eigenvalues (imag <= 0, increasing imag)
  MatrixXc<double> P;  ///< rank x M
  VectorXc<double> B;  ///< M
  MatrixXc<double> V;  ///< N x M
};

/// The NPLR form of `measure` (legs, legt, lagt or fout) for even N >= 2 and `rank` >= the measure's
/// minimum rank (0 means the minimum). The normal part is diagonalised in double by a self-adjoint
/// eigensolver applied to -i times its skew-symmetric part. `B_clip` (default 2, as the reference)
/// clips imag(B); pass std::nullopt for the unclipped V^* B0.
/// Call it as `nplr(measure, N)`: it is a function template (Real = double, the only type) so that only
/// the files that call it compile Eigen's complex eigensolver; as a plain inline function it cost every
/// file that includes this header about 10 s of compile time (GCC instantiates what an inline function
/// uses even when nothing calls it).
template <class Real = double>
NPLR nplr(Measure measure, Index N, Index rank = 0, std::optional<double> B_clip = 2.0) {
  static_assert(std::is_same_v<Real, double>, "hippo::nplr computes in double");
  const char* where = "hippo::nplr";
  detail::check_order(N, where, true);
  if (rank == 0) rank = minimum_rank(measure);
  if (B_clip) check(*B_clip >= 0 && !std::isnan(*B_clip), where, "B_clip", "a value >= 0", ssm::detail::concat(*B_clip));
  const Transition t = transition(measure, N);
  const MatrixX<double> P0 = rank_correction(measure, N, rank);
  const MatrixX<double> AP = t.A + P0.transpose() * P0;
  const double w_re = AP.diagonal().mean();
  // The skew part S = (AP - AP^T)/2; -i S is Hermitian with real eigenvalues in +- pairs.
  const MatrixX<double> S = 0.5 * (AP - AP.transpose());
  const MatrixXc<double> H = Complex<double>(0.0, -1.0) * S.cast<Complex<double>>();
  Eigen::SelfAdjointEigenSolver<MatrixXc<double>> solver(H);
  if (solver.info() != Eigen::Success) throw error("hippo::nplr: the eigensolver did not converge");
  const Index M = N / 2;
  NPLR out;
  out.W.resize(M);
  out.V = solver.eigenvectors().leftCols(M);  // eigenvalues come in increasing order
  for (Index m = 0; m < M; ++m) out.W(m) = Complex<double>(w_re, solver.eigenvalues()(m));

  // A zero pair: both its eigenvectors span a real 2-d null space; keep v = (a + i b)/sqrt2.
  const double zero_tol = 1e-4;
  if (M >= 2 && std::abs(solver.eigenvalues()(M - 2)) < zero_tol) {
    throw error("hippo::nplr: more than one zero eigenvalue pair in the normal part");
  }
  if (std::abs(solver.eigenvalues()(M - 1)) < zero_tol) {
    const auto u0 = solver.eigenvectors().col(M - 1);
    const auto u1 = solver.eigenvectors().col(M);
    MatrixX<double> candidates(N, 4);
    candidates << u0.real(), u0.imag(), u1.real(), u1.imag();
    // Real orthonormal basis by Gram-Schmidt over the candidates, largest first.
    VectorX<double> basis[2];
    int found = 0;
    for (int pass = 0; pass < 4 && found < 2; ++pass) {
      Index best = 0;
      double best_norm = -1;
      for (Index c = 0; c < 4; ++c) {
        VectorX<double> v = candidates.col(c);
        for (int j = 0; j < found; ++j) v -= basis[j].dot(v) * basis[j];
        if (v.norm() > best_norm) best_norm = v.norm(), best = c;
      }
      if (best_norm < 1e-8) break;
      VectorX<double> v = candidates.col(best);
      for (int j = 0; j < found; ++j) v -= basis[j].dot(v) * basis[j];
      basis[found++] = v / v.norm();
    }
    if (found != 2) throw error("hippo::nplr: could not resolve the zero eigenvalue pair");
    // Orient: a before b by the index of their first significant component, each positive there.
    auto first_significant = [](const VectorX<double>& v) {
      Index i = 0;
      while (i < v.size() && std::abs(v(i)) <= 1e-6) ++i;
      return i;
    };
    // Rotate the basis so that a has no component at b's leading index (makes it e0, e1 for FouT).
    const Index i0 = std::min(first_significant(basis[0]), first_significant(basis[1]));
    VectorX<double> a = basis[0] * basis[0](i0) + basis[1] * basis[1](i0);
    a.normalize();
    VectorX<double> b = basis[0] + basis[1];
    b -= a.dot(b) * a;
    if (b.norm() < 1e-8) b = basis[0] - basis[1], b -= a.dot(b) * a;
    b.normalize();
    if (b(first_significant(b)) < 0) b = -b;
    if (a(first_significant(a)) < 0) a = -a;
    out.V.col(M - 1) = (a.cast<Complex<double>>() + Complex<double>(0, 1) * b.cast<Complex<double>>()) / std::sqrt(2.0);
  }
  // Canonical phase: the first significant component of each eigenvector real and positive.
  for (Index m = 0; m < M; ++m) {
    auto v = out.V.col(m);
    const double threshold = 1e-6 * v.norm();
    Index i = 0;
    while (i < N - 1 && std::abs(v(i)) <= threshold) ++i;
    const Complex<double> phase = std::conj(v(i)) / std::abs(v(i));
    v *= phase;
    v(i) = Complex<double>(v(i).real(), 0.0);
  }
  out.B = out.V.adjoint() * t.B.cast<Complex<double>>();
  out.P = (out.V.adjoint() * P0.transpose().cast<Complex<double>>()).transpose();
  if (B_clip) {
    for (Index m = 0; m < M; ++m) {
      out.B(m) = Complex<double>(out.B(m).real(), std::clamp(out.B(m).imag(), -*B_clip, *B_clip));
    }
  }
  return out;
}

/// The diagonal (S4D) initialisations, as the reference's `dplr()` with a zero low-rank term.
/// With n = 0 .. N/2-1: A_n = -a_n - i b_n and
/// - lin:  a = 1/2, b = pi n                         (S4D-Lin)
/// - inv:  a = 1/2, b = (N/pi) (N/(2n+1) - 1)        (S4D-Inv)
/// - real: a = n + 1, b = 0                          (S4D-Real)
/// - legs: a = 1/2, b = -imag(W_n) of the LegS NPLR  (S4D-LegS)
/// B = 1 for lin, inv and real; for legs B is the LegS NPLR B with imag clipped to [-2, 2]
/// (so agrees with the reference up to the sign of each mode, see `NPLR`).
enum class DiagonalInit { lin, inv, real, legs };

/// The N/2 complex modes of S4D (one of each conjugate pair) and their B, in double.
struct DiagonalModes {
  VectorXc<double> A;  ///< N/2 continuous-time eigenvalues, Re < 0 (imag <= 0)
  VectorXc<double> B;  ///< N/2 input coefficients
};

/// The S4D initialisation `init` for state size N (even, >= 2; else ssm::error). See `DiagonalInit`.
/// A function template for the reason `nplr` is one (it calls it); call it as `diagonal_init(init, N)`.
template <class Real = double>
DiagonalModes diagonal_init(DiagonalInit init, Index N) {
  detail::check_order(N, "hippo::diagonal_init", true);
  const Index M = N / 2;
  const double pi = 3.14159265358979323846;
  DiagonalModes out{VectorXc<double>(M), VectorXc<double>::Ones(M)};
  switch (init) {
    case DiagonalInit::lin:
      for (Index n = 0; n < M; ++n) out.A(n) = Complex<double>(-0.5, -pi * double(n));
      break;
    case DiagonalInit::inv:
      for (Index n = 0; n < M; ++n)
        out.A(n) = Complex<double>(-0.5, -(double(N) / pi) * (double(N) / (1.0 + 2.0 * double(n)) - 1.0));
      break;
    case DiagonalInit::real:
      for (Index n = 0; n < M; ++n) out.A(n) = Complex<double>(-(1.0 + double(n)), 0.0);
      break;
    case DiagonalInit::legs: {
      const NPLR form = nplr<Real>(Measure::legs, N, 1, 2.0);
      for (Index n = 0; n < M; ++n) out.A(n) = Complex<double>(-0.5, form.W(n).imag());
      out.B = form.B;
      break;
    }
    default:
      throw error("hippo::diagonal_init: init: expected lin, inv, real or legs, got an invalid value");
  }
  return out;
}

/// H values of dt drawn log-uniform in [dt_min, dt_max]: dt = exp(log dt_min + U (log dt_max - log dt_min)),
/// U uniform in [0, 1) from `gen` (seed it for reproducible layers). Requires 0 < dt_min <= dt_max, H >= 0.
inline VectorX<double> log_uniform_dt(Index H, double dt_min, double dt_max, std::mt19937_64& gen) {
  const char* where = "hippo::log_uniform_dt";
  check(H >= 0, where, "H", ">= 0", ssm::detail::concat(H));
  check_positive(dt_min, where, "dt_min");
  check_positive(dt_max, where, "dt_max");
  check(dt_min <= dt_max, where, "dt_max", ssm::detail::concat(">= dt_min = ", dt_min), ssm::detail::concat(dt_max));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double lo = std::log(dt_min), hi = std::log(dt_max);
  VectorX<double> dt(H);
  for (Index h = 0; h < H; ++h) dt(h) = std::min(dt_max, std::max(dt_min, std::exp(lo + uniform(gen) * (hi - lo))));
  return dt;
}

}  // namespace ssm::hippo
