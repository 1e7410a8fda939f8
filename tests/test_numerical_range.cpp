// Numerical range across layers: a million steps, step sizes from 1e-4 to 1, and eigenvalues close
// to the unit circle. Every output must stay finite, and the convolutional and recurrent modes (two
// independent computations from the same parameters) must keep agreeing.

#include "test_support.hpp"

#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/layers/selective_scan.hpp"

namespace ssm::test {
namespace {

template <class T>
class NumericalRange : public ::testing::Test {};
TYPED_TEST_SUITE(NumericalRange, Scalars);

/// Relative agreement of convolution and recurrence at depth L: the FFT adds about
/// eps log2(n) sum|K| |u|, the recurrence about eps x (memory length) per output.
template <class T>
double modes_tolerance() {
  return std::is_same_v<T, double> ? 1e-10 : 1e-4;
}

TYPED_TEST(NumericalRange, S4MillionStepsConvolutionEqualsRecurrence) {
  using T = TypeParam;
  std::mt19937_64 gen(101);
  const Index L = Index(1) << 20;
  // dt = 1e-4: LegS's slowest modes decay over ~1e4 steps, so the whole length matters.
  const S4<T> layer(S4<T>::hippo_init(1, 16, hippo::Measure::legs, 1e-4, 1e-4, gen));
  const MatrixX<T> u = random_normal<T>(L, 1, gen);
  const Sequence<T> y_conv = layer.forward(u);
  auto state = layer.initial_state();
  const Sequence<T> y_rec = layer.forward_recurrent(u, state);
  ASSERT_TRUE(y_conv.allFinite());
  ASSERT_TRUE(y_rec.allFinite());
  ASSERT_TRUE(state.x.allFinite());
  SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), modes_tolerance<T>());
}

TYPED_TEST(NumericalRange, StepSizesFromTenThousandthToOne) {
  using T = TypeParam;
  std::mt19937_64 gen(102);
  const Index L = 512;
  const MatrixX<T> u = random_normal<T>(L, 2, gen);
  for (double dt : {1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
    SCOPED_TRACE(testing::Message() << "dt = " << dt);
    for (auto measure : {hippo::Measure::legs, hippo::Measure::fout}) {
      const S4<T> s4(S4<T>::hippo_init(2, 16, measure, dt, dt, gen));
      auto state = s4.initial_state();
      const Sequence<T> y = s4.forward(u);
      ASSERT_TRUE(y.allFinite());
      SSM_EXPECT_NEAR_REL(y.template cast<double>(), s4.forward_recurrent(u, state).template cast<double>(),
                          modes_tolerance<T>());
    }
    for (auto method : {Discretization::zoh, Discretization::bilinear}) {
      const auto s4d = S4D<T>::initialise(2, 16, hippo::DiagonalInit::inv, method, gen, dt, dt);
      auto state = s4d.initial_state();
      const Sequence<T> y = s4d.forward(u);
      ASSERT_TRUE(y.allFinite());
      SSM_EXPECT_NEAR_REL(y.template cast<double>(), s4d.forward_recurrent(u, state).template cast<double>(),
                          modes_tolerance<T>());
    }
  }
}

TYPED_TEST(NumericalRange, EigenvaluesCloseToTheUnitCircle) {
  using T = TypeParam;
  std::mt19937_64 gen(103);
  const Index L = 8192;
  // |lambda| in [1 - 1e-6, 1 - 1e-7]: memories of 1e6 to 1e7 steps, longer than the sequence.
  const auto lru = LinearRecurrentUnit<T>::initialise(2, 8, gen, 1.0 - 1e-6, 1.0 - 1e-7);
  for (Index n = 0; n < 8; ++n) ASSERT_LT(std::abs(lru.lambda()(n)), T(1)) << n;
  const MatrixX<T> u = random_normal<T>(L, 2, gen);
  auto state = lru.initial_state();
  const Sequence<T> y_rec = lru.forward_recurrent(u, state);
  const Sequence<T> y_conv = lru.forward(u);
  ASSERT_TRUE(y_rec.allFinite());
  ASSERT_TRUE(y_conv.allFinite());
  SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), modes_tolerance<T>());
}

TYPED_TEST(NumericalRange, SelectiveScanMillionStepsStaysFinite) {
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
  ASSERT_TRUE(r.out.allFinite());
  ASSERT_TRUE(r.last_state.allFinite());
}

}  // namespace
}  // namespace ssm::test
