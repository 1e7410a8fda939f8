#pragma once
/// \file vandermonde.hpp
/// The convolution kernel of a diagonal state space model: for H channels of M complex modes,
///
///     K[l, h] = 2 Re sum_{n < M} W[h, n] z[h, n]^l,     l = 0 .. L-1        (an L x H sequence),
///
/// a Vandermonde matrix-vector product per channel. For S4D, z = Abar (the discrete eigenvalues, one
/// of each conjugate pair, hence the 2 Re) and W = C .* Bbar. The modes are given by their logarithms,
/// log z, because that is what is exact: log Abar = dt A for ZOH, and 2 atanh(dt A / 2) =
/// log((1 + dt A/2) / (1 - dt A/2)) for the bilinear transform.
///
/// How the powers stay accurate for L up to 2^20 and beyond: time is cut into blocks of Bk steps,
/// l = b Bk + j. Then K[b Bk + j] = 2 Re sum_n c_{b,n} z_n^j with c_{b,n} = W_n z_n^{b Bk}, which is the
/// product of an (L / Bk) x 2M real matrix [Re c, -Im c] with a 2M x Bk real matrix [Re z^j; Im z^j]:
/// one GEMM per channel (vectorised and cache-blocked by Eigen), 4 M L flops. The factors are made
/// in double: z^{b Bk} is exp(b Bk log z) computed directly every 32 blocks and by at most 31
/// multiplications by z^{Bk} = exp(Bk log z) in between, and z^j by at most 63 multiplications of
/// exp(j log z) taken at every 64th j: no chain of products longer than 63 (relative error
/// ~1e-14 in double), whatever L. Values
/// below sqrt(smallest normal T) (1e-19 in float) are set to zero before the GEMM: they cannot
/// contribute and would otherwise make the GEMM crawl through subnormal arithmetic.
///
/// Memory: the L x H output plus O(M (L / Bk + Bk)) scratch per thread, allocated before the parallel
/// region. Channels are spread across threads with OpenMP when `_OPENMP` is defined.

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <type_traits>

