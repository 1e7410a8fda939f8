// The Linear Recurrent Unit: the golden case (the paper's equations), recurrence against step against
// convolution, chunked prefill, the ring initialisation, 2^20 steps, float against double, bad input.

#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

#include "test_support.hpp"

#include "ssm/layers/lru.hpp"

#include <string>

namespace ssm::test {
namespace {

template <class T>
class LinearRecurrentUnitTest : public ::testing::Test {};
TYPED_TEST_SUITE(LinearRecurrentUnitTest, Scalars);

template <class T>
LinearRecurrentUnit<T> golden_unit() {
  LinearRecurrentUnitParams<T> p;
  p.nu_log = golden("lru", "nu_log").matrix<double>().cast<T>();
  p.theta_log = golden("lru", "theta_log").matrix<double>().cast<T>();
  p.gamma_log = golden("lru", "gamma_log").matrix<double>().cast<T>();
  p.B = golden("lru", "B").matrix<std::complex<double>>().cast<std::complex<T>>();
  p.C = golden("lru", "C").matrix<std::complex<double>>().cast<std::complex<T>>();
  p.D = golden("lru", "D").matrix<double>().cast<T>();
  return LinearRecurrentUnit<T>(p);
}

/// Against the double golden case: 1e-10 relative in double (observed 3e-16). In float the parameters
/// are rounded (6e-8 relative), and |lambda| up to 0.99 makes the recurrence ~100 steps deep:
/// observed 1.7e-7, bound 2e-6.
template <class T>
double golden_tol() {
  return std::is_same_v<T, double> ? 1e-10 : 2e-6;
}

TYPED_TEST(LinearRecurrentUnitTest, GoldenOutputsAndFinalState) {
  using T = TypeParam;
  const LinearRecurrentUnit<T> unit = golden_unit<T>();
  ASSERT_EQ(unit.channels(), 3);
  ASSERT_EQ(unit.state_size(), 8);
  const MatrixX<T> u = golden("lru", "u").matrix<double>().cast<T>();
  const MatrixX<double> y_expected = golden("lru", "y").matrix<double>();
  const VectorXc<double> x_expected = golden("lru", "final_state").matrix<std::complex<double>>();
  auto state = unit.initial_state();
  const Sequence<T> y = unit.forward(u, state, ssm::Mode::recurrence);
  SSM_EXPECT_NEAR_REL(y.template cast<double>(), y_expected, golden_tol<T>());
  SSM_EXPECT_NEAR_REL(state.x.template cast<std::complex<double>>(), x_expected, golden_tol<T>());
  SSM_EXPECT_NEAR_REL(unit.forward(u).template cast<double>(), y_expected, golden_tol<T>());
  auto streamed = unit.initial_state();
  Sequence<T> y_step(u.rows(), 3);
  for (Index t = 0; t < u.rows(); ++t) unit.step(u.row(t).transpose(), streamed, y_step.row(t).transpose());
  SSM_EXPECT_NEAR_REL(y_step.template cast<double>(), y_expected, golden_tol<T>());
  SSM_EXPECT_NEAR_REL(streamed.x.template cast<std::complex<double>>(), x_expected, golden_tol<T>());
}

TYPED_TEST(LinearRecurrentUnitTest, RingInitialisationFollowsThePaper) {
  using T = TypeParam;
  const Index H = 64, N = 256;
  const double r_min = 0.4, r_max = 0.9, max_phase = 3.14159 / 10;
  std::mt19937_64 gen(61);
  const auto unit = LinearRecurrentUnit<T>::initialise(H, N, gen, r_min, r_max, max_phase);
  const auto& p = unit.params();
  // The draws, replayed: u1 then u2 (the documented order).
  std::mt19937_64 replay(61);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  VectorX<double> u1(N), u2(N);
  for (Index n = 0; n < N; ++n) u1(n) = uniform(replay);
  for (Index n = 0; n < N; ++n) u2(n) = uniform(replay);
  const double tol = 10 * double(scalar_traits<T>::epsilon);
  for (Index n = 0; n < N; ++n) {
    const double modulus = std::abs(std::complex<double>(unit.lambda()(n)));
    const double phase = std::arg(std::complex<double>(unit.lambda()(n)));
    // |lambda|^2 = u1 (r_max^2 - r_min^2) + r_min^2, arg lambda = max_phase u2.
    EXPECT_NEAR(modulus * modulus, u1(n) * (r_max * r_max - r_min * r_min) + r_min * r_min, tol) << n;
    EXPECT_NEAR(phase, max_phase * u2(n), tol) << n;
    EXPECT_NEAR(std::exp(double(p.gamma_log(n))), std::sqrt(1 - modulus * modulus), tol) << n;
  }
  // B and C: each part normal / sqrt(2H), resp. / sqrt(N), so E|B|^2 = 1/H and E|C|^2 = 2/N
  // (16384 draws each: a 1% standard error).
  EXPECT_NEAR(p.B.cwiseAbs2().mean() * H, 1.0, 0.05);
  EXPECT_NEAR(p.C.cwiseAbs2().mean() * N, 2.0, 0.1);
  EXPECT_NEAR(p.B.real().cwiseAbs2().mean() * H, 0.5, 0.05);
  // Seedable: the same seed gives the same unit, another seed another.
  std::mt19937_64 gen_again(61), gen_other(62);
  const auto again = LinearRecurrentUnit<T>::initialise(H, N, gen_again, r_min, r_max, max_phase);
  const auto other = LinearRecurrentUnit<T>::initialise(H, N, gen_other, r_min, r_max, max_phase);
  EXPECT_EQ(again.params().B, p.B);
  EXPECT_EQ(again.params().nu_log, p.nu_log);
  EXPECT_NE(other.params().B, p.B);
}

TYPED_TEST(LinearRecurrentUnitTest, ConvolutionEqualsRecurrence) {
  using T = TypeParam;
  std::mt19937_64 gen(62);
  for (Index L : {1, 2, 37, 1000, 3000}) {
    const auto unit = LinearRecurrentUnit<T>::initialise(5, 12, gen, 0.5, 0.999);
    const MatrixX<T> u = random_normal<T>(L, 5, gen);
    auto state = unit.initial_state();
    const Sequence<T> y_rec = unit.forward(u, state, ssm::Mode::recurrence);
    // Relative to the largest output: the FFT adds eps log2(n) sum|K||u|, the recurrence (depth up to
    // 1/(1 - 0.999) = 1000 steps) rounds a few eps per step, but errors average out:
    // observed 1e-15 and 5e-7.
    const double tol = std::is_same_v<T, double> ? 1e-13 : 5e-6;
    SSM_EXPECT_NEAR_REL(unit.forward(u).template cast<double>(), y_rec.template cast<double>(), tol) << "L=" << L;
  }
}

TYPED_TEST(LinearRecurrentUnitTest, ChunkedPrefillStepAndCache) {
  using T = TypeParam;
  std::mt19937_64 gen(63);
  const auto unit = LinearRecurrentUnit<T>::initialise(4, 6, gen, 0.8, 0.99);
  const MatrixX<T> u = random_normal<T>(3000, 4, gen);  // longer than one internal chunk
  auto whole = unit.initial_state();
  const Sequence<T> y = unit.forward(u, whole, ssm::Mode::recurrence);
  auto pieces = unit.initial_state();
  const Sequence<T> y1 = unit.forward(u.topRows(1500), pieces, ssm::Mode::recurrence);
  const Sequence<T> y2 = unit.forward(u.middleRows(1500, 1490), pieces, ssm::Mode::recurrence);
  Sequence<T> y3(10, 4);
  for (Index t = 0; t < 10; ++t) unit.step(u.row(2990 + t).transpose(), pieces, y3.row(t).transpose());
  Sequence<T> joined(3000, 4);
  joined << y1, y2, y3;
  SSM_EXPECT_NEAR_REL(joined, y, 100 * double(scalar_traits<T>::epsilon));
  SSM_EXPECT_NEAR_REL(pieces.x, whole.x, 100 * double(scalar_traits<T>::epsilon));
  EXPECT_EQ(unit.kernel_spectrum(50).get(), unit.kernel_spectrum(50).get());
  // Mode kernels are the powers of lambda.
  const Sequence<T> K = unit.mode_kernels(40);
  for (Index n = 0; n < 6; ++n)
    for (Index l = 0; l < 40; ++l) {
      const std::complex<double> z = std::pow(std::complex<double>(unit.lambda()(n)), double(l));
      EXPECT_NEAR(K(l, n), z.real(), 20 * double(scalar_traits<T>::epsilon));
      EXPECT_NEAR(K(l, 6 + n), z.imag(), 20 * double(scalar_traits<T>::epsilon));
    }
}

TYPED_TEST(LinearRecurrentUnitTest, StepAllocatesNothing) {
  using T = TypeParam;
  std::mt19937_64 gen(64);
  const auto unit = LinearRecurrentUnit<T>::initialise(4, 8, gen);
  auto state = unit.initial_state();
  const MatrixX<T> u = random_normal<T>(10, 4, gen);
  Sequence<T> y(10, 4);
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (Index t = 0; t < 10; ++t) unit.step(u.row(t).transpose(), state, y.row(t).transpose()); }, why), 0) << why;
  auto again = unit.initial_state();
  SSM_EXPECT_NEAR_REL(unit.forward(u, again, ssm::Mode::recurrence), y, 50 * double(scalar_traits<T>::epsilon));
}

