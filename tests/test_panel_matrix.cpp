/// PanelMatrix (core/panel_matrix.hpp): Y = X W^T + bias from the packed weights, against the same
/// sums taken one by one in the order the header states (bit for bit), against long double, for every
/// stream-block size, panel remainder, operand layout and stride; and its argument errors.

#include <gtest/gtest.h>

#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/core/panel_matrix.hpp"

#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace ssm::test {
namespace {

template <class T>
class PanelMatrixTest : public ::testing::Test {};
TYPED_TEST_SUITE(PanelMatrixTest, Scalars);

/// bias[m] + sum_k W(m, k) X(b, k), summed from zero in order k = 0 .. K - 1 with one rounding per
/// multiply-add when the build fuses them (as the kernel's packets do), else two.
template <class T>
MatrixX<T> ordered_product(const MatrixX<T>& X, const MatrixX<T>& W, const VectorX<T>& bias) {
  MatrixX<T> Y(X.rows(), W.rows());
  for (Index b = 0; b < X.rows(); ++b)
    for (Index m = 0; m < W.rows(); ++m) {
      T acc = 0;
      for (Index k = 0; k < W.cols(); ++k) {
#if defined(EIGEN_VECTORIZE_FMA)
        acc = std::fma(W(m, k), X(b, k), acc);
#else
        acc = acc + W(m, k) * X(b, k);
#endif
      }
      Y(b, m) = bias.size() ? acc + bias(m) : acc;
    }
  return Y;
}

template <class T>
Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> long_double_product(const MatrixX<T>& X, const MatrixX<T>& W,
                                                                               const VectorX<T>& bias) {
  using LD = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;
  LD Y = X.template cast<long double>() * W.template cast<long double>().transpose();
  if (bias.size()) Y.rowwise() += bias.template cast<long double>().transpose();
  return Y;
}

TYPED_TEST(PanelMatrixTest, EqualsTheOrderedSumsForEveryBlockAndRemainder) {
  using T = TypeParam;
  using PM = PanelMatrix<T>;
  std::mt19937_64 gen(20261203);
  const Index P = PM::panel_rows;
  // Rows: less than one panel, exactly one, one and a bit, several with a remainder; K from 1 up.
  for (const Index M : {Index(1), P - 1, P, P + 3, 3 * P + 5})
    for (const Index K : {Index(1), Index(7), Index(64)})
      for (const bool with_bias : {false, true}) {
        const MatrixX<T> W = random_normal<T>(M, K, gen);
        const VectorX<T> bias = with_bias ? VectorX<T>(random_normal<T>(M, 1, gen)) : VectorX<T>();
        const PM packed(W);
        EXPECT_EQ(packed.rows(), M);
        EXPECT_EQ(packed.cols(), K);
        // B = 0 .. 14 covers every stream-block size (1 .. 6) and splits of several blocks.
        for (Index B = 0; B <= 14; ++B) {
          const MatrixX<T> X = random_normal<T>(B, K, gen);
          MatrixX<T> Y = MatrixX<T>::Constant(B, M, T(7));
          packed.multiply_transposed(X, Y, bias);
          EXPECT_TRUE(Y == ordered_product(X, W, bias)) << "M " << M << " K " << K << " B " << B;
          if (B > 0) {
            SSM_EXPECT_NEAR_REL(Y.template cast<long double>(), long_double_product(X, W, bias),
                                4 * std::sqrt(double(K)) * double(scalar_traits<T>::epsilon));
          }
        }
      }
}

TYPED_TEST(PanelMatrixTest, AnyLayoutAndStrideGivesTheSameBits) {
  using T = TypeParam;
  std::mt19937_64 gen(7);
  const Index M = 2 * PanelMatrix<T>::panel_rows + 9, K = 33, B = 11;
  const MatrixX<T> W = random_normal<T>(M, K, gen);
  const VectorX<T> bias = random_normal<T>(M, 1, gen);
  const MatrixX<T> X = random_normal<T>(B, K, gen);
  const PanelMatrix<T> packed(W);
  MatrixX<T> want(B, M);
  packed.multiply_transposed(X, want, bias);
  EXPECT_TRUE(want == ordered_product(X, W, bias));

  // Row-major operands.
  const RowMatrixX<T> X_rows = X;
  RowMatrixX<T> Y_rows(B, M);
  packed.multiply_transposed(X_rows, Y_rows, bias);
  EXPECT_TRUE(MatrixX<T>(Y_rows) == want);
  // Blocks inside larger matrices (outer strides), written without touching the rest.
  MatrixX<T> X_big = random_normal<T>(B + 3, K + 2, gen);
  X_big.block(2, 1, B, K) = X;
  MatrixX<T> Y_big = MatrixX<T>::Constant(B + 4, M + 5, T(-3));
  packed.multiply_transposed(X_big.block(2, 1, B, K), Y_big.block(1, 3, B, M), bias);
  EXPECT_TRUE(Y_big.block(1, 3, B, M) == want);
  MatrixX<T> untouched = Y_big;
  untouched.block(1, 3, B, M).setConstant(T(-3));
  EXPECT_TRUE((untouched.array() == T(-3)).all());
  // Maps with inner strides (every other row of X, every third column of Y).
  MatrixX<T> X_spread = MatrixX<T>::Zero(2 * B, K);
  for (Index b = 0; b < B; ++b) X_spread.row(2 * b) = X.row(b);
  using StridedMap = Eigen::Map<MatrixX<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const StridedMap X_map(X_spread.data(), B, K, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(2 * B, 2));
  MatrixX<T> Y_spread = MatrixX<T>::Zero(B, 3 * M);
  StridedMap Y_map(Y_spread.data(), B, M, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(3 * B, 1));
  packed.multiply_transposed(X_map, Y_map, bias);
  EXPECT_TRUE(MatrixX<T>(Y_map) == want);
}

TYPED_TEST(PanelMatrixTest, AStreamsResultDoesNotDependOnTheOthers) {
  using T = TypeParam;
  std::mt19937_64 gen(99);
  const Index M = 3 * PanelMatrix<T>::panel_rows - 1, K = 50, B = 17;
  const MatrixX<T> W = random_normal<T>(M, K, gen);
  const MatrixX<T> X = random_normal<T>(B, K, gen);
  const PanelMatrix<T> packed(W);
  MatrixX<T> all(B, M);
  packed.multiply_transposed(X, all, VectorX<T>());
  for (Index b = 0; b < B; ++b) {
    MatrixX<T> one(1, M);
    packed.multiply_transposed(X.row(b), one, VectorX<T>());
    EXPECT_TRUE(one.row(0) == all.row(b)) << "stream " << b;
  }
}

TYPED_TEST(PanelMatrixTest, LargeProductsOverThreadsGiveTheSameBits) {
  using T = TypeParam;
  std::mt19937_64 gen(5);
  // 2 B M K well above the threshold for a team: the panels are shared among the threads.
  const Index M = 40 * PanelMatrix<T>::panel_rows + 1, K = 300, B = 16;
  const MatrixX<T> W = random_normal<T>(M, K, gen);
  const MatrixX<T> X = random_normal<T>(B, K, gen);
  const VectorX<T> bias = random_normal<T>(M, 1, gen);
  const PanelMatrix<T> packed(W);
  MatrixX<T> Y(B, M);
  packed.multiply_transposed(X, Y, bias);
  EXPECT_TRUE(Y == ordered_product(X, W, bias));
}

TYPED_TEST(PanelMatrixTest, LazyPanelsPackOnceAndAreSharedByCopies) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  const MatrixX<T> W = random_normal<T>(70, 20, gen);
  const ssm::detail::LazyPanels<T> lazy;
  const ssm::detail::LazyPanels<T> copy = lazy;  // shares the slot
  std::vector<const PanelMatrix<T>*> seen(4, nullptr);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < seen.size(); ++i)
    threads.emplace_back([&, i] { seen[i] = &(i % 2 ? copy : lazy).get(W); });
  for (auto& t : threads) t.join();
  for (const auto* p : seen) EXPECT_EQ(p, seen[0]);
  EXPECT_EQ(seen[0]->rows(), 70);
  const MatrixX<T> X = random_normal<T>(3, 20, gen);
  MatrixX<T> Y(3, 70);
  seen[0]->multiply_transposed(X, Y, VectorX<T>());
  EXPECT_TRUE(Y == ordered_product(X, W, VectorX<T>()));
}

