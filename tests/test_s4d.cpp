// S4D: the eight golden cases of the reference (state-spaces/s4 SSMKernelDiag), convolution against
// recurrence against step, chunked prefill, irregular sampling against the matrix exponential,
// 2^20 steps, float against double, and bad input.

#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

#include "test_support.hpp"

#include "ssm/layers/s4d.hpp"

#include <unsupported/Eigen/MatrixFunctions>

#include <string>
#include <vector>

namespace ssm::test {
namespace {

template <class T>
class S4DTest : public ::testing::Test {};
TYPED_TEST_SUITE(S4DTest, Scalars);

const std::vector<std::string>& golden_cases() {
  static const std::vector<std::string> cases = {
      "s4d_zoh_diag-lin",      "s4d_zoh_diag-inv",      "s4d_zoh_diag-real",      "s4d_zoh_diag-legs",
      "s4d_bilinear_diag-lin", "s4d_bilinear_diag-inv", "s4d_bilinear_diag-real", "s4d_bilinear_diag-legs"};
  return cases;
}

/// The golden case's layer (D = 0: the reference's y_step has no skip term).
template <class T>
S4D<T> golden_layer(const std::string& name) {
  S4DParams<double> p;
  p.Lambda = golden(name, "A").matrix<std::complex<double>>();
  p.B = golden(name, "B").matrix<std::complex<double>>();
  p.C = golden(name, "C").matrix<std::complex<double>>();
  p.log_dt = golden(name, "dt").matrix<double>().array().log().matrix();
  p.D = VectorX<double>::Zero(p.Lambda.rows());
  p.discretization = name.find("bilinear") != std::string::npos ? Discretization::bilinear : Discretization::zoh;
  return S4D<T>(p.cast<T>());
}

/// Against the double reference: 1e-10 relative in double (the requirement; observed 3e-15).
/// In float the parameters themselves are rounded (relative 6e-8), which moves the outputs by that
/// much times the number of modes and the depth of the recurrence (L = 64 here): observed 8e-7,
/// bound 5e-6 (about 40 eps_float).
template <class T>
double golden_tol() {
  return std::is_same_v<T, double> ? 1e-10 : 5e-6;
}

TYPED_TEST(S4DTest, GoldenKernelsRecurrencesAndFinalStates) {
  using T = TypeParam;
  for (const std::string& name : golden_cases()) {
    SCOPED_TRACE(name);
    const S4D<T> layer = golden_layer<T>(name);
    const MatrixX<double> K_expected = golden(name, "K").matrix<double>().transpose();  // (H, L) -> L x H
    const Index L = K_expected.rows(), H = K_expected.cols();
    ASSERT_EQ(layer.channels(), H);
    SSM_EXPECT_NEAR_REL(layer.kernel(L).template cast<double>(), K_expected, golden_tol<T>());
    const io::NpyArray u_all = golden(name, "u"), y_all = golden(name, "y_step"), x_all = golden(name, "final_state");
    for (Index b = 0; b < u_all.shape[0]; ++b) {
      const MatrixX<T> u = batch_as_LxH<T>(u_all, b);
      const MatrixX<double> y_expected = batch_as_LxH<double>(y_all, b);
      const MatrixXc<double> x_expected = batch_slab<std::complex<double>>(x_all, b).transpose();  // M x H
      auto state = layer.initial_state();
      const Sequence<T> y = layer.forward(u, state, ssm::Mode::recurrence);
      SSM_EXPECT_NEAR_REL(y.template cast<double>(), y_expected, golden_tol<T>());
      SSM_EXPECT_NEAR_REL(state.x.template cast<std::complex<double>>(), x_expected, golden_tol<T>());
      SSM_EXPECT_NEAR_REL(layer.forward(u).template cast<double>(), y_expected, golden_tol<T>());
      auto streamed = layer.initial_state();
      Sequence<T> y_step(L, H);
      for (Index t = 0; t < L; ++t) layer.step(u.row(t).transpose(), streamed, y_step.row(t).transpose());
      SSM_EXPECT_NEAR_REL(y_step.template cast<double>(), y_expected, golden_tol<T>());
      SSM_EXPECT_NEAR_REL(streamed.x.template cast<std::complex<double>>(), x_expected, golden_tol<T>());
    }
  }
}

/// Convolution against recurrence in the same precision, relative to the largest output: the kernel
/// sums M modes, the FFT adds eps log2(n), the recurrence's depth is at most 1/(1 - |Abar|), about
/// 2 / dt_min = 2000 steps, but its errors average out: observed 4e-15 (double) and 7e-7 (float).
template <class T>
double modes_tol() {
  return std::is_same_v<T, double> ? 1e-13 : 2e-5;
}

TYPED_TEST(S4DTest, EveryInitialisationConvolutionEqualsRecurrence) {
  using T = TypeParam;
  std::mt19937_64 gen(41);
  for (auto init : {hippo::DiagonalInit::lin, hippo::DiagonalInit::inv, hippo::DiagonalInit::real,
                    hippo::DiagonalInit::legs}) {
    for (auto method : {Discretization::zoh, Discretization::bilinear}) {
      const S4D<T> layer = S4D<T>::initialise(5, 16, init, method, gen);
      ASSERT_EQ(layer.modes(), 8);
      ASSERT_EQ(layer.state_size(), 16);
      hippo::DiagonalModes modes = hippo::diagonal_init(init, 16);
      for (Index m = 0; m < 8; ++m)  // bounded as the reference: Re, Im <= -1e-4
        modes.A(m) = {std::min(modes.A(m).real(), -1e-4), std::min(modes.A(m).imag(), -1e-4)};
      for (Index h = 0; h < 5; ++h) {
        EXPECT_EQ(layer.params().Lambda.row(h).transpose(), modes.A.cast<std::complex<T>>());
        EXPECT_EQ(layer.params().B.row(h).transpose(), modes.B.cast<std::complex<T>>());
        EXPECT_GE(layer.params().dt()(h), T(1e-3) * T(0.999));
        EXPECT_LE(layer.params().dt()(h), T(1e-1) * T(1.001));
      }
      const MatrixX<T> u = random_normal<T>(700, 5, gen);
      auto state = layer.initial_state();
      const Sequence<T> y_rec = layer.forward(u, state, ssm::Mode::recurrence);
      const Sequence<T> y_conv = layer.forward(u);
      SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), modes_tol<T>())
          << "init " << int(init) << " method " << discretization_name(method);
    }
  }
}

