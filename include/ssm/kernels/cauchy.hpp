#pragma once
/// \file cauchy.hpp
/// The S4 convolution kernel of a DPLR system, by Cauchy sums at the roots of unity (Gu et al. 2021).
///
/// Channel h keeps M = N/2 complex modes (conjugates implied), A = diag(Lambda) - P P^* (rank r, see
/// `DPLRDiscrete` for the exact real-linear meaning), bilinear discretisation with step dt. Its kernel of
/// length L is K_l = 2 Re(C Abar^l Bbar), l = 0 .. L-1. With C_tilde = C (I - Abar^L), the generating
/// function at the L-th roots of unity z_k = exp(-2 pi i k / L) is exactly the DFT of K:
///
///   Khat(z) = 2/(1+z) [ k00 - k01 (I_r + k11)^{-1} k10 ](g),   g = (2/dt) (1-z)/(1+z) = i (2/dt) tan(pi k/L),
///   k_ab(g) = sum_n  v_n / (g - Lambda_n) + conj(v_n) / (g - conj(Lambda_n)),
///
/// with v = C_tilde o B (k00), C_tilde o P_s (k01), conj(P_q) o B (k10), conj(P_q) o P_s (k11).
/// Because g is imaginary, each conjugate pair folds into one term with one reciprocal:
///   v/(is - l) + conj(v)/(is - conj l) = (p + i s q) / ((|l|^2 - s^2) - 2 i Re(l) s),  q = 2 Re v, p = -2 Re(v conj l).
/// At the Nyquist node z = -1 (L even) g and 2/(1+z) are infinite but their product has the finite limit
/// (dt/2) I, so Khat(-1) = dt Re(sum_n C_tilde_n B_n): no division by zero. K = irfft_L(Khat) / L, for any L.
/// Cost O(H M r^2 L) time, memory O(L r^2) per thread plus the H x L output; channels run in parallel with OpenMP.

#include "ssm/core/error.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/types.hpp"
#include "ssm/discretize.hpp"

#include <cmath>
#include <complex>
#include <vector>

namespace ssm::kernels {

namespace detail {

/// Per-mode constants of the folded Cauchy sum for NV vectors: a = -2 Re(Lambda), c = |Lambda|^2, and p, q.
struct CauchyModes {
  Index NV = 0;
  std::vector<double> a2, c, p, q;  // p, q: mode-major, NV per mode
};

/// Accumulates, for W nodes with s[i], s2[i] = s[i]^2, the sums U_j = sum_n p_jn/den_n, V_j = sum_n q_jn/den_n
/// (complex; den_n = (c_n - s^2) + i a2_n s). out layout: [j][0: Ure, 1: Uim, 2: Vre, 3: Vim][i].
template <int NV, int W>
inline void cauchy_block(const CauchyModes& m, Index M, const double* s, const double* s2, double* out) {
  double acc[NV][4][W];
  for (int j = 0; j < NV; ++j)
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < W; ++i) acc[j][c][i] = 0.0;
  for (Index n = 0; n < M; ++n) {
    const double a2 = m.a2[std::size_t(n)], cn = m.c[std::size_t(n)];
    const double* p = &m.p[std::size_t(n * NV)];
    const double* q = &m.q[std::size_t(n * NV)];
    double x[W], y[W];
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (int i = 0; i < W; ++i) {
      const double dr = cn - s2[i];
      const double di = a2 * s[i];
      const double inv = 1.0 / (dr * dr + di * di);
      x[i] = dr * inv;   // 1/den = (dr - i di) / |den|^2
      y[i] = -di * inv;
    }
    for (int j = 0; j < NV; ++j) {
      const double pj = p[j], qj = q[j];
#if defined(_OPENMP)
#pragma omp simd
#endif
      for (int i = 0; i < W; ++i) {
        acc[j][0][i] += pj * x[i];
        acc[j][1][i] += pj * y[i];
        acc[j][2][i] += qj * x[i];
        acc[j][3][i] += qj * y[i];
      }
    }
  }
  for (int j = 0; j < NV; ++j)
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < W; ++i) out[(j * 4 + c) * W + i] = acc[j][c][i];
}

