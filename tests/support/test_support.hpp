#pragma once
/// \file test_support.hpp
/// Helpers shared by the tests: an Eigen "near" assertion that reports the largest difference
/// and where it is, typed-test lists over float and double, golden-case loading and reference
/// computations in long double.

#include <gtest/gtest.h>

#include "ssm/core/types.hpp"
#include "ssm/io/npy.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <string>

namespace ssm::test {

/// The scalars every public template is instantiated for.
using Scalars = ::testing::Types<float, double>;

/// Path of a file in tests/data.
inline std::string data_path(const std::string& relative) { return std::string(SSM_TEST_DATA_DIR) + "/" + relative; }

/// Reads tests/data/<case>/<array>.npy.
inline io::NpyArray golden(const std::string& case_name, const std::string& array) {
  return io::read_npy(data_path(case_name + "/" + array + ".npy"));
}

template <class T>
double magnitude(const T& v) {
  return static_cast<double>(std::abs(v));
}

namespace detail {

/// Shared body of the two "near" predicates: every |actual - expected| <= bound, where bound is
/// tol * max|expected| (relative) or tol (absolute). On failure prints the largest difference,
/// where it is, both values there, and how the bound was formed.
template <class A, class B>
::testing::AssertionResult near_impl(const Eigen::DenseBase<A>& actual, const Eigen::DenseBase<B>& expected,
                                     double tol, bool relative) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure() << "shape mismatch: actual " << actual.rows() << " x " << actual.cols()
                                         << ", expected " << expected.rows() << " x " << expected.cols();
  }
  double scale = 0;
  for (Index j = 0; j < expected.cols(); ++j)
    for (Index i = 0; i < expected.rows(); ++i) scale = std::max(scale, magnitude(expected(i, j)));
  double worst = -1;
  Index wi = 0, wj = 0;
  bool finite = true;
  for (Index j = 0; j < expected.cols(); ++j) {
    for (Index i = 0; i < expected.rows(); ++i) {
      const auto a = actual(i, j);
      const auto e = expected(i, j);
      const double d = magnitude(static_cast<decltype(e)>(a) - e);
      if (!std::isfinite(d)) finite = false;
      if (!std::isfinite(d) || d > worst) {
        worst = std::isfinite(d) ? d : INFINITY;
        wi = i;
        wj = j;
      }
    }
  }
  // An all-zero reference has no scale to be relative to: the bound is then tol itself.
  const bool zero_reference = relative && scale == 0;
  const double bound = relative && !zero_reference ? tol * scale : tol;
  if (finite && worst <= bound) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg.precision(17);
  msg << "largest difference " << worst << " at (" << wi << ", " << wj << "): actual " << actual(wi, wj)
      << ", expected " << expected(wi, wj) << "; bound " << bound;
  if (!relative)
    msg << " (absolute)";
  else if (zero_reference)
    msg << " (absolute: the reference is all zero)";
  else
    msg << " = " << tol << " x max|expected| = " << scale << " (relative error " << worst / scale << ")";
  return ::testing::AssertionFailure() << msg.str();
}

}  // namespace detail

/// gtest predicate: every |actual - expected| <= tol * max|expected|, a bound relative to the
/// largest reference value (the way kernel and sequence errors scale), however small that value
/// is. If the reference is all zero there is no scale, and the bound is tol, absolute.
/// On failure prints the largest difference, where it is, both values there and the relative error.
template <class A, class B>
::testing::AssertionResult near_relative_to_max(const Eigen::DenseBase<A>& actual, const Eigen::DenseBase<B>& expected,
                                                double tol) {
  return detail::near_impl(actual, expected, tol, /*relative=*/true);
}

/// gtest predicate: every |actual - expected| <= tol, absolute. Only for quantities whose error
/// does not scale with the reference (a difference that should be zero, a result whose error is
/// set by other, larger terms); each caller says why in a comment.
template <class A, class B>
::testing::AssertionResult near_absolute(const Eigen::DenseBase<A>& actual, const Eigen::DenseBase<B>& expected,
                                         double tol) {
  return detail::near_impl(actual, expected, tol, /*relative=*/false);
}

#define SSM_EXPECT_NEAR_REL(actual, expected, tol) \
  EXPECT_TRUE(::ssm::test::near_relative_to_max((actual), (expected), (tol)))
#define SSM_ASSERT_NEAR_REL(actual, expected, tol) \
  ASSERT_TRUE(::ssm::test::near_relative_to_max((actual), (expected), (tol)))
#define SSM_EXPECT_NEAR_ABS(actual, expected, tol) \
  EXPECT_TRUE(::ssm::test::near_absolute((actual), (expected), (tol)))

/// A matrix of independent standard normal entries from a seeded generator.
template <class T>
MatrixX<T> random_normal(Index rows, Index cols, std::mt19937_64& gen) {
  std::normal_distribution<double> dist(0.0, 1.0);
  MatrixX<T> m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) m(i, j) = static_cast<T>(dist(gen));
  return m;
}

/// A complex matrix with independent standard normal real and imaginary parts.
template <class T>
MatrixXc<T> random_complex(Index rows, Index cols, std::mt19937_64& gen) {
  std::normal_distribution<double> dist(0.0, 1.0);
  MatrixXc<T> m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) m(i, j) = std::complex<T>(T(dist(gen)), T(dist(gen)));
  return m;
}

/// Causal convolution y[t, h] = sum_{j <= t} k[j, h] u[t - j, h], summed directly in long double:
/// the independent answer the FFT paths are checked against. u is L x H, k is Lk x H.
template <class T>
Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> direct_causal_convolution(const MatrixX<T>& u,
                                                                                    const MatrixX<T>& k) {
  const Index L = u.rows(), H = u.cols();
  Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> y =
      Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>::Zero(L, H);
  for (Index h = 0; h < H; ++h)
    for (Index t = 0; t < L; ++t) {
      long double acc = 0;
      const Index jmax = std::min<Index>(t, k.rows() - 1);
      for (Index j = 0; j <= jmax; ++j) acc += (long double)k(j, h) * (long double)u(t - j, h);
      y(t, h) = acc;
    }
  return y;
}

/// Takes the (b, :, :) slab of a C-order (B, H, L) array as an L x H matrix (the library's layout).
template <class T>
MatrixX<T> batch_as_LxH(const io::NpyArray& a, Index b) {
  if (a.shape.size() != 3) throw std::runtime_error("batch_as_LxH: expected a 3-d array");
  const Index H = a.shape[1], L = a.shape[2];
  const auto flat = a.values<T>();
  MatrixX<T> m(L, H);
  for (Index h = 0; h < H; ++h)
    for (Index t = 0; t < L; ++t) m(t, h) = flat[std::size_t((b * H + h) * L + t)];
  return m;
}

/// Takes the (b, :, :) slab of a C-order (B, R, C) array as an R x C matrix (no transpose).
template <class T>
MatrixX<T> batch_slab(const io::NpyArray& a, Index b) {
  if (a.shape.size() != 3) throw std::runtime_error("batch_slab: expected a 3-d array");
  const Index R = a.shape[1], C = a.shape[2];
  const auto flat = a.values<T>();
  MatrixX<T> m(R, C);
  for (Index r = 0; r < R; ++r)
    for (Index c = 0; c < C; ++c) m(r, c) = flat[std::size_t((b * R + r) * C + c)];
  return m;
}

}  // namespace ssm::test