TYPED_TEST(S4DTest, ChunkedPrefillAndStepContinueExactly) {
  using T = TypeParam;
  std::mt19937_64 gen(42);
  const S4D<T> layer = S4D<T>::initialise(3, 8, hippo::DiagonalInit::inv, Discretization::zoh, gen);
  const MatrixX<T> u = random_normal<T>(200, 3, gen);
  auto whole = layer.initial_state();
  const Sequence<T> y = layer.forward(u, whole, ssm::Mode::recurrence);
  auto pieces = layer.initial_state();
  const Sequence<T> y1 = layer.forward(u.topRows(77), pieces, ssm::Mode::recurrence);
  const Sequence<T> y2 = layer.forward(u.middleRows(77, 100), pieces, ssm::Mode::recurrence);
  Sequence<T> y3(23, 3);
  for (Index t = 0; t < 23; ++t) layer.step(u.row(177 + t).transpose(), pieces, y3.row(t).transpose());
  Sequence<T> joined(200, 3);
  joined << y1, y2, y3;
  // The same roundings in a different association at most: a few eps.
  SSM_EXPECT_NEAR_REL(joined, y, 50 * double(scalar_traits<T>::epsilon));
  SSM_EXPECT_NEAR_REL(pieces.x, whole.x, 50 * double(scalar_traits<T>::epsilon));
  // The kernel spectrum is made once per length.
  EXPECT_EQ(layer.kernel_spectrum(200).get(), layer.kernel_spectrum(200).get());
  const S4D<T> copy = layer;
  EXPECT_EQ(copy.kernel_spectrum(200).get(), layer.kernel_spectrum(200).get());
}

TYPED_TEST(S4DTest, StepAllocatesNothing) {
  using T = TypeParam;
  std::mt19937_64 gen(43);
  const S4D<T> layer = S4D<T>::initialise(4, 8, hippo::DiagonalInit::lin, Discretization::zoh, gen);
  auto state = layer.initial_state();
  const MatrixX<T> u = random_normal<T>(10, 4, gen);
  Sequence<T> y(10, 4);
  VectorX<T> u0 = u.row(0).transpose(), y0(4);
  std::string why;
  EXPECT_EQ(allocations_during(
                [&] {
    layer.step(u0, state, y0);
    for (Index t = 1; t < 10; ++t) layer.step(u.row(t).transpose(), state, y.row(t).transpose());
                },
                why),
            0)
      << why;
  y.row(0) = y0.transpose();
  auto again = layer.initial_state();
  SSM_EXPECT_NEAR_REL(layer.forward(u, again, ssm::Mode::recurrence), y, 20 * double(scalar_traits<T>::epsilon));
}