/// Runtime-NV version of `cauchy_block` for ranks above 2.
template <int W>
inline void cauchy_block_dynamic(const CauchyModes& m, Index M, const double* s, const double* s2, double* out) {
  const Index NV = m.NV;
  std::fill(out, out + NV * 4 * W, 0.0);
  for (Index n = 0; n < M; ++n) {
    const double a2 = m.a2[std::size_t(n)], cn = m.c[std::size_t(n)];
    double x[W], y[W];
    for (int i = 0; i < W; ++i) {
      const double dr = cn - s2[i];
      const double di = a2 * s[i];
      const double inv = 1.0 / (dr * dr + di * di);
      x[i] = dr * inv;
      y[i] = -di * inv;
    }
    for (Index j = 0; j < NV; ++j) {
      const double pj = m.p[std::size_t(n * NV + j)], qj = m.q[std::size_t(n * NV + j)];
      double* o = out + j * 4 * W;
      for (int i = 0; i < W; ++i) {
        o[i] += pj * x[i];
        o[W + i] += pj * y[i];
        o[2 * W + i] += qj * x[i];
        o[3 * W + i] += qj * y[i];
      }
    }
  }
}

/// Solves (I + k11) X = k10 in place for an r x r complex system (partial pivoting), then returns
/// k00 - k01 X. k11 is r x r row-major, k01 and k10 have r entries. Small r: no allocation.
inline std::complex<double> woodbury(std::complex<double> k00, const std::complex<double>* k01,
                                     const std::complex<double>* k10, const std::complex<double>* k11, Index r,
                                     std::complex<double>* work) {
  if (r == 1) return k00 - k01[0] * k10[0] / (1.0 + k11[0]);
  if (r == 2) {
    const std::complex<double> a = 1.0 + k11[0], b = k11[1], c = k11[2], d = 1.0 + k11[3];
    const std::complex<double> det = a * d - b * c;
    const std::complex<double> x0 = (d * k10[0] - b * k10[1]) / det;
    const std::complex<double> x1 = (a * k10[1] - c * k10[0]) / det;
    return k00 - k01[0] * x0 - k01[1] * x1;
  }
  // work: r x (r + 1) augmented matrix, row-major.
  for (Index i = 0; i < r; ++i) {
    for (Index j = 0; j < r; ++j) work[i * (r + 1) + j] = k11[i * r + j] + (i == j ? 1.0 : 0.0);
    work[i * (r + 1) + r] = k10[i];
  }
  for (Index col = 0; col < r; ++col) {
    Index piv = col;
    for (Index i = col + 1; i < r; ++i)
      if (std::abs(work[i * (r + 1) + col]) > std::abs(work[piv * (r + 1) + col])) piv = i;
    if (piv != col)
      for (Index j = 0; j <= r; ++j) std::swap(work[col * (r + 1) + j], work[piv * (r + 1) + j]);
    const std::complex<double> inv = 1.0 / work[col * (r + 1) + col];
    for (Index i = col + 1; i < r; ++i) {
      const std::complex<double> f = work[i * (r + 1) + col] * inv;
      for (Index j = col; j <= r; ++j) work[i * (r + 1) + j] -= f * work[col * (r + 1) + j];
    }
  }
  std::complex<double> result = k00;
  for (Index i = r - 1; i >= 0; --i) {
    std::complex<double> v = work[i * (r + 1) + r];
    for (Index j = i + 1; j < r; ++j) v -= work[i * (r + 1) + j] * work[j * (r + 1) + r];
    v /= work[i * (r + 1) + i];
    work[i * (r + 1) + r] = v;
    result -= k01[i] * v;
  }
  return result;
}

}  // namespace detail

