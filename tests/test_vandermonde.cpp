// The Vandermonde kernel K[l, h] = 2 Re sum_n W z^l against the sum in long double with every power
// taken as exp(l log z) in long double; at L = 2^20; float against double; bad input.
#include "test_support.hpp"

#include "ssm/kernels/vandermonde.hpp"

#include <string>

namespace ssm::test {
namespace {

using cld = std::complex<long double>;

template <class T>
class VandermondeTest : public ::testing::Test {};
TYPED_TEST_SUITE(VandermondeTest, Scalars);

/// Random stable modes: Re log z in [-0.5, -1e-4] (log-uniform), Im log z in [-pi, pi].
MatrixXc<double> random_log_modes(Index H, Index M, std::mt19937_64& gen) {
  std::uniform_real_distribution<double> u(0, 1);
  MatrixXc<double> lz(H, M);
  for (Index h = 0; h < H; ++h)
    for (Index m = 0; m < M; ++m)
      lz(h, m) = {-std::exp(std::log(1e-4) + u(gen) * (std::log(0.5) - std::log(1e-4))), 3.14159 * (2 * u(gen) - 1)};
  return lz;
}

/// K[l, h] for one (l, h) in long double, each power exp(l log z) taken directly.
template <class T>
long double reference_tap(const MatrixXc<T>& lz, const MatrixXc<T>& W, Index h, Index l) {
  cld acc = 0;
  for (Index n = 0; n < lz.cols(); ++n) {
    const cld logz(lz(h, n).real(), lz(h, n).imag()), w(W(h, n).real(), W(h, n).imag());
    acc += w * std::exp((long double)l * logz);
  }
  return 2 * acc.real();
}

/// The largest possible |K[l, h]|: 2 sum_n |W[h, n]| (|z| <= 1). Every rounding error scales with it.
template <class T>
double weight_scale(const MatrixXc<T>& W) {
  return 2 * W.cwiseAbs().rowwise().sum().maxCoeff();
}

/// Error bound relative to `weight_scale`: the powers carry ~70 roundings of double (chains of at most
/// 63 products), then are rounded once to T and summed over 2M terms in T.
template <class T>
double kernel_tol(Index M) {
  return 4 * double(scalar_traits<T>::epsilon) * double(2 * M + 4) + 200 * 1.1e-16;
}

TYPED_TEST(VandermondeTest, MatchesLongDoubleSum) {
  using T = TypeParam;
  std::mt19937_64 gen(21);
  for (Index M : {1, 4, 13}) {
    for (Index L : {1, 7, 16, 17, 100, 1000, 4099}) {
      const Index H = 3;
      const MatrixXc<T> lz = random_log_modes(H, M, gen).cast<std::complex<T>>();
      const MatrixXc<T> W = random_complex<T>(H, M, gen);
      const Sequence<T> K = vandermonde_kernel<T>(lz, W, L);
      ASSERT_EQ(K.rows(), L);
      ASSERT_EQ(K.cols(), H);
      const double bound = kernel_tol<T>(M) * weight_scale(W);
      for (Index h = 0; h < H; ++h)
        for (Index l = 0; l < L; ++l)
          ASSERT_LE(std::abs((long double)K(l, h) - reference_tap(lz, W, h, l)), bound)
              << "M=" << M << " L=" << L << " h=" << h << " l=" << l;
    }
  }
}

TYPED_TEST(VandermondeTest, MillionTapsStayFiniteAndAccurate) {
  using T = TypeParam;
  // One channel, two slow modes (|z| = exp(-1e-6) and exp(-2e-5)) and one fast decaying mode that
  // underflows early: no overflow, no NaN, and the last taps are still right.
  const Index L = Index(1) << 20;
  MatrixXc<T> lz(1, 3), W(1, 3);
  lz << std::complex<T>(T(-1e-6), T(0.01)), std::complex<T>(T(-2e-5), T(-2.5)), std::complex<T>(T(-0.5), T(1.0));
  W << std::complex<T>(T(0.3), T(-0.7)), std::complex<T>(T(1.1), T(0.2)), std::complex<T>(T(-0.4), T(0.9));
  const Sequence<T> K = vandermonde_kernel<T>(lz, W, L);
  ASSERT_TRUE(K.allFinite());
  // The phase l Im(log z) is large at l ~ 1e6: the reference is exact for the given (rounded) log z.
  const double bound = kernel_tol<T>(3) * weight_scale(W);
  for (Index l = 0; l < L; l += 9973) EXPECT_LE(std::abs((long double)K(l, 0) - reference_tap(lz, W, 0, l)), bound) << l;
  EXPECT_LE(std::abs((long double)K(L - 1, 0) - reference_tap(lz, W, 0, L - 1)), bound);
}

TYPED_TEST(VandermondeTest, FloatAgreesWithDoubleWithinDocumentedBound) {
  using T = TypeParam;
  std::mt19937_64 gen(22);
  const Index H = 4, M = 32, L = 5000;
  const MatrixXc<double> lz = random_log_modes(H, M, gen);
  const MatrixXc<double> W = random_complex<double>(H, M, gen);
  // The same double parameters: the float kernel differs only by its own roundings,
  // at most eps_float (2M + 4) x 4 relative to 2 sum |W|.
  const Sequence<T> K = vandermonde_kernel<T>(lz, W, L);
  const Sequence<double> Kd = vandermonde_kernel<double>(lz, W, L);
  const double bound = kernel_tol<T>(M) * weight_scale(W);
  EXPECT_LE((K.template cast<double>() - Kd).cwiseAbs().maxCoeff(), bound);
}

TYPED_TEST(VandermondeTest, WritesIntoABlockOfALargerMatrix) {
  using T = TypeParam;
  std::mt19937_64 gen(23);
  const MatrixXc<double> lz = random_log_modes(2, 5, gen);
  const MatrixXc<double> W = random_complex<double>(2, 5, gen);
  Sequence<T> big = Sequence<T>::Constant(300, 4, T(7));
  vandermonde_kernel_into<T>(lz, W, big.block(10, 1, 257, 2));
  const Sequence<T> K = vandermonde_kernel<T>(lz, W, 257);
  EXPECT_EQ(Sequence<T>(big.block(10, 1, 257, 2)), K);
  EXPECT_EQ(big.col(0), VectorX<T>::Constant(300, T(7)));
  EXPECT_EQ(big.col(3), VectorX<T>::Constant(300, T(7)));
  EXPECT_EQ(Sequence<T>(big.block(0, 1, 10, 2)), Sequence<T>::Constant(10, 2, T(7)));
  EXPECT_EQ(vandermonde_kernel<T>(lz, W, 0).rows(), 0);
}

TYPED_TEST(VandermondeTest, BadInputsAreClearErrors) {
  using T = TypeParam;
  const MatrixXc<T> lz = MatrixXc<T>::Constant(2, 3, std::complex<T>(T(-0.1), T(0)));
  const MatrixXc<T> W3 = MatrixXc<T>::Ones(2, 3), W2 = MatrixXc<T>::Ones(2, 2);
  try {
    vandermonde_kernel<T>(lz, W2, 10);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("vandermonde_kernel: W: expected 2 x 3"), std::string::npos) << what;
    EXPECT_NE(what.find("got 2 x 2"), std::string::npos) << what;
  }
  EXPECT_THROW(vandermonde_kernel<T>(lz, W3, -1), ssm::error);
  MatrixXc<T> bad = lz;
  bad(1, 2) = std::complex<T>(std::numeric_limits<T>::quiet_NaN(), T(0));
  EXPECT_THROW(vandermonde_kernel<T>(bad, W3, 10), ssm::error);
  Sequence<T> wrong(10, 3);
  EXPECT_THROW(vandermonde_kernel_into<T>(lz, W3, wrong), ssm::error);
}

}  // namespace
}  // namespace ssm::test