namespace ssm {

namespace detail {

/// Block length Bk for a kernel of length L: about sqrt(L), a multiple of 16, in [16, 256].
inline Index vandermonde_block(Index L) {
  Index b = 16;
  while (b < 256 && b * b < L) b *= 2;
  return b;
}

template <class T>
inline T flush_tiny(double v) {
  // sqrt of the smallest normal T: 2^-63 (float), 2^-511 (double).
  constexpr double tiny = std::is_same_v<T, float> ? 1.0842021724855044e-19 : 1.4916681462400413e-154;
  return std::abs(v) < tiny ? T(0) : static_cast<T>(v);
}

/// Per-thread scratch of `vandermonde_channel`.
template <class T>
struct VandermondeScratch {
  RowMatrixX<T> cfac;  ///< (L/Bk rounded up) x 2M: row b is [Re c_b, -Im c_b]
  MatrixX<T> vpow;     ///< 2M x min(Bk, L): column j is [Re z^j; Im z^j]
  VectorX<double> zr, zi, pr, pi, wr, wi;  ///< per-mode real and imaginary parts, so loops over modes vectorise
};

/// (pr + i pi) = exp(s * (lr + i li)) * (wr + i wi) for every mode: one exact exponential each.
/// s * li (the phase) and s * lr are formed as an unevaluated sum p + e (e = fma(s, l, -p), the
/// rounding error of the product): at s ~ 1e6 the rounding of the product alone would be a phase
/// error of s |li| eps, the error e is folded in to first order instead.
inline void exact_powers(const std::complex<double>* log_z, double s, const VectorX<double>& wr,
                         const VectorX<double>& wi, VectorX<double>& pr, VectorX<double>& pi) {
  for (Index n = 0; n < pr.size(); ++n) {
    const double lr = log_z[n].real(), li = log_z[n].imag();
    const double a = s * lr, a_err = std::fma(s, lr, -a);
    const double phase = s * li, phase_err = std::fma(s, li, -phase);
    const double mag = std::exp(a) * (1.0 + a_err);
    const double cos_p = std::cos(phase), sin_p = std::sin(phase);
    const double c = mag * (cos_p - phase_err * sin_p), d = mag * (sin_p + phase_err * cos_p);
    cmul(c, d, wr[n], wi[n], pr[n], pi[n]);
  }
}

/// (pr + i pi) *= (zr + i zi), mode by mode (a loop the compiler vectorises).
inline void multiply_powers(const VectorX<double>& zr, const VectorX<double>& zi, VectorX<double>& pr,
                            VectorX<double>& pi) {
  const Index M = pr.size();
  double* __restrict r = pr.data();
  double* __restrict i = pi.data();
  const double* __restrict a = zr.data();
  const double* __restrict b = zi.data();
  for (Index n = 0; n < M; ++n) cmul(r[n], i[n], a[n], b[n], r[n], i[n]);
}

/// One channel: writes K[0 .. L-1] (contiguous) for modes log_z[0 .. M-1] and weights w (already x2).
template <class T>
void vandermonde_channel(const std::complex<double>* log_z, const std::complex<double>* w, Index M, Index L,
                         Index Bk, VandermondeScratch<T>& s, T* out) {
  constexpr Index exact_every_j = 64;      // exp(j log z) exactly at these j, products in between
  constexpr Index exact_every_block = 32;  // exp(b Bk log z) exactly at these b, products in between
  const Index nb_full = L / Bk, rem = L % Bk, nb = nb_full + (rem > 0 ? 1 : 0);
  const Index cols = std::min(Bk, L);
  VectorX<double> &zr = s.zr, &zi = s.zi, &pr = s.pr, &pi = s.pi, &wr = s.wr, &wi = s.wi;
  // Powers z^j, j < Bk (weight 1).
  wr.setOnes();
  wi.setZero();
  exact_powers(log_z, 1.0, wr, wi, zr, zi);
  for (Index j = 0; j < cols; ++j) {
    if (j % exact_every_j == 0) {
      exact_powers(log_z, double(j), wr, wi, pr, pi);
    } else {
      multiply_powers(zr, zi, pr, pi);
    }
    T* v = s.vpow.col(j).data();
    for (Index n = 0; n < M; ++n) {
      v[n] = flush_tiny<T>(pr[n]);
      v[M + n] = flush_tiny<T>(pi[n]);
    }
  }
  // Block starts c_b = w z^{b Bk}, stepping by z^{Bk} (formed while the weights are still 1).
  exact_powers(log_z, double(Bk), wr, wi, zr, zi);
  for (Index n = 0; n < M; ++n) {
    wr[n] = w[n].real();
    wi[n] = w[n].imag();
  }
  for (Index b = 0; b < nb; ++b) {
    if (b % exact_every_block == 0) {
      exact_powers(log_z, double(b * Bk), wr, wi, pr, pi);
    } else {
      multiply_powers(zr, zi, pr, pi);
    }
    T* c = s.cfac.row(b).data();
    for (Index n = 0; n < M; ++n) {
      c[n] = flush_tiny<T>(pr[n]);
      c[M + n] = flush_tiny<T>(-pi[n]);
    }
  }
  if (nb_full > 0) {
    Eigen::Map<RowMatrixX<T>> full(out, nb_full, Bk);
    full.noalias() = s.cfac.topRows(nb_full) * s.vpow;
  }
  if (rem > 0) {
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> tail(out + nb_full * Bk, rem);
    tail.noalias() = s.cfac.row(nb_full) * s.vpow.leftCols(rem);
  }
}

}  // namespace detail

/// Writes K[l, h] = 2 Re sum_n W[h, n] exp(l log_z[h, n]) for l < L = K.rows() into `K` (L x H).
/// `log_z` and `W` are H x M complex (float or double; the powers are formed in double either way).
/// Throws ssm::error if the shapes disagree or an input is not finite. Modes with Re log z > 0 grow
/// without bound and overflow to inf for long L, as they must.
template <class T, class DLog, class DW>
void vandermonde_kernel_into(const Eigen::MatrixBase<DLog>& log_z, const Eigen::MatrixBase<DW>& W,
                             Eigen::Ref<Sequence<T>> K) {
  static_assert(is_supported_scalar_v<T>, "vandermonde_kernel: T must be float or double");
  const char* where = "vandermonde_kernel";
  check_shape(W, log_z.rows(), log_z.cols(), where, "W", "H x M, the shape of log_z");
  check(K.cols() == log_z.rows(), where, "K", detail::concat("one column per channel (", log_z.rows(), ")"),
        detail::concat(K.cols(), " columns"));
  check_finite(log_z, where, "log_z");
  check_finite(W, where, "W");
  const Index H = log_z.rows(), M = log_z.cols(), L = K.rows();
  if (L == 0 || H == 0) return;
  if (M == 0) {
    K.setZero();
    return;
  }
  // Double copies, rows = modes, so a channel's modes are contiguous.
  const MatrixXc<double> logs = log_z.template cast<std::complex<double>>().transpose();
  const MatrixXc<double> weights = (W.template cast<std::complex<double>>() * 2.0).transpose();
  const Index Bk = detail::vandermonde_block(L);
  const Index nb = (L + Bk - 1) / Bk;
  // A column of K is contiguous only when the Ref has unit inner stride (always: Ref's default).
  // Per-thread scratch is allocated here, before the region: nothing inside it allocates, except
  // possibly Eigen's GEMM workspace, whose exceptions RegionErrors carries out (core/parallel.hpp).
  const int team = detail::team_size(H > 1 && H * M * L > (Index(1) << 20), H);
  detail::PerThread<detail::VandermondeScratch<T>> scratch(team, [&] {
    return detail::VandermondeScratch<T>{RowMatrixX<T>(nb, 2 * M), MatrixX<T>(2 * M, std::min(Bk, L)),
                                         VectorX<double>(M), VectorX<double>(M), VectorX<double>(M),
                                         VectorX<double>(M), VectorX<double>(M), VectorX<double>(M)};
  });
  detail::RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
  {
    detail::VandermondeScratch<T>& s = scratch.local();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index h = 0; h < H; ++h) {
      errors.run([&] {
        detail::vandermonde_channel<T>(logs.col(h).data(), weights.col(h).data(), M, L, Bk, s, K.col(h).data());
      });
    }
  }
  errors.rethrow();
}

/// K[l, h] = 2 Re sum_n W[h, n] exp(l log_z[h, n]), l = 0 .. L-1: the L x H kernel (see the file
/// comment). `log_z` and `W` are H x M complex; L >= 0.
template <class T, class DLog, class DW>
Sequence<T> vandermonde_kernel(const Eigen::MatrixBase<DLog>& log_z, const Eigen::MatrixBase<DW>& W, Index L) {
  check(L >= 0, "vandermonde_kernel", "L", ">= 0", detail::concat(L));
  Sequence<T> K(L, log_z.rows());
  vandermonde_kernel_into<T>(log_z, W, K);
  return K;
}

}  // namespace ssm
