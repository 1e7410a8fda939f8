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
/// Cost O(H M r^2 L) time; memory per thread O(L + 256 M + M r^2) plus the L x H output (never H x M x L);
/// channels run in parallel with OpenMP. Rank 1 has a fused SIMD path (one reciprocal and 16 multiply-adds
/// per node and mode, lanes = Eigen's packet size); higher ranks evaluate the sums as a blocked GEMM.
/// Measured (H = 256, N = 64, L = 16384, rank 1, double, one thread, thread CPU time): 56 ms with
/// -march=native (AVX-512), 260 ms with the x86-64 baseline (SSE2, no FMA): build with -march=native
/// (or at least AVX2 + FMA) for speed. A freshly allocated 32 MB result adds page-fault time on top;
/// `dplr_kernel_into` writes into a reused buffer instead.

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/types.hpp"
#include "ssm/discretize.hpp"

#include <Eigen/QR>

#include <cmath>
#include <complex>
#include <vector>

namespace ssm::kernels {

namespace detail {

/// The folded Cauchy sums of one channel over a block of nodes, as one matrix product:
/// with den_n(s) = (c_n - s^2) + i a2_n s (c = |Lambda|^2, a2 = -2 Re Lambda), X + i Y = 1/den (nodes x M),
/// and the per-mode numerator coefficients PQ = [p_0 .. p_{NV-1}, q_0 .. q_{NV-1}] (M x 2 NV),
///   [X; Y] PQ = [Re U, Re V; Im U, Im V],   U_j = sum_n p_jn / den_n,  V_j = sum_n q_jn / den_n,
/// and k_j(s) = U_j + i s V_j. The reciprocals are a contiguous, vectorisable loop; the sums a GEMM.
struct CauchyBlock {
  MatrixX<double> XY;      ///< 2 NB x M
  MatrixX<double> sums;    ///< 2 NB x 2 NV
  VectorX<double> a2, c;   ///< M
  MatrixX<double> PQ;      ///< M x 2 NV

  CauchyBlock(Index NB, Index M, Index NV) : XY(2 * NB, M), sums(2 * NB, 2 * NV), a2(M), c(M), PQ(M, 2 * NV) {}