/// The S4 DPLR convolution kernels (see the file comment): returns K, L x H (column h is channel h's
/// kernel K_l = 2 Re(C Abar^l Bbar), l = 0 .. L-1), given C_tilde = C (I - Abar^L) for this L
/// (`dplr_c_tilde`). Lambda, B, C_tilde: H x M; P: rank matrices H x M (`LowRank`); dt: H entries > 0;
/// Re(Lambda) < 0; L >= 1 (any length). Sums in double, the inverse FFT in T.
template <class T>
MatrixX<T> dplr_kernel(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B,
                       const MatrixXc<T>& C_tilde, const VectorX<T>& dt, Index L) {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");
  const char* where = "dplr_kernel";
  check_dplr(Lambda, P, B, dt, where);
  check_shape(C_tilde, Lambda.rows(), Lambda.cols(), where, "C_tilde", "H x M, the shape of Lambda");
  check_finite(C_tilde, where, "C_tilde");
  check(L >= 1 && L <= (Index(1) << 30), where, "L", "a length in [1, 2^30]", ssm::detail::concat(L));
  const Index H = Lambda.rows(), M = Lambda.cols(), r = Index(P.size()), NV = (1 + r) * (1 + r);
  const Index bins = L / 2 + 1;
  const bool has_nyquist = L % 2 == 0;
  const Index regular = has_nyquist ? bins - 1 : bins;  // nodes with a finite g
  constexpr int W = 8;
  const Index blocks = (regular + W - 1) / W;
  const auto plan = fft::real_fft<T>(L);
  MatrixX<T> K(L, H);
  const double pi = 3.14159265358979323846;
  // tan(pi k / L) for the regular nodes, shared by all channels (padded to whole blocks).
  std::vector<double> tan_k(std::size_t(blocks * W), 0.0);
  for (Index k = 0; k < regular; ++k) tan_k[std::size_t(k)] = std::tan(pi * double(k) / double(L));

#if defined(_OPENMP)
#pragma omp parallel if (H > 1 && H * L * M > 65536)
#endif
  {
    detail::CauchyModes modes;
    modes.NV = NV;
    modes.a2.resize(std::size_t(M));
    modes.c.resize(std::size_t(M));
    modes.p.resize(std::size_t(M * NV));
    modes.q.resize(std::size_t(M * NV));
    std::vector<double> s(W), s2(W), block(static_cast<std::size_t>(NV * 4 * W));
    std::vector<std::complex<double>> k(static_cast<std::size_t>(NV)), work(static_cast<std::size_t>(r * (r + 1)));
    std::vector<std::complex<double>> k10(static_cast<std::size_t>(r)), k11(static_cast<std::size_t>(r * r));
    std::vector<std::complex<double>> b_side(static_cast<std::size_t>(1 + r)), c_side(static_cast<std::size_t>(1 + r));
    fft::Buffer<std::complex<T>> spectrum(bins);
    fft::Buffer<T> kernel(L);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index h = 0; h < H; ++h) {
      const double step = double(dt(h));
      for (Index n = 0; n < M; ++n) {
        const std::complex<double> lambda(Lambda(h, n));
        modes.a2[std::size_t(n)] = -2.0 * lambda.real();
        modes.c[std::size_t(n)] = std::norm(lambda);
        b_side[0] = std::complex<double>(B(h, n));
        c_side[0] = std::complex<double>(C_tilde(h, n));
        for (Index q = 0; q < r; ++q) {
          b_side[std::size_t(1 + q)] = std::complex<double>(P[std::size_t(q)](h, n));
          c_side[std::size_t(1 + q)] = std::conj(b_side[std::size_t(1 + q)]);
        }
        for (Index i = 0; i <= r; ++i)
          for (Index j = 0; j <= r; ++j) {
            const std::complex<double> v = c_side[std::size_t(i)] * b_side[std::size_t(j)];
            const std::size_t idx = std::size_t(n * NV + i * (1 + r) + j);
            modes.q[idx] = 2.0 * v.real();
            modes.p[idx] = -2.0 * (v * std::conj(lambda)).real();
          }
      }
      for (Index blk = 0; blk < blocks; ++blk) {
        for (int i = 0; i < W; ++i) {
          s[std::size_t(i)] = (2.0 / step) * tan_k[std::size_t(blk * W + i)];
          s2[std::size_t(i)] = s[std::size_t(i)] * s[std::size_t(i)];
        }
        if (r == 1) {
          detail::cauchy_block<4, W>(modes, M, s.data(), s2.data(), block.data());
        } else if (r == 2) {
          detail::cauchy_block<9, W>(modes, M, s.data(), s2.data(), block.data());
        } else {
          detail::cauchy_block_dynamic<W>(modes, M, s.data(), s2.data(), block.data());
        }
        const Index count = std::min<Index>(W, regular - blk * W);
        for (Index i = 0; i < count; ++i) {
          const double si = s[std::size_t(i)];
          for (Index j = 0; j < NV; ++j) {
            const double* o = &block[std::size_t(j * 4 * W)];
            // k_j = U_j + i s V_j
            k[std::size_t(j)] = {o[i] - si * o[3 * W + i], o[W + i] + si * o[2 * W + i]};
          }
          // Layout of k: index i*(1+r)+j; row 0 = C-side C_tilde, rows 1.. = conj(P_q).
          const std::complex<double>* k01 = &k[1];
          for (Index q = 0; q < r; ++q) {
            k10[std::size_t(q)] = k[std::size_t((1 + q) * (1 + r))];
            for (Index t = 0; t < r; ++t) k11[std::size_t(q * r + t)] = k[std::size_t((1 + q) * (1 + r) + 1 + t)];
          }
          const std::complex<double> reduced = detail::woodbury(k[0], k01, k10.data(), k11.data(), r, work.data());
          const Index node = blk * W + i;
          const std::complex<double> factor(1.0, tan_k[std::size_t(node)]);  // 2 / (1 + z_k)
          spectrum[node] = std::complex<T>(factor * reduced / double(L));
        }
      }
      if (has_nyquist) {
        double acc = 0;
        for (Index n = 0; n < M; ++n) acc += (std::complex<double>(C_tilde(h, n)) * std::complex<double>(B(h, n))).real();
        spectrum[bins - 1] = std::complex<T>(T(step * acc / double(L)), T(0));
      }
      plan->inverse(spectrum, kernel);
      for (Index l = 0; l < L; ++l) K(l, h) = kernel[l];
    }
  }
  return K;
}

