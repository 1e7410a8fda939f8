#pragma once
/// \file discretize_dense.hpp
/// Discretisation of a dense system x' = A x + B u (see ssm/discretize.hpp for the formulas, the
/// diagonal and the DPLR forms). Apart from discretize.hpp because only the dense ZOH needs the matrix
/// exponential of Eigen's unsupported MatrixFunctions module, which the layers do not.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/discretize.hpp"

#include <Eigen/LU>
#include <unsupported/Eigen/MatrixFunctions>

#include <algorithm>
#include <complex>
#include <type_traits>

namespace ssm {

/// A discretised dense system: x_k = A_bar x_{k-1} + B_bar u_k.
template <class S>
struct DenseDiscrete {
  MatrixX<S> A_bar;  ///< N x N
  MatrixX<S> B_bar;  ///< N x K
};

/// Discretises one dense system x' = A x + B u (A N x N, B N x K, real or complex `S`) with step dt > 0.
/// ZOH uses the matrix exponential in double of the block matrix dt [[A, B], [0, 0]], whose exponential
/// is [[A_bar, B_bar], [0, I]] (valid for singular A). Bilinear solves with an LU factorisation of
/// I - dt/2 A (rejected when that matrix is numerically singular).
template <class S>
DenseDiscrete<S> discretize_dense(const MatrixX<S>& A, const MatrixX<S>& B, double dt, Discretization method) {
  using Real = typename Eigen::NumTraits<S>::Real;
  static_assert(is_supported_scalar_v<Real>, "S must be float, double or their complex");
  using W = std::conditional_t<Eigen::NumTraits<S>::IsComplex, std::complex<double>, double>;
  const char* where = "discretize_dense";
  check(A.rows() == A.cols(), where, "A", "a square N x N matrix", shape_string(A.rows(), A.cols()));
  check(B.rows() == A.rows(), where, "B", ssm::detail::concat(A.rows(), " rows (N x K)"), shape_string(B.rows(), B.cols()));
  check_positive(dt, where, "dt");
  check_finite(A, where, "A");
  check_finite(B, where, "B");
  const Index N = A.rows(), K = B.cols();
  const MatrixX<W> a = A.template cast<W>(), b = B.template cast<W>();
  DenseDiscrete<S> out;
  if (method == Discretization::zoh) {
    MatrixX<W> block = MatrixX<W>::Zero(N + K, N + K);
    block.topLeftCorner(N, N) = dt * a;
    block.topRightCorner(N, K) = dt * b;
    const MatrixX<W> e = block.exp();
    out.A_bar = e.topLeftCorner(N, N).template cast<S>();
    out.B_bar = e.topRightCorner(N, K).template cast<S>();
  } else {
    const MatrixX<W> I = MatrixX<W>::Identity(N, N);
    const MatrixX<W> lhs = I - (0.5 * dt) * a;
    Eigen::PartialPivLU<MatrixX<W>> lu(lhs);
    // rcond alone is scale-free: I - dt/2 A = 1e-17 I (dt A = 2 up to rounding, e.g. with FMA
    // contraction) is "well conditioned". So the smallest pivot is also measured against the scale
    // of the identity it was subtracted from.
    const double scale = std::max(1.0, double(lhs.cwiseAbs().rowwise().sum().maxCoeff()));
    const double min_pivot = N == 0 ? 1.0 : double(lu.matrixLU().diagonal().cwiseAbs().minCoeff());
    if (N != 0 && !(lu.rcond() > 1e-14 && min_pivot > 1e-14 * scale))
      check(false, where, "A", "I - dt/2 A invertible (bilinear transform)",
            ssm::detail::concat("reciprocal condition number ", lu.rcond(), ", smallest pivot ", min_pivot));
    out.A_bar = lu.solve(I + (0.5 * dt) * a).template cast<S>();
    out.B_bar = lu.solve(dt * b).template cast<S>();
  }
  return out;
}

}  // namespace ssm