  /// Fills `sums` for the `count` <= NB nodes with abscissae s[0 .. count).
  void evaluate(const double* s, Index count) {
    const Index NB = XY.rows() / 2, M = XY.cols();
    for (Index n = 0; n < M; ++n) {
      double* x = XY.col(n).data();
      double* y = x + NB;
      const double cn = c(n), an = a2(n);
      for (Index i = 0; i < count; ++i) {
        const double dr = cn - s[i] * s[i];
        const double di = an * s[i];
        const double inv = 1.0 / (dr * dr + di * di);
        x[i] = dr * inv;
        y[i] = -di * inv;
      }
      for (Index i = count; i < NB; ++i) x[i] = y[i] = 0.0;
    }
    sums.noalias() = XY * PQ;
  }
};

/// Rank-1 fast path: the folded Cauchy sums and the Woodbury reduction for W nodes at once, with the
/// W lanes in SIMD registers (W = the packet size of the instruction set Eigen is compiled for)
/// and no complex library calls. Inputs per mode n: a2 = -2 Re Lambda, c = |Lambda|^2, p[4], q[4]
/// (vectors 00, 01, 10, 11). Writes Khat / L at the W nodes into re, im.
template <int W>
inline void cauchy_rank1_block(const double* a2, const double* c, const double* p, const double* q, Index M,
                               const double* s_in, const double* t_in, double inv_L, double* re, double* im) {
  using A = Eigen::Array<double, W, 1>;
  const A s = Eigen::Map<const A>(s_in), s2 = s * s;
  A acc[16];
  for (auto& v : acc) v.setZero();
  for (Index n = 0; n < M; ++n) {
    const A dr = c[n] - s2;
    const A di = a2[n] * s;
    const A inv = (dr * dr + di * di).inverse();
    const A x = dr * inv, y = -di * inv;
    const double* pn = p + 4 * n;
    const double* qn = q + 4 * n;
    for (int j = 0; j < 4; ++j) {
      acc[4 * j + 0] += pn[j] * x;
      acc[4 * j + 1] += pn[j] * y;
      acc[4 * j + 2] += qn[j] * x;
      acc[4 * j + 3] += qn[j] * y;
    }
  }
  // k_j = U_j + i s V_j, U = acc[4j] + i acc[4j+1], V = acc[4j+2] + i acc[4j+3].
  A kr[4], ki[4];
  for (int j = 0; j < 4; ++j) {
    kr[j] = acc[4 * j] - s * acc[4 * j + 3];
    ki[j] = acc[4 * j + 1] + s * acc[4 * j + 2];
  }
  // reduced = k00 - k01 k10 / (1 + k11)
  A nr, ni;
  cmul(kr[1], ki[1], kr[2], ki[2], nr, ni);
  const A dr = 1.0 + kr[3], di = ki[3];
  const A inv = (dr * dr + di * di).inverse();
  const A qr = (nr * dr + ni * di) * inv, qi = (ni * dr - nr * di) * inv;
  const A rr = kr[0] - qr, ri = ki[0] - qi;
  // times 2/(1+z) = 1 + i tan(pi k / L), and 1/L for the unnormalised inverse FFT.
  const A t = Eigen::Map<const A>(t_in);
  Eigen::Map<A> out_re(re), out_im(im);
  out_re = (rr - t * ri) * inv_L;
  out_im = (ri + t * rr) * inv_L;
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

/// Per-thread scratch of `dplr_kernel_into`, allocated before its parallel region.
template <class T>
struct CauchyScratch {
  CauchyBlock cauchy;
  std::vector<double> fast_a2, fast_c, fast_p, fast_q, s;
  std::vector<std::complex<double>> k, work, k10, k11, b_side, c_side;
  fft::Buffer<std::complex<T>> spectrum;
  fft::Buffer<T> kernel;

  CauchyScratch(Index NB, Index M, Index r, Index L)
      : cauchy(NB, M, (1 + r) * (1 + r)),
        fast_a2(std::size_t(M)),
        fast_c(std::size_t(M)),
        fast_p(std::size_t(4 * M)),
        fast_q(std::size_t(4 * M)),
        s(std::size_t(NB)),
        k(std::size_t((1 + r) * (1 + r))),
        work(std::size_t(r * (r + 1))),
        k10(std::size_t(r)),
        k11(std::size_t(r * r)),
        b_side(std::size_t(1 + r)),
        c_side(std::size_t(1 + r)),
        spectrum(L / 2 + 1),
        kernel(L) {}
};

}  // namespace detail

template <class T>
void dplr_kernel_into(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B,
                      const MatrixXc<T>& C_tilde, const VectorX<T>& dt, Eigen::Ref<MatrixX<T>> K);

/// The S4 DPLR convolution kernels (see the file comment): returns K, L x H (column h is channel h's
/// kernel K_l = 2 Re(C Abar^l Bbar), l = 0 .. L-1), given C_tilde = C (I - Abar^L) for this L
/// (`dplr_c_tilde`). Lambda, B, C_tilde: H x M; P: rank matrices H x M (`LowRank`); dt: H entries > 0;
/// Re(Lambda) < 0; L >= 1 (any length). Sums in double, the inverse FFT in T.
template <class T>
MatrixX<T> dplr_kernel(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B,
                       const MatrixXc<T>& C_tilde, const VectorX<T>& dt, Index L) {
  check(L >= 1 && L <= (Index(1) << 30), "dplr_kernel", "L", "a length in [1, 2^30]", ssm::detail::concat(L));
  MatrixX<T> K(L, Lambda.rows());
  dplr_kernel_into<T>(Lambda, P, B, C_tilde, dt, K);
  return K;
}

/// As `dplr_kernel`, writing into caller-owned storage K (L x H, L = K.rows()): lets a caller reuse one
/// buffer across calls (a fresh multi-megabyte result costs page faults comparable to the sums themselves).
template <class T>
void dplr_kernel_into(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B,
                      const MatrixXc<T>& C_tilde, const VectorX<T>& dt, Eigen::Ref<MatrixX<T>> K) {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");
  const char* where = "dplr_kernel";
  const Index L = K.rows();
  check(K.cols() == Lambda.rows(), where, "K", ssm::detail::concat("L x ", Lambda.rows(), " (one column per channel)"),
        shape_string(K.rows(), K.cols()));
  check_dplr(Lambda, P, B, dt, where);
  check_shape(C_tilde, Lambda.rows(), Lambda.cols(), where, "C_tilde", "H x M, the shape of Lambda");
  check_finite(C_tilde, where, "C_tilde");
  check(L >= 1 && L <= (Index(1) << 30), where, "L", "a length in [1, 2^30]", ssm::detail::concat(L));
  const Index H = Lambda.rows(), M = Lambda.cols(), r = Index(P.size()), NV = (1 + r) * (1 + r);
  const Index bins = L / 2 + 1;
  const bool has_nyquist = L % 2 == 0;
  const Index regular = has_nyquist ? bins - 1 : bins;  // nodes with a finite g
  const Index NB = std::min<Index>(256, regular);
  constexpr Index FW = Eigen::internal::packet_traits<double>::size;  // lanes of the rank-1 fast path  // nodes per block: the block's [X; Y] stays in L2
  const auto plan = fft::real_fft<T>(L);
  const double pi = 3.14159265358979323846;
  // tan(pi k / L) for the regular nodes, shared by all channels (padded to whole blocks).
  std::vector<double> tan_k(static_cast<std::size_t>(bins), 0.0);
  for (Index k = 0; k < regular; ++k) tan_k[std::size_t(k)] = std::tan(pi * double(k) / double(L));

  const int team = ssm::detail::team_size(H > 1 && H * L * M > 65536, H);
  ssm::detail::PerThread<detail::CauchyScratch<T>> scratch(team, [&] { return detail::CauchyScratch<T>(NB, M, r, L); });
  ssm::detail::RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
  {
    detail::CauchyScratch<T>& sc = scratch.local();
    detail::CauchyBlock& cauchy = sc.cauchy;
    std::vector<double>&fast_a2 = sc.fast_a2, &fast_c = sc.fast_c, &fast_p = sc.fast_p, &fast_q = sc.fast_q, &s = sc.s;
    std::vector<std::complex<double>>&k = sc.k, &work = sc.work, &k10 = sc.k10, &k11 = sc.k11;
    std::vector<std::complex<double>>&b_side = sc.b_side, &c_side = sc.c_side;
    fft::Buffer<std::complex<T>>& spectrum = sc.spectrum;
    fft::Buffer<T>& kernel = sc.kernel;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index h = 0; h < H; ++h) {
      errors.run([&] {
        const double step = double(dt(h));
        for (Index n = 0; n < M; ++n) {
          const std::complex<double> lambda(Lambda(h, n));
          cauchy.a2(n) = -2.0 * lambda.real();
          cauchy.c(n) = std::norm(lambda);
          b_side[0] = std::complex<double>(B(h, n));
          c_side[0] = std::complex<double>(C_tilde(h, n));
          for (Index q = 0; q < r; ++q) {
            b_side[std::size_t(1 + q)] = std::complex<double>(P[std::size_t(q)](h, n));
            c_side[std::size_t(1 + q)] = std::conj(b_side[std::size_t(1 + q)]);
          }
          for (Index i = 0; i <= r; ++i)
            for (Index j = 0; j <= r; ++j) {
              const std::complex<double> v = cmul(c_side[std::size_t(i)], b_side[std::size_t(j)]);
              const Index idx = i * (1 + r) + j;
              cauchy.PQ(n, idx) = -2.0 * re_conj_mul(lambda, v);  // p = -2 Re(v conj(lambda))
              cauchy.PQ(n, NV + idx) = 2.0 * v.real();                    // q
            }
        }
        if (r == 1) {
          for (Index n = 0; n < M; ++n) {
            fast_a2[std::size_t(n)] = cauchy.a2(n);
            fast_c[std::size_t(n)] = cauchy.c(n);
            for (Index j = 0; j < 4; ++j) {
              fast_p[std::size_t(4 * n + j)] = cauchy.PQ(n, j);
              fast_q[std::size_t(4 * n + j)] = cauchy.PQ(n, 4 + j);
            }
          }
          for (Index start = 0; start < regular; start += FW) {
            double sv[FW], tv[FW], re[FW], im[FW];
            for (Index i = 0; i < FW; ++i) {
              const Index node = std::min(start + i, regular - 1);  // pad the last block with a valid node
              tv[i] = tan_k[std::size_t(node)];
              sv[i] = (2.0 / step) * tv[i];
            }
            detail::cauchy_rank1_block<FW>(fast_a2.data(), fast_c.data(), fast_p.data(), fast_q.data(), M, sv, tv,
                                           1.0 / double(L), re, im);
            const Index count = std::min<Index>(FW, regular - start);
            for (Index i = 0; i < count; ++i) spectrum[start + i] = std::complex<T>(T(re[i]), T(im[i]));
          }
        }
        for (Index start = 0; r != 1 && start < regular; start += NB) {
          const Index count = std::min<Index>(NB, regular - start);
          for (Index i = 0; i < count; ++i) s[std::size_t(i)] = (2.0 / step) * tan_k[std::size_t(start + i)];
          cauchy.evaluate(s.data(), count);
          const MatrixX<double>& sums = cauchy.sums;
          for (Index i = 0; i < count; ++i) {
            const double si = s[std::size_t(i)];
            for (Index j = 0; j < NV; ++j) {
              // k_j = U_j + i s V_j
              const std::complex<double> U(sums(i, j), sums(NB + i, j)), V(sums(i, NV + j), sums(NB + i, NV + j));
              k[std::size_t(j)] = std::complex<double>(U.real() - si * V.imag(), U.imag() + si * V.real());
            }
            // k is (1+r) x (1+r) row-major: row 0 on the C_tilde side, rows 1.. on the conj(P_q) side.
            const std::complex<double>* k01 = &k[1];
            for (Index q = 0; q < r; ++q) {
              k10[std::size_t(q)] = k[std::size_t((1 + q) * (1 + r))];
              for (Index t = 0; t < r; ++t) k11[std::size_t(q * r + t)] = k[std::size_t((1 + q) * (1 + r) + 1 + t)];
            }
            const std::complex<double> reduced = detail::woodbury(k[0], k01, k10.data(), k11.data(), r, work.data());
            const Index node = start + i;
            const std::complex<double> factor(1.0, tan_k[std::size_t(node)]);  // 2 / (1 + z_k)
            spectrum[node] = std::complex<T>(cmul(factor, reduced) / double(L));
          }
        }
        if (has_nyquist) {
          double acc = 0;
          for (Index n = 0; n < M; ++n) acc += re_mul(std::complex<double>(C_tilde(h, n)), std::complex<double>(B(h, n)));
          spectrum[bins - 1] = std::complex<T>(T(step * acc / double(L)), T(0));
        }
        plan->inverse(spectrum, kernel);
        for (Index l = 0; l < L; ++l) K(l, h) = kernel[l];
      });
    }
  }
  errors.rethrow();
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
  // Per-thread work space, allocated before the parallel region (core/parallel.hpp): the products
  // write into preallocated matrices, so nothing inside the region allocates but, for large M, Eigen's
  // GEMM workspace, whose exceptions RegionErrors carries out.
  struct Scratch {
    Eigen::RowVectorXd g, g_next;
    MatrixX<double> power, product;
    std::vector<std::complex<T>> x;
    std::vector<T> step;
  };
  const int team = ssm::detail::team_size(H > 1 && M >= 8, H);
  ssm::detail::PerThread<Scratch> scratch(team, [&] {
    return Scratch{Eigen::RowVectorXd(2 * M), Eigen::RowVectorXd(2 * M), MatrixX<double>(2 * M, 2 * M),
                   MatrixX<double>(2 * M, 2 * M), std::vector<std::complex<T>>(std::size_t(M)),
                   std::vector<T>(std::size_t(2 * discrete.rank()))};
  });
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
        // The functional x -> 2 Re(C x) on [Re x; Im x] is the row g = 2 [Re C, -Im C].
        for (Index n = 0; n < M; ++n) {
          const std::complex<double> c(C(h, n));
          s.g(n) = 2.0 * c.real();
          s.g(M + n) = -2.0 * c.imag();
        }
        dplr_transition_real_into(discrete, h, s.power, s.x.data(), s.step.data());
        for (Index e = L; e > 0; e >>= 1) {  // g = f Abar^L by binary powering
          if (e & 1) {
            s.g_next.noalias() = s.g * s.power;
            s.g.swap(s.g_next);
          }
          if (e > 1) {
            s.product.noalias() = s.power * s.power;
            s.power.swap(s.product);
          }
        }
        for (Index n = 0; n < M; ++n) {
          // 2 Re(C' x) = g [Re x; Im x]  =>  C' = (g_re - i g_im) / 2 with g = [g_re, g_im].
          const std::complex<double> c_power(0.5 * s.g(n), -0.5 * s.g(M + n));
          out(h, n) = std::complex<T>(std::complex<double>(C(h, n)) - c_power);
        }
      });
    }
  }
  errors.rethrow();
  return out;
}