/// The exact state of the continuous system over an interval tau with the input held at u:
/// exp([[diag(A), B u], [0, 0]] tau) applied to [x; 1], by Eigen's dense matrix exponential.
VectorXc<double> exact_hold(const VectorXc<double>& A, const VectorXc<double>& B, double u, double tau,
                            const VectorXc<double>& x) {
  const Index M = A.size();
  MatrixXc<double> G = MatrixXc<double>::Zero(M + 1, M + 1);
  G.topLeftCorner(M, M) = A.asDiagonal();
  G.topRightCorner(M, 1) = B * u;
  const MatrixXc<double> E = (G * tau).exp();
  VectorXc<double> z(M + 1);
  z << x, 1.0;
  return (E * z).head(M);
}

TYPED_TEST(S4DTest, IrregularSamplingMatchesMatrixExponential) {
  using T = TypeParam;
  std::mt19937_64 gen(44);
  const Index H = 3, L = 60;
  const S4D<T> layer = S4D<T>::initialise(H, 8, hippo::DiagonalInit::inv, Discretization::zoh, gen, 0.01, 0.5);
  // Random time stamps: intervals between 0.05 and 3 (in units of each channel's dt).
  std::uniform_real_distribution<double> gap(0.05, 3.0);
  VectorX<T> intervals(L);
  for (Index k = 0; k < L; ++k) intervals(k) = T(gap(gen));
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  auto state = layer.initial_state();
  state.x = random_complex<T>(layer.modes(), H, gen);  // from a non-zero state
  const MatrixXc<double> x0 = state.x.template cast<std::complex<double>>();
  const Sequence<T> y = layer.forward_irregular(u, intervals, state);
  const auto& p = layer.params();
  MatrixX<double> y_exact(L, H);
  MatrixXc<double> x_exact(layer.modes(), H);
  for (Index h = 0; h < H; ++h) {
    VectorXc<double> x = x0.col(h);
    const VectorXc<double> A = p.Lambda.row(h).transpose().template cast<std::complex<double>>();
    const VectorXc<double> B = p.B.row(h).transpose().template cast<std::complex<double>>();
    const VectorXc<double> C = p.C.row(h).transpose().template cast<std::complex<double>>();
    for (Index k = 0; k < L; ++k) {
      x = exact_hold(A, B, double(u(k, h)), std::exp(double(p.log_dt(h))) * double(intervals(k)), x);
      y_exact(k, h) = 2 * (C.transpose() * x)(0).real() + double(p.D(h)) * double(u(k, h));
    }
    x_exact.col(h) = x;
  }
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;  // observed 7e-16 and 2e-7
  SSM_EXPECT_NEAR_REL(y.template cast<double>(), y_exact, tol);
  SSM_EXPECT_NEAR_REL(state.x.template cast<std::complex<double>>(), x_exact, tol);
  // Unit intervals are the regular recurrence, for both discretisations.
  for (auto method : {Discretization::zoh, Discretization::bilinear}) {
    auto q = layer.params();
    q.discretization = method;
    const S4D<T> regular(q);
    auto s1 = regular.initial_state(), s2 = regular.initial_state();
    const Sequence<T> y1 = regular.forward(u, s1, ssm::Mode::recurrence);
    const Sequence<T> y2 = regular.forward_irregular(u, VectorX<T>::Ones(L), s2);
    SSM_EXPECT_NEAR_REL(y2, y1, 20 * double(scalar_traits<T>::epsilon));
  }
}

TYPED_TEST(S4DTest, MillionStepsStayFiniteAndModesAgree) {
  using T = TypeParam;
  std::mt19937_64 gen(45);
  const Index L = Index(1) << 20;
  // One channel, N = 4; dt as small as the usual range allows, so the slowest mode decays over ~2000 steps.
  const S4D<T> layer = S4D<T>::initialise(1, 4, hippo::DiagonalInit::lin, Discretization::zoh, gen, 1e-3, 1e-3);
  const MatrixX<T> u = random_normal<T>(L, 1, gen);
  auto state = layer.initial_state();
  const Sequence<T> y_rec = layer.forward(u, state, ssm::Mode::recurrence);
  const Sequence<T> y_conv = layer.forward(u);
  ASSERT_TRUE(y_rec.allFinite());
  ASSERT_TRUE(y_conv.allFinite());
  ASSERT_TRUE(state.x.allFinite());
  // The FFT of length 2^21 adds eps log2(n) sum |K| |u| to every output.
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;  // observed 2e-15 and 7e-7
  SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), tol);
}

