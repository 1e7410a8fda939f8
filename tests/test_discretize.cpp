// Discretisation of diagonal, dense and DPLR systems, each against an independent computation.
#include "test_support.hpp"

#include "ssm/discretize.hpp"

#include <string>

namespace ssm::test {
namespace {

using cld = std::complex<long double>;

template <class T>
class DiscretizeTest : public ::testing::Test {};
TYPED_TEST_SUITE(DiscretizeTest, Scalars);

/// (e^z - 1)/z in long double: the Taylor series for small |z|, the direct formula otherwise.
cld expm1_over_ld(cld z) {
  if (std::abs(z) < 0.5L) {
    cld term = 1, sum = 0;
    for (int k = 1; k < 40; ++k) {
      sum += term;
      term *= z / (long double)(k + 1);
    }
    return sum;
  }
  return (std::exp(z) - 1.0L) / z;
}

/// Random stable diagonal systems spanning many scales of dt A, including tiny ones.
template <class T>
void random_diagonal_system(Index H, Index M, std::mt19937_64& gen, MatrixXc<T>& A, MatrixXc<T>& B, VectorX<T>& dt) {
  std::uniform_real_distribution<double> u(0, 1);
  A.resize(H, M);
  for (Index h = 0; h < H; ++h)
    for (Index m = 0; m < M; ++m) {
      const double re = -std::pow(10.0, -8 + 10 * u(gen));
      const double im = (u(gen) - 0.5) * std::pow(10.0, -8 + 10 * u(gen));
      A(h, m) = std::complex<T>(T(re), T(im));
    }
  B = random_complex<T>(H, M, gen);
  dt.resize(H);
  for (Index h = 0; h < H; ++h) dt(h) = T(std::pow(10.0, -4 + 4 * u(gen)));
}

TYPED_TEST(DiscretizeTest, DiagonalZOHMatchesLongDoubleFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(11);
  MatrixXc<T> A, B;
  VectorX<T> dt;
  random_diagonal_system<T>(16, 24, gen, A, B, dt);
  const auto d = discretize_diagonal(A, B, dt, Discretization::zoh);
  ASSERT_EQ(d.A_bar.rows(), 16);
  ASSERT_EQ(d.B_bar.cols(), 24);
  // Computed in double, rounded once: each entry is within a few ulps of T relative to itself.
  const double tol = 4 * double(scalar_traits<T>::epsilon) + 1e-14;
  for (Index h = 0; h < 16; ++h)
    for (Index m = 0; m < 24; ++m) {
      const cld a(A(h, m).real(), A(h, m).imag()), b(B(h, m).real(), B(h, m).imag());
      const long double step = dt(h);
      const cld z = step * a;
      const cld a_bar = std::exp(z), b_bar = step * b * expm1_over_ld(z);
      EXPECT_LE(std::abs(cld(d.A_bar(h, m).real(), d.A_bar(h, m).imag()) - a_bar), tol * std::abs(a_bar)) << h << "," << m;
      EXPECT_LE(std::abs(cld(d.B_bar(h, m).real(), d.B_bar(h, m).imag()) - b_bar), tol * std::abs(b_bar)) << h << "," << m;
    }
}

TYPED_TEST(DiscretizeTest, DiagonalBilinearMatchesLongDoubleFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(12);
  MatrixXc<T> A, B;
  VectorX<T> dt;
  random_diagonal_system<T>(16, 24, gen, A, B, dt);
  const auto d = discretize_diagonal(A, B, dt, Discretization::bilinear);
  const double tol = 4 * double(scalar_traits<T>::epsilon) + 1e-14;
  for (Index h = 0; h < 16; ++h)
    for (Index m = 0; m < 24; ++m) {
      const cld a(A(h, m).real(), A(h, m).imag()), b(B(h, m).real(), B(h, m).imag());
      const long double step = dt(h);
      const cld a_bar = (1.0L + step / 2 * a) / (1.0L - step / 2 * a), b_bar = step * b / (1.0L - step / 2 * a);
      EXPECT_LE(std::abs(cld(d.A_bar(h, m).real(), d.A_bar(h, m).imag()) - a_bar), tol * std::abs(a_bar));
      EXPECT_LE(std::abs(cld(d.B_bar(h, m).real(), d.B_bar(h, m).imag()) - b_bar), tol * std::abs(b_bar));
    }
}

TEST(DiscretizeDiagonal, ZOHIsAccurateForTinyAndZeroA) {
  // dt A = 1e-12 (1 + i): the naive (exp(dt A) - 1)/A loses every digit; expm1 keeps them.
  MatrixXc<double> A(1, 3), B(1, 3);
  A << Complex<double>(-1e-12, 1e-12), Complex<double>(0, 0), Complex<double>(0, 1e-9);
  B << 1.0, Complex<double>(2, 1), 1.0;
  VectorX<double> dt(1);
  dt << 1.0;
  const auto d = discretize_diagonal(A, B, dt, Discretization::zoh);
  const Complex<double> z = A(0, 0);
  const Complex<double> expected = 1.0 + z / 2.0 + z * z / 6.0;
  EXPECT_LT(std::abs(d.B_bar(0, 0) - expected), 1e-16);
  EXPECT_EQ(d.B_bar(0, 1), Complex<double>(2, 1));  // A = 0: Bbar = dt B exactly
  EXPECT_EQ(d.A_bar(0, 1), Complex<double>(1, 0));
  EXPECT_LT(std::abs(d.B_bar(0, 2) - (1.0 + A(0, 2) / 2.0)), 1e-17);
}

TYPED_TEST(DiscretizeTest, DiagonalBadInputsThrow) {
  using T = TypeParam;
  const MatrixXc<T> A = MatrixXc<T>::Constant(2, 3, std::complex<T>(-1, 0));
  const MatrixXc<T> B = MatrixXc<T>::Ones(2, 3);
  VectorX<T> dt = VectorX<T>::Constant(2, T(0.1));
  EXPECT_NO_THROW(discretize_diagonal(A, B, dt, Discretization::zoh));
  EXPECT_THROW(discretize_diagonal<T>(A, MatrixXc<T>::Ones(2, 4), dt, Discretization::zoh), ssm::error);
  EXPECT_THROW(discretize_diagonal<T>(A, B, VectorX<T>::Constant(3, T(0.1)), Discretization::zoh), ssm::error);
  VectorX<T> bad = dt;
  bad(1) = 0;
  try {
    discretize_diagonal(A, B, bad, Discretization::bilinear);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("discretize_diagonal"), std::string::npos) << what;
    EXPECT_NE(what.find("dt"), std::string::npos) << what;
    EXPECT_NE(what.find("> 0"), std::string::npos) << what;
  }
  MatrixXc<T> singular = A;
  singular(0, 0) = std::complex<T>(16, 0);  // dt A = 2 exactly with dt = 1/8
  const VectorX<T> eighth = VectorX<T>::Constant(2, T(0.125));
  EXPECT_THROW(discretize_diagonal(singular, B, eighth, Discretization::bilinear), ssm::error);
  EXPECT_NO_THROW(discretize_diagonal(singular, B, eighth, Discretization::zoh));
  MatrixXc<T> nan = A;
  nan(1, 2) = std::complex<T>(std::numeric_limits<T>::quiet_NaN(), 0);
  EXPECT_THROW(discretize_diagonal(nan, B, dt, Discretization::zoh), ssm::error);
}

}  // namespace
}  // namespace ssm::test
