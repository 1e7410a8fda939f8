#pragma once
/// \file types.hpp
/// Aliases for the Eigen types the library speaks, and per-scalar traits.
///
/// Every template in ssm takes the real scalar type first (`float` or `double`);
/// complex values are `std::complex<Scalar>`. A sequence is an L x H matrix: rows are
/// time steps, columns are channels, column-major, so each channel's signal is contiguous.

#include "ssm/core/config.hpp"

#include <Eigen/Core>

#include <complex>
#include <limits>
#include <type_traits>

namespace ssm {

using Index = Eigen::Index;

/// Complex number over the real scalar `T`.
template <class T>
using Complex = std::complex<T>;

/// Column vector of `T` (real or complex).
template <class T>
using VectorX = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Column-major dynamic matrix of `T` (real or complex).
template <class T>
using MatrixX = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// Row-major dynamic matrix of `T`: the layout of PyTorch weights.
template <class T>
using RowMatrixX = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Complex column vector over the real scalar `T`.
template <class T>
using VectorXc = VectorX<std::complex<T>>;

/// Complex column-major matrix over the real scalar `T`.
template <class T>
using MatrixXc = MatrixX<std::complex<T>>;

/// A sequence of L time steps over H channels: an L x H column-major matrix of real `T`.
template <class T>
using Sequence = MatrixX<T>;

/// A complex sequence, L x H.
template <class T>
using SequenceC = MatrixX<std::complex<T>>;

/// True for the real scalars the library is instantiated for.
template <class T>
inline constexpr bool is_supported_scalar_v = std::is_same_v<T, float> || std::is_same_v<T, double>;

/// Per-scalar facts: name and the relative tolerance a computation of moderate depth
/// (a few hundred roundings) can be expected to meet. Tests use these, never ad-hoc numbers.
template <class T>
struct scalar_traits;

template <>
struct scalar_traits<float> {
  static constexpr const char* name = "float";
  static constexpr float epsilon = std::numeric_limits<float>::epsilon();
  /// Relative tolerance of a well-conditioned computation in this precision.
  static constexpr double tolerance = 2e-5;
};

template <>
struct scalar_traits<double> {
  static constexpr const char* name = "double";
  static constexpr double epsilon = std::numeric_limits<double>::epsilon();
  static constexpr double tolerance = 1e-11;
};

}  // namespace ssm
