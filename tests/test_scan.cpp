// The diagonal linear-recurrence engine: sequential and chunked scans against the recurrence in
// long double, against each other, split into pieces, over 2^20 steps, and with bad input.
#include "test_support.hpp"

#include "ssm/core/diagonal_scan.hpp"

#include <string>

namespace ssm::test {
namespace {

using cld = std::complex<long double>;

template <class T>
class ScanTest : public ::testing::Test {};
TYPED_TEST_SUITE(ScanTest, Scalars);

/// Stable random mode factors: |a| in [0.5, 0.999], any phase.
template <class T>
MatrixXc<T> random_factors(Index rows, Index cols, std::mt19937_64& gen) {
  std::uniform_real_distribution<double> radius(0.5, 0.999), phase(-3.14159, 3.14159);
  MatrixXc<T> a(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) a(i, j) = std::complex<T>(std::polar(radius(gen), phase(gen)));
  return a;
}

/// The recurrence in long double; `a` is 1 x M (time-invariant) or L x M.
template <class T>
Eigen::Matrix<cld, Eigen::Dynamic, Eigen::Dynamic> reference_scan(const MatrixXc<T>& a, const MatrixXc<T>& b,
                                                                   const VectorXc<T>& x0) {
  const Index L = b.rows(), M = b.cols();
  Eigen::Matrix<cld, Eigen::Dynamic, Eigen::Dynamic> x(L, M);
  for (Index m = 0; m < M; ++m) {
    cld s(x0(m).real(), x0(m).imag());
    for (Index t = 0; t < L; ++t) {
      const std::complex<T> at = a(a.rows() == 1 ? 0 : t, m);
      s = cld(at.real(), at.imag()) * s + cld(b(t, m).real(), b(t, m).imag());
      x(t, m) = s;
    }
  }
  return x;
}

template <class T>
MatrixXc<double> to_double(const Eigen::Matrix<cld, Eigen::Dynamic, Eigen::Dynamic>& m) {
  return m.unaryExpr([](const cld& v) { return std::complex<double>(double(v.real()), double(v.imag())); });
}

/// A scan of L steps with |a| < 1 rounds O(min(L, 1/(1-|a|))) times per state: with |a| <= 0.999
/// at most ~1000 effective steps, each a multiply-add of a few roundings.
template <class T>
double scan_tol(Index L) {
  return 8.0 * double(scalar_traits<T>::epsilon) * double(std::min<Index>(L, 1000) + 10);
}

TYPED_TEST(ScanTest, SequentialMatchesLongDoubleRecurrence) {
  using T = TypeParam;
  std::mt19937_64 gen(1);
  for (Index M : {1, 3, 4, 7, 9}) {
    for (Index L : {1, 2, 5, 100, 777}) {
      const MatrixXc<T> a = random_factors<T>(1, M, gen);
      const MatrixXc<T> av = random_factors<T>(L, M, gen);
      const MatrixXc<T> b = random_complex<T>(L, M, gen);
      const VectorXc<T> x0 = random_complex<T>(M, 1, gen);
      const auto inv = diagonal_scan(a.row(0).transpose(), b, x0, ScanMethod::sequential);
      const auto var = diagonal_scan_varying(av, b, x0, ScanMethod::sequential);
      const MatrixXc<double> e_inv = to_double<T>(reference_scan<T>(a, b, x0));
      const MatrixXc<double> e_var = to_double<T>(reference_scan<T>(av, b, x0));
      SSM_EXPECT_NEAR_REL(inv.states.template cast<std::complex<double>>(), e_inv, scan_tol<T>(L)) << "M=" << M << " L=" << L;
      SSM_EXPECT_NEAR_REL(var.states.template cast<std::complex<double>>(), e_var, scan_tol<T>(L)) << "M=" << M << " L=" << L;
      SSM_EXPECT_NEAR_REL(inv.final_state.template cast<std::complex<double>>(), e_inv.row(L - 1).transpose().eval(),
                          scan_tol<T>(L));
      SSM_EXPECT_NEAR_REL(var.final_state.template cast<std::complex<double>>(), e_var.row(L - 1).transpose().eval(),
                          scan_tol<T>(L));
    }
  }
}

TYPED_TEST(ScanTest, ChunkedEqualsSequential) {
  using T = TypeParam;
  std::mt19937_64 gen(2);
  for (Index M : {1, 5, 9}) {
    for (Index L : {1, 3, 64, 1001, 20000}) {
      const VectorXc<T> a = random_factors<T>(M, 1, gen);
      const MatrixXc<T> av = random_factors<T>(L, M, gen);
      const MatrixXc<T> b = random_complex<T>(L, M, gen);
      const VectorXc<T> x0 = random_complex<T>(M, 1, gen);
      const auto seq = diagonal_scan(a, b, x0, ScanMethod::sequential);
      const auto seq_var = diagonal_scan_varying(av, b, x0, ScanMethod::sequential);
      for (Index blocks : {0, 1, 2, 3, 7, 64}) {
        const auto par = diagonal_scan(a, b, x0, ScanMethod::chunked, blocks);
        const auto par_var = diagonal_scan_varying(av, b, x0, ScanMethod::chunked, blocks);
        // Each block starts from a composed carry: a few more roundings than one pass, never more.
        const double tol = 2 * scan_tol<T>(L);
        SSM_EXPECT_NEAR_REL(par.states, seq.states, tol) << "M=" << M << " L=" << L << " blocks=" << blocks;
        SSM_EXPECT_NEAR_REL(par.final_state, seq.final_state, tol);
        SSM_EXPECT_NEAR_REL(par_var.states, seq_var.states, tol) << "M=" << M << " L=" << L << " blocks=" << blocks;
        SSM_EXPECT_NEAR_REL(par_var.final_state, seq_var.final_state, tol);
      }
      const auto automatic = diagonal_scan(a, b, x0);
      SSM_EXPECT_NEAR_REL(automatic.states, seq.states, 2 * scan_tol<T>(L));
    }
  }
}

TYPED_TEST(ScanTest, ScanningInPiecesContinuesExactly) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  const Index L = 300, M = 6, cut = 123;
  const VectorXc<T> a = random_factors<T>(M, 1, gen);
  const MatrixXc<T> b = random_complex<T>(L, M, gen);
  const VectorXc<T> x0 = random_complex<T>(M, 1, gen);
  const auto whole = diagonal_scan(a, b, x0, ScanMethod::sequential);
  const auto first = diagonal_scan(a, b.topRows(cut), x0, ScanMethod::sequential);
  const auto second = diagonal_scan(a, b.bottomRows(L - cut), first.final_state, ScanMethod::sequential);
  // The same operations in the same order: bit for bit.
  EXPECT_EQ(MatrixXc<T>(whole.states.topRows(cut)), first.states);
  EXPECT_EQ(MatrixXc<T>(whole.states.bottomRows(L - cut)), second.states);
  EXPECT_EQ(whole.final_state, second.final_state);
  // In place on a block of a larger matrix (outer stride != L).
  MatrixXc<T> big = MatrixXc<T>::Zero(L + 10, M);
  big.topRows(L) = b;
  VectorXc<T> state = x0;
  diagonal_scan_inplace(a, big.topRows(L), state, ScanMethod::sequential);
  EXPECT_EQ(MatrixXc<T>(big.topRows(L)), whole.states);
  EXPECT_EQ(state, whole.final_state);
  EXPECT_EQ(MatrixXc<T>(big.bottomRows(10)), MatrixXc<T>::Zero(10, M));
}

TYPED_TEST(ScanTest, EmptySequenceReturnsTheInitialState) {
  using T = TypeParam;
  const VectorXc<T> a = VectorXc<T>::Constant(3, std::complex<T>(T(0.5), T(0)));
  const VectorXc<T> x0 = VectorXc<T>::Constant(3, std::complex<T>(T(1), T(2)));
  const auto r = diagonal_scan(a, MatrixXc<T>(0, 3), x0, ScanMethod::chunked);
  EXPECT_EQ(r.states.rows(), 0);
  EXPECT_EQ(r.final_state, x0);
}

TYPED_TEST(ScanTest, MillionStepsStayFiniteAndAgree) {
  using T = TypeParam;
  // One slow mode (|a| = 1 - 1e-5, a time constant of 1e5 steps) and one pure rotation (|a| = 1),
  // driven by unit noise: the state grows like sqrt(t), no overflow, no NaN.
  const Index L = Index(1) << 20;
  std::mt19937_64 gen(4);
  VectorXc<T> a(2);
  a << std::complex<T>(std::polar(1.0 - 1e-5, 0.001)), std::complex<T>(std::polar(1.0, 2.0));
  const MatrixXc<T> b = random_complex<T>(L, 2, gen);
  const VectorXc<T> x0 = VectorXc<T>::Zero(2);
  const auto seq = diagonal_scan(a, b, x0, ScanMethod::sequential);
  const auto par = diagonal_scan(a, b, x0, ScanMethod::chunked, 8);
  ASSERT_TRUE(seq.states.allFinite());
  ASSERT_TRUE(par.states.allFinite());
  // Both methods against the recurrence in long double (64-bit mantissa: its own error is ~2^-11 of
  // a double scan's), at every step. Error analysis: each step x_t = fl(a x_{t-1} + b_t) commits a
  // rounding of at most ~4 eps |x| (complex multiply and add), which the later steps carry on with
  // weight |a|^k. Roundings of random data are unbiased and independent, so they add like a random
  // walk: after an effective depth n = min(L, 1/(1 - |a|^2)) steps the error is ~ eps sqrt(n) max|x|
  // (a systematic bias would give eps n max|x| instead, 1024x more at L = 2^20, and fails this).
  // Depths: rotation n = L = 2^20 (float bound 4 eps 1024 = 4.9e-4); slow mode n = 5e4.
  // The chunked scan adds one carry per block (8 here), each a few roundings: negligible, provided each
  // block's transition a^n is itself accurate to a few eps (exp(n log a) in higher precision; repeated
  // squaring amplifies the first rounding n-fold, an error eps n = 0.016 at n = 2^17 in float).
  for (Index m = 0; m < 2; ++m) {
    SCOPED_TRACE(m == 0 ? "slow decaying mode" : "rotation mode");
    const cld am(a(m).real(), a(m).imag());
    const double depth = std::min(double(L), 1.0 / (1.0 - double(std::norm(am))));
    cld s = 0;
    double worst_seq = 0, worst_par = 0, scale = 0;
    for (Index t = 0; t < L; ++t) {
      s = am * s + cld(b(t, m).real(), b(t, m).imag());
      const auto at = [&](const MatrixXc<T>& x) { return cld(x(t, m).real(), x(t, m).imag()); };
      worst_seq = std::max(worst_seq, double(std::abs(at(seq.states) - s)));
      worst_par = std::max(worst_par, double(std::abs(at(par.states) - s)));
      scale = std::max(scale, double(std::abs(s)));
    }
    const double bound = 4 * double(scalar_traits<T>::epsilon) * std::sqrt(depth) * scale;
    EXPECT_LE(worst_seq, bound) << "sequential: relative error " << worst_seq / scale << ", depth " << depth;
    EXPECT_LE(worst_par, bound) << "chunked (8 blocks): relative error " << worst_par / scale << ", depth " << depth;
  }
}

TYPED_TEST(ScanTest, BadShapesAreClearErrors) {
  using T = TypeParam;
  const VectorXc<T> a = VectorXc<T>::Ones(3);
  MatrixXc<T> x = MatrixXc<T>::Ones(5, 4);
  VectorXc<T> state = VectorXc<T>::Zero(4);
  try {
    diagonal_scan_inplace(a, x, state);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("diagonal_scan_inplace"), std::string::npos) << what;
    EXPECT_NE(what.find("a:"), std::string::npos) << what;
    EXPECT_NE(what.find("4"), std::string::npos) << what;
    EXPECT_NE(what.find("3 x 1"), std::string::npos) << what;
  }
  VectorXc<T> short_state = VectorXc<T>::Zero(3);
  MatrixXc<T> x3 = MatrixXc<T>::Ones(5, 3);
  VectorXc<T> two = VectorXc<T>::Zero(2);
  EXPECT_THROW(diagonal_scan_inplace(a, x3, two), ssm::error);
  EXPECT_THROW(diagonal_scan_varying_inplace(MatrixXc<T>::Ones(4, 3).eval(), x3, short_state), ssm::error);
  EXPECT_THROW(diagonal_scan_inplace(a, x3, short_state, ScanMethod::chunked, -1), ssm::error);
  EXPECT_THROW(diagonal_scan(a, x3, VectorXc<T>::Zero(4).eval()), ssm::error);
}

}  // namespace
}  // namespace ssm::test
