// Numerical range across layers: a million steps, step sizes from 1e-4 to 1, and eigenvalues close
// to the unit circle. Each case is checked against an independent answer: the layer's recurrence
// re-derived from its parameters and run in long double (dense bilinear DPLR for S4, per-mode ZOH /
// bilinear for S4D, lambda from nu_log / theta_log for LRU, softplus and exp(delta A) for the
// selective scan), plus, for S4, the closed-form steady state of a constant input. Both modes of each
// layer are compared with that answer, not only with each other.

#include "test_support.hpp"

#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/layers/selective_scan.hpp"

#include <Eigen/LU>

#include <cmath>
#include <complex>

namespace ssm::test {
namespace {

using LD = long double;
using CLD = std::complex<LD>;
using MatrixLD = Eigen::Matrix<LD, Eigen::Dynamic, Eigen::Dynamic>;
using VectorLD = Eigen::Matrix<LD, Eigen::Dynamic, 1>;

template <class T>
class NumericalRange : public ::testing::Test {};
TYPED_TEST_SUITE(NumericalRange, Scalars);

template <class T>
CLD ld(const std::complex<T>& z) {
  return {LD(z.real()), LD(z.imag())};
}

template <class T>
double eps() {
  return double(scalar_traits<T>::epsilon);
}

/// S4 in long double from its parameters: per channel, the real 2M-dimensional system on
/// [Re x; Im x] of x' = diag(Lambda) x - sum_r P_r 2 Re(P_r^* x) + B u, y = 2 Re(C x) + D u, made
/// dense and discretised by the bilinear transform with LU solves (no Woodbury, no DPLR factoring),
/// then run step by step. Returns y (L x H) in long double, and the final state of each channel.
template <class T>
MatrixLD s4_reference(const S4Params<T>& p, const MatrixX<T>& u) {
  const Index H = p.Lambda.rows(), M = p.Lambda.cols(), L = u.rows();
  MatrixLD y(L, H);
  for (Index h = 0; h < H; ++h) {
    const LD dt = std::exp(LD(p.log_dt(h)));
    MatrixLD A(2 * M, 2 * M);
    for (Index j = 0; j < 2 * M; ++j) {
      std::vector<CLD> x(static_cast<std::size_t>(M), CLD(0));
      x[std::size_t(j % M)] = j < M ? CLD(1, 0) : CLD(0, 1);
      std::vector<CLD> ax(static_cast<std::size_t>(M));
      for (Index n = 0; n < M; ++n) ax[std::size_t(n)] = ld(p.Lambda(h, n)) * x[std::size_t(n)];
      for (const auto& P : p.P) {
        CLD dot = 0;
        for (Index n = 0; n < M; ++n) dot += std::conj(ld(P(h, n))) * x[std::size_t(n)];
        for (Index n = 0; n < M; ++n) ax[std::size_t(n)] -= ld(P(h, n)) * (LD(2) * dot.real());
      }
      for (Index n = 0; n < M; ++n) {
        A(n, j) = ax[std::size_t(n)].real();
        A(M + n, j) = ax[std::size_t(n)].imag();
      }
    }
    VectorLD B(2 * M);
    for (Index n = 0; n < M; ++n) B(n) = LD(p.B(h, n).real()), B(M + n) = LD(p.B(h, n).imag());
    const MatrixLD I = MatrixLD::Identity(2 * M, 2 * M);
    const Eigen::PartialPivLU<MatrixLD> lu(I - (dt / 2) * A);
    const MatrixLD Abar = lu.solve(I + (dt / 2) * A);
    const VectorLD Bbar = lu.solve(dt * B);
    VectorLD c(2 * M);  // y = c . [Re x; Im x] with c = 2 [Re C; -Im C]
    for (Index n = 0; n < M; ++n) c(n) = 2 * LD(p.C(h, n).real()), c(M + n) = -2 * LD(p.C(h, n).imag());
    VectorLD x = VectorLD::Zero(2 * M), next(2 * M);
    for (Index t = 0; t < L; ++t) {
      next.noalias() = Abar * x;
      x = next + Bbar * LD(u(t, h));
      y(t, h) = c.dot(x) + LD(p.D(h)) * LD(u(t, h));
    }
  }
  return y;
}

/// S4D in long double from its parameters, mode by mode: ZOH Abar = e^z, Bbar = dt B (e^z - 1)/z with
/// z = dt Lambda (e^z - 1 written with expm1 so that small z keeps its digits), or bilinear.
template <class T>
MatrixLD s4d_reference(const S4DParams<T>& p, const MatrixX<T>& u) {
  const Index H = p.Lambda.rows(), M = p.Lambda.cols(), L = u.rows();
  MatrixLD y = MatrixLD::Zero(L, H);
  for (Index h = 0; h < H; ++h) {
    const LD dt = std::exp(LD(p.log_dt(h)));
    for (Index n = 0; n < M; ++n) {
      const CLD z = dt * ld(p.Lambda(h, n)), b = ld(p.B(h, n)), c = ld(p.C(h, n));
      CLD a_bar, b_bar;
      if (p.discretization == Discretization::zoh) {
        const LD s = std::sin(z.imag() / 2);
        const CLD em1(std::expm1(z.real()) * std::cos(z.imag()) - 2 * s * s, std::exp(z.real()) * std::sin(z.imag()));
        a_bar = em1 + LD(1);
        b_bar = dt * b * (em1 / z);
      } else {
        a_bar = (LD(1) + z / LD(2)) / (LD(1) - z / LD(2));
        b_bar = dt * b / (LD(1) - z / LD(2));
      }
      CLD x = 0;
      for (Index t = 0; t < L; ++t) {
        x = a_bar * x + b_bar * LD(u(t, h));
        y(t, h) += 2 * (c * x).real();
      }
    }
    for (Index t = 0; t < L; ++t) y(t, h) += LD(p.D(h)) * LD(u(t, h));
  }
  return y;
}

/// Error bounds for the S4 / S4D cases, relative to max|y|. Their modes have Re(lambda) = -1/2 (LegS's
/// normal part, S4D-Inv; FouT's modes are treated alike), so a mode remembers n = min(L, 2/dt) steps.
///
/// Convolution: the kernel is formed in double, the FFT runs in T: ~eps_T log2(2L) per output. The DPLR
/// (S4) kernel divides by I - Abar^L, which is small when dt L |Re lambda| << 1: its double error is
/// amplified by kappa = max(1, 2/(dt L)). 32 covers the per-butterfly roundings and the sum over modes.
template <class T>
double convolution_tol(Index L, double kappa = 1) {
  return 32 * std::log2(2.0 * double(L)) * (eps<T>() + double(scalar_traits<double>::epsilon) * kappa);
}

/// A diagonal recurrence in T multiplies by Abar rounded to T, the same rounding every step: the
/// error is coherent, ~eps n over the memory n (plus a few roundings per mode in the output sum).
template <class T>
double diagonal_recurrence_tol(Index L, double dt, Index M) {
  return 4 * eps<T>() * (std::min(double(L), 2.0 / dt) + double(M));
}

/// The DPLR step (increment form) keeps the decay rate exact to eps relative; each step's rounding,
/// ~32 eps (the low-rank correction subtracts terms of size |P|^2 ~ N/2 from the diagonal update),
/// then adds like a random walk over the memory: 32 eps (sqrt(n) + 2). Rounding (2/dt - Lambda)^-1 and
/// (2/dt + Lambda) separately instead biases every step by ~eps/(dt |Re lambda|) relative to the decay
/// (2.4e-3 at dt = 1e-4 in float), which this bound rejects.
template <class T>
double dplr_recurrence_tol(Index L, double dt) {
  return 32 * eps<T>() * (std::sqrt(std::min(double(L), 2.0 / dt)) + 2);
}

/// The parameters with the skip term D u removed. With D ~ N(0, 1) and small dt, D u is most of y
/// and its own (exact) rounding would set the scale, hiding the state-space part's error.
template <class Params>
Params without_skip(Params p) {
  p.D.setZero();
  return p;
}

/// Largest |actual - expected| over max|expected|.
template <class T>
double relative_error(const MatrixX<T>& actual, const MatrixLD& expected) {
  LD worst = 0, scale = 0;
  for (Index j = 0; j < expected.cols(); ++j)
    for (Index i = 0; i < expected.rows(); ++i) {
      if (!std::isfinite(double(actual(i, j)))) return INFINITY;
      worst = std::max(worst, std::abs(LD(actual(i, j)) - expected(i, j)));
      scale = std::max(scale, std::abs(expected(i, j)));
    }
  return double(worst / scale);
}

TYPED_TEST(NumericalRange, S4MillionStepsAgainstLongDoubleRecurrence) {
  using T = TypeParam;
  std::mt19937_64 gen(101);
  const Index L = Index(1) << 20;
  // dt = 1e-4: LegS's slowest modes decay over ~1e4 steps, so the whole length matters.
  const S4<T> layer(without_skip(S4<T>::initialise(1, 16, hippo::Measure::legs, gen, 1e-4, 1e-4).params()));
  const MatrixX<T> u = random_normal<T>(L, 1, gen);
  const Sequence<T> y_conv = layer.forward(u);
  auto state = layer.initial_state();
  const Sequence<T> y_rec = layer.forward(u, state, Mode::recurrence);
  ASSERT_TRUE(state.x.allFinite());
  const MatrixLD y = s4_reference(layer.params(), u);
  const double dt = 1e-4;
  EXPECT_LE(relative_error<T>(y_conv, y), convolution_tol<T>(L, std::max(1.0, 2 / (dt * double(L)))));
  EXPECT_LE(relative_error<T>(y_rec, y), dplr_recurrence_tol<T>(L, dt));
}

TYPED_TEST(NumericalRange, StepSizesFromTenThousandthToOne) {
  using T = TypeParam;
  std::mt19937_64 gen(102);
  const Index L = 512;
  const MatrixX<T> u = random_normal<T>(L, 2, gen);
  for (double dt : {1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
    SCOPED_TRACE(testing::Message() << "dt = " << dt);
    for (auto measure : {hippo::Measure::legs, hippo::Measure::fout}) {
      const S4<T> s4(without_skip(S4<T>::initialise(2, 16, measure, gen, dt, dt).params()));
      auto state = s4.initial_state();
      const MatrixLD y = s4_reference(s4.params(), u);
      SCOPED_TRACE(hippo::measure_name(measure));
      EXPECT_LE(relative_error<T>(s4.forward(u), y), convolution_tol<T>(L, std::max(1.0, 2 / (dt * double(L)))));
      EXPECT_LE(relative_error<T>(s4.forward(u, state, Mode::recurrence), y), dplr_recurrence_tol<T>(L, dt));
    }
    for (auto method : {Discretization::zoh, Discretization::bilinear}) {
      const S4D<T> s4d(without_skip(S4D<T>::initialise(2, 16, hippo::DiagonalInit::inv, method, gen, dt, dt).params()));
      auto state = s4d.initial_state();
      const MatrixLD y = s4d_reference(s4d.params(), u);
      SCOPED_TRACE(discretization_name(method));
      EXPECT_LE(relative_error<T>(s4d.forward(u), y), convolution_tol<T>(L));
      EXPECT_LE(relative_error<T>(s4d.forward(u, state, Mode::recurrence), y), diagonal_recurrence_tol<T>(L, dt, 8));
    }
  }
}

TYPED_TEST(NumericalRange, EigenvaluesCloseToTheUnitCircle) {
  using T = TypeParam;
  std::mt19937_64 gen(103);
  const Index L = 8192, H = 2, N = 8;
  // |lambda| in [1 - 1e-6, 1 - 1e-7]: memories of 1e6 to 1e7 steps, longer than the sequence.
  const LinearRecurrentUnit<T> lru(without_skip(LinearRecurrentUnit<T>::initialise(H, N, gen, 1.0 - 1e-6, 1.0 - 1e-7).params()));
  for (Index n = 0; n < N; ++n) ASSERT_LT(std::abs(lru.lambda()(n)), T(1)) << n;
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  auto state = lru.initial_state();
  const Sequence<T> y_rec = lru.forward(u, state, ssm::Mode::recurrence);
  const Sequence<T> y_conv = lru.forward(u);
  // The paper's equations in long double from the parameters.
  const auto& p = lru.params();
  MatrixLD y(L, H);
  for (Index t = 0; t < L; ++t)
    for (Index h = 0; h < H; ++h) y(t, h) = LD(p.D(h)) * LD(u(t, h));
  for (Index n = 0; n < N; ++n) {
    const CLD lambda = std::exp(CLD(-std::exp(LD(p.nu_log(n))), std::exp(LD(p.theta_log(n)))));
    const LD gamma = std::exp(LD(p.gamma_log(n)));
    CLD x = 0;
    for (Index t = 0; t < L; ++t) {
      CLD in = 0;
      for (Index h = 0; h < H; ++h) in += gamma * ld(p.B(n, h)) * LD(u(t, h));
      x = lambda * x + in;
      for (Index h = 0; h < H; ++h) y(t, h) += (ld(p.C(h, n)) * x).real();
    }
  }
  // Nothing decays within L, so a relative error in lambda grows to ~t times itself in lambda^t. The
  // recurrence uses lambda rounded to T: 2 eps_T L. The kernel is formed in double (phase t arg(lambda),
  // |arg| <= 2 pi: eps_double 2 pi L), then applied by an FFT in T.
  const double two_pi = 6.283185307179586;
  EXPECT_LE(relative_error<T>(y_conv, y),
            convolution_tol<T>(L) + double(scalar_traits<double>::epsilon) * two_pi * double(L));
  EXPECT_LE(relative_error<T>(y_rec, y), 2 * eps<T>() * double(L));
}

TYPED_TEST(NumericalRange, SelectiveScanMillionStepsAgainstLongDouble) {
  using T = TypeParam;
  std::mt19937_64 gen(104);
  const Index L = Index(1) << 20, D = 2, N = 4;
  const MatrixX<T> u = random_normal<T>(L, D, gen);
  // Large positive delta inputs (softplus ~ identity) next to tiny ones: exp(delta A) spans (0, 1].
  MatrixX<T> delta = T(4) * random_normal<T>(L, D, gen);
  MatrixX<T> A(D, N);
  for (Index d = 0; d < D; ++d)
    for (Index n = 0; n < N; ++n) A(d, n) = -T(n + 1) * T(d == 0 ? 1e-3 : 1.0);
  const MatrixX<T> B = random_normal<T>(L, N, gen), C = random_normal<T>(L, N, gen);
  SelectiveScanOptions<T> options;
  options.delta_softplus = true;
  const auto r = selective_scan(u, delta, A, ScanMatrix<T>::per_step(B), ScanMatrix<T>::per_step(C), options);
  ASSERT_TRUE(r.last_state.allFinite());
  // The recurrence from its definition in long double, both channels, every step.
  MatrixLD y(L, D);
  for (Index d = 0; d < D; ++d) {
    VectorLD x = VectorLD::Zero(N);
    for (Index t = 0; t < L; ++t) {
      const LD v = LD(delta(t, d));
      const LD dt = v > 20 ? v : std::log1p(std::exp(v));
      LD acc = 0;
      for (Index n = 0; n < N; ++n) {
        x(n) = std::exp(dt * LD(A(d, n))) * x(n) + dt * LD(B(t, n)) * LD(u(t, d));
        acc += LD(C(t, n)) * x(n);
      }
      y(t, d) = acc;
    }
  }
  // Every step's factor exp(delta A) is a fresh rounding (delta changes every step), so the roundings
  // add like a random walk over the slowest memory, 1/(min|A| mean(delta)) ~ 1e3 steps (softplus(4 z)
  // has mean ~1.7): 8 eps sqrt(1e3).
  EXPECT_LE(relative_error<T>(r.out, y), 8 * eps<T>() * std::sqrt(1e3));
}

}  // namespace
}  // namespace ssm::test