TYPED_TEST(PanelMatrixTest, ShapesThatDoNotFitAreNamed) {
  using T = TypeParam;
  const PanelMatrix<T> packed(MatrixX<T>::Ones(5, 4));
  MatrixX<T> X(2, 4), Y(2, 5);
  X.setOnes();
  expect_error([&] {
    MatrixX<T> X3(2, 3);
    packed.multiply_transposed(X3, Y, VectorX<T>());
  }, {"PanelMatrix::multiply_transposed", "X", "B x 4", "2 x 3"});
  expect_error([&] {
    MatrixX<T> Y_short(2, 4);
    packed.multiply_transposed(X, Y_short, VectorX<T>());
  }, {"PanelMatrix::multiply_transposed", "Y", "2 x 5", "2 x 4"});
  expect_error([&] {
    MatrixX<T> Y_rows(3, 5);
    packed.multiply_transposed(X, Y_rows, VectorX<T>());
  }, {"PanelMatrix::multiply_transposed", "Y", "2 x 5", "3 x 5"});
  expect_error([&] { packed.multiply_transposed(X, Y, VectorX<T>::Ones(4)); },
               {"PanelMatrix::multiply_transposed", "bias", "5 values", "4"});
  packed.multiply_transposed(X, Y, VectorX<T>::Ones(5));
  EXPECT_TRUE((Y.array() == T(5)).all());  // 4 ones summed, plus the bias
}

}  // namespace
}  // namespace ssm::test