TYPED_TEST(LinearRecurrentUnitTest, MillionStepsStayFiniteAndModesAgree) {
  using T = TypeParam;
  std::mt19937_64 gen(65);
  const Index L = Index(1) << 20;
  // One channel, four modes, |lambda| up to 0.9999 (a 1e4-step memory).
  const auto unit = LinearRecurrentUnit<T>::initialise(1, 4, gen, 0.99, 0.9999);
  const MatrixX<T> u = random_normal<T>(L, 1, gen);
  auto state = unit.initial_state();
  const Sequence<T> y_rec = unit.forward(u, state, ssm::Mode::recurrence);
  const Sequence<T> y_conv = unit.forward(u);
  ASSERT_TRUE(y_rec.allFinite());
  ASSERT_TRUE(y_conv.allFinite());
  ASSERT_TRUE(state.x.allFinite());
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;  // observed 1e-14 and 3.7e-6
  SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), tol);
}

TYPED_TEST(LinearRecurrentUnitTest, FloatAgreesWithDoubleWithinDocumentedBound) {
  using T = TypeParam;
  std::mt19937_64 gen(66);
  const auto reference = LinearRecurrentUnit<double>::initialise(8, 32, gen, 0.5, 0.999);
  const auto& p = reference.params();
  const LinearRecurrentUnit<T> unit(LinearRecurrentUnitParams<T>{
      p.nu_log.template cast<T>(), p.theta_log.template cast<T>(), p.gamma_log.template cast<T>(),
      p.B.template cast<std::complex<T>>(), p.C.template cast<std::complex<T>>(), p.D.template cast<T>()});
  const MatrixX<double> u = random_normal<double>(2000, 8, gen);
  auto s = reference.initial_state();
  const Sequence<double> y = reference.forward(u, s, ssm::Mode::recurrence);
  // Documented bound: float outputs within 1e-5 of double, relative to the largest output, for
  // |lambda| <= 0.999 (rounding lambda to float moves lambda^l by l eps |lambda|^l <= 0.37 eps / (1 - |lambda|),
  // which averages down over the modes and steps): observed 1.2e-6.
  const double tol = std::is_same_v<T, double> ? 1e-13 : 1e-5;
  auto s_t = unit.initial_state();
  SSM_EXPECT_NEAR_REL(unit.forward(u.cast<T>(), s_t, ssm::Mode::recurrence).template cast<double>(), y, tol);
  SSM_EXPECT_NEAR_REL(unit.forward(u.cast<T>()).template cast<double>(), y, tol);
}