/// C_tilde = C (I - Abar^L) for each channel, as the complex row with 2 Re(C_tilde x) = 2 Re(C x) - 2 Re(C Abar^L x)
/// for all x (Abar is real-linear on C^M, see `DPLRDiscrete`). Abar^L is formed in double from the real
/// 2M x 2M matrix of Abar by repeated squaring: O(H M^3 log L). C: H x M; returns H x M.
template <class T>
MatrixXc<T> dplr_c_tilde(const DPLRDiscrete<T>& discrete, const MatrixXc<T>& C, Index L) {
  const char* where = "dplr_c_tilde";
  check_shape(C, discrete.channels(), discrete.modes(), where, "C", "H x M, the shape of the system");
  check_finite(C, where, "C");
  check(L >= 0, where, "L", ">= 0", ssm::detail::concat(L));
  const Index H = discrete.channels(), M = discrete.modes();
  MatrixXc<T> out(H, M);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1 && M >= 8)
#endif
  for (Index h = 0; h < H; ++h) {
    // The functional x -> 2 Re(C x) on [Re x; Im x] is the row 2 [Re C, -Im C].
    Eigen::RowVectorXd f(2 * M);
    for (Index n = 0; n < M; ++n) {
      const std::complex<double> c(C(h, n));
      f(n) = 2.0 * c.real();
      f(M + n) = -2.0 * c.imag();
    }
    MatrixX<double> power = dplr_transition_real(discrete, h);
    Eigen::RowVectorXd g = f;  // g = f Abar^L by binary powering
    for (Index e = L; e > 0; e >>= 1) {
      if (e & 1) g = g * power;
      if (e > 1) power = power * power;
    }
    for (Index n = 0; n < M; ++n) {
      // 2 Re(C' x) = g [Re x; Im x]  =>  C' = (g_re - i g_im) / 2 with g = [g_re, g_im].
      const std::complex<double> c_power(0.5 * g(n), -0.5 * g(M + n));
      out(h, n) = std::complex<T>(std::complex<double>(C(h, n)) - c_power);
    }
  }
  return out;
}

}  // namespace ssm::kernels