TYPED_TEST(S4DTest, FloatAgreesWithDoubleWithinDocumentedBound) {
  using T = TypeParam;
  std::mt19937_64 gen(46);
  const S4D<double> reference = S4D<double>::initialise(4, 32, hippo::DiagonalInit::legs, Discretization::zoh, gen);
  const auto& p = reference.params();
  const S4D<T> layer(p.template cast<T>());
  const MatrixX<double> u = random_normal<double>(2000, 4, gen);
  auto s = reference.initial_state();
  const Sequence<double> y = reference.forward(u, s, ssm::Mode::recurrence);
  auto s_t = layer.initial_state();
  // Documented bound: float outputs within 5e-5 of double, relative to the largest output, for
  // dt >= 1e-3 (recurrence depth <= 2000); observed 5.5e-6. Double against itself: 1e-13.
  const double tol = std::is_same_v<T, double> ? 1e-13 : 5e-5;
  SSM_EXPECT_NEAR_REL(layer.forward(u.cast<T>(), s_t, ssm::Mode::recurrence).template cast<double>(), y, tol);
  SSM_EXPECT_NEAR_REL(layer.forward(u.cast<T>()).template cast<double>(), y, tol);
}

TYPED_TEST(S4DTest, BadInputsAreClearErrors) {
  using T = TypeParam;
  std::mt19937_64 gen(47);
  const S4D<T> layer = S4D<T>::initialise(3, 8, hippo::DiagonalInit::lin, Discretization::zoh, gen);
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected ssm::error containing '" << needle << "'";
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto p = layer.params();
  expect_error([&] { auto q = p; q.B = MatrixXc<T>::Ones(3, 3); S4D<T>{q}; }, "S4D: B: expected 3 x 4");
  expect_error([&] { auto q = p; q.C = MatrixXc<T>::Ones(2, 4); S4D<T>{q}; }, "S4D: C: expected 3 x 4");
  expect_error([&] { auto q = p; q.D = VectorX<T>::Ones(2); S4D<T>{q}; }, "S4D: D: expected a vector of 3");
  expect_error([&] { auto q = p; q.log_dt(1) = -std::numeric_limits<T>::infinity(); S4D<T>{q}; },
               "S4D: log_dt: expected finite values");
  expect_error([&] { auto q = p; q.log_dt(1) = T(-1000); S4D<T>{q}; }, "S4D: exp(log_dt): expected finite values > 0");
  expect_error([&] { auto q = p; q.Lambda(0, 1) = std::complex<T>(T(0.1), T(1)); S4D<T>{q}; },
               "S4D: Lambda: expected Re Lambda <= 0");
  expect_error([&] { auto q = p; q.Lambda(2, 2) = std::complex<T>(T(-1), std::numeric_limits<T>::infinity()); S4D<T>{q}; },
               "S4D: Lambda: expected finite values");
  // The bilinear transform's singular point dt A = 2 has Re A > 0: rejected as unstable first.
  expect_error([&] { auto q = p; q.Lambda(0, 0) = std::complex<T>(T(2) / q.dt()(0), T(0)); q.discretization = Discretization::bilinear; S4D<T>{q}; },
               "expected Re Lambda <= 0");
  auto state = layer.initial_state();
  expect_error([&] { layer.forward(MatrixX<T>::Ones(10, 2), state, ssm::Mode::recurrence); },
               "S4D::forward: u: expected L x 3 (L x H), got 10 x 2");
  expect_error([&] { layer.forward(MatrixX<T>::Ones(10, 4)); }, "S4D::forward: u: expected L x 3");
  EXPECT_EQ(layer.forward(MatrixX<T>(0, 3)).rows(), 0);  // L = 0 is an empty sequence, as for every layer
  expect_error([&] { layer.kernel(0); }, "S4D::kernel: L: expected >= 1, got 0");
  auto bad_state = layer.initial_state();
  bad_state.x.resize(4, 2);
  expect_error([&] { layer.forward(MatrixX<T>::Ones(10, 3), bad_state, ssm::Mode::recurrence); }, "state.x: expected 4 x 3");
  expect_error([&] { layer.forward_irregular(MatrixX<T>::Ones(10, 3), VectorX<T>::Ones(9), state); },
               "S4D::forward_irregular: intervals: expected a vector of 10");
  VectorX<T> intervals = VectorX<T>::Ones(10);
  intervals(4) = T(-1);
  expect_error([&] { layer.forward_irregular(MatrixX<T>::Ones(10, 3), intervals, state); },
               "intervals: expected finite values > 0");
  VectorX<T> u2 = VectorX<T>::Ones(2), y3(3);
  expect_error([&] { layer.step(u2, state, y3); }, "S4D::step: u: expected a vector of 3");
  expect_error([&] { hippo::diagonal_init(hippo::DiagonalInit::lin, 7); }, "N");
  expect_error([&] { S4D<T>::initialise(0, 8, hippo::DiagonalInit::lin, Discretization::zoh, gen); },
               "S4D::initialise: H: expected >= 1, got 0");
}