/// Inverse of `dplr_c_tilde`: recovers the true C from C_tilde = C (I - Abar^L), for each channel.
///
/// This is what loading a reference checkpoint needs: state-spaces/s4's SSMKernelDPLR overwrites its C
/// parameter in place with C_tilde for its buffer `l_kernel` (`_setup_C`; doubling the length multiplies
/// by I + Abar^L, so the stored value is always C (I - Abar^{l_kernel})), and its step mode solves back.
///
/// Math, per channel h: C enters the output only through 2 Re(C x), the real row f = 2 [Re C, -Im C]
/// acting on [Re x; Im x]. With G the real 2M x 2M matrix of Abar (`dplr_transition_real`), the row of
/// C_tilde is f_tilde = f (I - G^L), so
///     (I - G^L)^T f^T = f_tilde^T,    C = (f_{0..M-1} - i f_{M..2M-1}) / 2.
/// This is the reference's complex N x N solve with (I - dA^L)^T, written over one mode of each
/// conjugate pair. G^L is formed in double by repeated squaring (pass a double system: a float Abar raised
/// to the L-th power loses ~L eps_float); the solve is a column-pivoted Householder QR of (I - G^L)^T.
///
/// Conditioning: the solve is ill-posed when an eigenvalue of Abar^L is near 1 (a mode that barely decays
/// over L steps: small dt, tiny |Re lambda|, short L); the error in C is about cond(I - G^L) times the
/// error in C_tilde (for a float checkpoint, its float rounding). Throws ssm::error naming the channel when
/// the reciprocal condition estimate min|R_ii| / max|R_ii| of that QR (rank-revealing; exactly 0 for an
/// undamped mode) is <= `min_rcond` (default 1e-12: below it even double leaves no correct digits). L = 0 means C_tilde was never formed (the reference's l_kernel = 0): C_tilde
/// is returned unchanged. C_tilde: H x M; returns H x M.
template <class T>
MatrixXc<T> dplr_c_from_c_tilde(const DPLRDiscrete<T>& discrete, const MatrixXc<T>& C_tilde, Index L,
                                double min_rcond = 1e-12) {
  const char* where = "dplr_c_from_c_tilde";
  check_shape(C_tilde, discrete.channels(), discrete.modes(), where, "C_tilde", "H x M, the shape of the system");
  check_finite(C_tilde, where, "C_tilde");
  check(L >= 0, where, "L", ">= 0 (the reference's l_kernel)", ssm::detail::concat(L));
  if (L == 0) return C_tilde;
  const Index H = discrete.channels(), M = discrete.modes();
  MatrixXc<T> out(H, M);
  for (Index h = 0; h < H; ++h) {
    MatrixX<double> base = dplr_transition_real(discrete, h);
    MatrixX<double> power = MatrixX<double>::Identity(2 * M, 2 * M);  // G^L by binary powering
    for (Index e = L; e > 0; e >>= 1) {
      if (e & 1) power = power * base;
      if (e > 1) base = base * base;
    }
    const MatrixX<double> system = (MatrixX<double>::Identity(2 * M, 2 * M) - power).transpose();
    const Eigen::ColPivHouseholderQR<MatrixX<double>> qr(system);
    const VectorX<double> r = qr.matrixR().diagonal().cwiseAbs();
    const double rcond = r.maxCoeff() > 0 ? r.minCoeff() / r.maxCoeff() : 0.0;
    check(rcond > min_rcond, where, "C_tilde",
          ssm::detail::concat("I - Abar^L well conditioned (reciprocal condition > ", min_rcond,
                              "), so that C is determined by C_tilde"),
          ssm::detail::concat("reciprocal condition ", rcond, " in channel ", h, " for L = ", L,
                              " (a mode of Abar^L is near 1)"));
    VectorX<double> f_tilde(2 * M);
    for (Index n = 0; n < M; ++n) {
      const std::complex<double> c(C_tilde(h, n));
      f_tilde(n) = 2.0 * c.real();
      f_tilde(M + n) = -2.0 * c.imag();
    }
    const VectorX<double> f = qr.solve(f_tilde);
    for (Index n = 0; n < M; ++n) out(h, n) = std::complex<T>(std::complex<double>(0.5 * f(n), -0.5 * f(M + n)));
  }
  return out;
}

}  // namespace ssm::kernels