TYPED_TEST(LinearRecurrentUnitTest, BadInputsAreClearErrors) {
  using T = TypeParam;
  std::mt19937_64 gen(67);
  const auto unit = LinearRecurrentUnit<T>::initialise(3, 5, gen);
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected ssm::error containing '" << needle << "'";
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto p = unit.params();
  expect_error([&] { auto q = p; q.B = MatrixXc<T>::Ones(5, 2); LinearRecurrentUnit<T>{q}; },
               "LinearRecurrentUnit: B: expected 5 x 3 (N x H), got 5 x 2");
  expect_error([&] { auto q = p; q.C = MatrixXc<T>::Ones(5, 3); LinearRecurrentUnit<T>{q}; },
               "LinearRecurrentUnit: C: expected 3 x 5 (H x N)");
  expect_error([&] { auto q = p; q.theta_log = VectorX<T>::Ones(4); LinearRecurrentUnit<T>{q}; },
               "LinearRecurrentUnit: theta_log: expected a vector of 5");
  expect_error([&] { auto q = p; q.nu_log(2) = std::numeric_limits<T>::quiet_NaN(); LinearRecurrentUnit<T>{q}; },
               "LinearRecurrentUnit: nu_log: expected finite values");
  expect_error([&] { auto q = p; q.D.resize(0); LinearRecurrentUnit<T>{q}; }, "LinearRecurrentUnit: D: expected a vector of H >= 1");
  expect_error([&] { LinearRecurrentUnit<T>::initialise(3, 5, gen, 0.5, 1.0); }, "r_max: expected < 1");
  expect_error([&] { LinearRecurrentUnit<T>::initialise(3, 5, gen, 0.9, 0.5); }, "r_min: expected 0 <= r_min < r_max");
  expect_error([&] { LinearRecurrentUnit<T>::initialise(3, 0, gen); }, "N: expected >= 1, got 0");
  expect_error([&] { LinearRecurrentUnit<T>::initialise(3, 5, gen, 0.0, 0.9, -1.0); }, "max_phase");
  auto state = unit.initial_state();
  expect_error([&] { unit.forward(MatrixX<T>::Ones(4, 2), state, ssm::Mode::recurrence); },
               "LinearRecurrentUnit::forward: u: expected L x 3 (L x H), got 4 x 2");
  EXPECT_EQ(unit.forward(MatrixX<T>(0, 3)).rows(), 0);  // L = 0 is an empty sequence, as for every layer
  auto bad = unit.initial_state();
  bad.x.resize(4);
  expect_error([&] { unit.forward(MatrixX<T>::Ones(4, 3), bad, ssm::Mode::recurrence); }, "state.x: expected a vector of 5");
  VectorX<T> u2(2), y3(3);
  expect_error([&] { unit.step(u2, state, y3); }, "LinearRecurrentUnit::step: u: expected a vector of 3");
}

}  // namespace
}  // namespace ssm::test