TYPED_TEST(S4DTest, InitialiseBoundsAAsTheReference) {
  using T = TypeParam;
  std::mt19937_64 gen(48);
  const S4D<T> real = S4D<T>::initialise(2, 8, hippo::DiagonalInit::real, Discretization::zoh, gen);
  for (Index h = 0; h < 2; ++h)
    for (Index n = 0; n < 4; ++n) {
      EXPECT_EQ(real.params().Lambda(h, n).real(), T(-(n + 1)));
      EXPECT_EQ(real.params().Lambda(h, n).imag(), T(-1e-4));
    }
  // The golden diag-real case was made by the reference with the same bound.
  const MatrixXc<double> golden_A = golden("s4d_zoh_diag-real", "A").matrix<std::complex<double>>();
  SSM_EXPECT_NEAR_REL(real.params().Lambda.template cast<std::complex<double>>(), golden_A, 1e-7);
  const S4D<T> lin = S4D<T>::initialise(2, 8, hippo::DiagonalInit::lin, Discretization::zoh, gen);
  for (Index h = 0; h < 2; ++h) {
    EXPECT_EQ(lin.params().Lambda(h, 0), std::complex<T>(T(-0.5), T(-1e-4)));
    EXPECT_EQ(lin.params().Lambda(h, 1).imag(), T(-3.14159265358979323846));
  }
}

/// y = K[0 .. taps) * u + D u by the direct sum in long double.
template <class T>
MatrixX<double> direct_truncated_convolution(const MatrixX<T>& K, Index taps, const MatrixX<T>& u, const VectorX<T>& D) {
  const Index L = u.rows(), H = u.cols();
  MatrixX<double> y(L, H);
  for (Index h = 0; h < H; ++h)
    for (Index t = 0; t < L; ++t) {
      long double acc = static_cast<long double>(D(h)) * static_cast<long double>(u(t, h));
      for (Index j = 0; j < taps && j <= t; ++j)
        acc += static_cast<long double>(K(j, h)) * static_cast<long double>(u(t - j, h));
      y(t, h) = double(acc);
    }
  return y;
}

TYPED_TEST(S4DTest, KernelLengthTruncatesTheConvolutionOnly) {
  using T = TypeParam;
  std::mt19937_64 gen(49);
  for (auto method : {Discretization::zoh, Discretization::bilinear}) {
    const S4D<T> full = S4D<T>::initialise(3, 16, hippo::DiagonalInit::inv, method, gen);
    S4DParams<T> p = full.params();
    p.kernel_length = 64;
    const S4D<T> limited(p);
    const Index L = 200;
    const MatrixX<T> u = random_normal<T>(L, 3, gen);
    EXPECT_EQ(limited.convolution_length(L), 64);
    EXPECT_EQ(limited.convolution_length(10), 10);
    EXPECT_EQ(full.convolution_length(L), L);
    const Sequence<T> y = limited.forward(u);
    const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-6;
    SSM_EXPECT_NEAR_REL(y.template cast<double>(), direct_truncated_convolution<T>(full.kernel(L), 64, u, p.D), tol);
    EXPECT_EQ(limited.kernel_spectrum(L)->kernel_length, 64);
    // The recurrence is not truncated: it gives the convolution with all L taps (float: at most L = 200
    // steps of rounding, ~200 eps worst case), which differs from y by the tail K[64..L) * u, far above
    // that tolerance here (else this would prove nothing).
    auto state = limited.initial_state();
    const MatrixX<double> y_full = direct_truncated_convolution<T>(full.kernel(L), L, u, p.D);
    const double rec_tol = std::is_same_v<T, double> ? 1e-12 : 3e-5;
    SSM_EXPECT_NEAR_REL(limited.forward(u, state, Mode::recurrence).template cast<double>(), y_full, rec_tol);
    const MatrixX<double> tail = y_full - direct_truncated_convolution<T>(full.kernel(L), 64, u, p.D);
    EXPECT_GT(tail.cwiseAbs().maxCoeff(), 100 * rec_tol * y_full.cwiseAbs().maxCoeff());
    for (Index k : {L, L + 1, Index(1000)}) {  // kernel_length >= L changes nothing
      p.kernel_length = k;
      EXPECT_EQ(S4D<T>(p).forward(u), full.forward(u));
    }
    p.kernel_length = -1;
    EXPECT_THROW(S4D<T>{p}, ssm::error);
  }
}

}  // namespace
}  // namespace ssm::test
