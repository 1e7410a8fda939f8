#pragma once
/// \file glu.hpp
/// The gated linear unit over the last dimension (PyTorch's nn.GLU(dim=-1)). With rows the time steps and
/// an even number 2n of columns, split each row into its value half a = z[:, :n] and gate half
/// b = z[:, n:2n]:
///
///     glu(z) = a * sigmoid(b),    sigmoid(b) = 1 / (1 + exp(-b)),
///
/// L x 2n in, L x n out. The first half is the value, the second the gate.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <cmath>

namespace ssm::nn {

/// sigmoid(x) = 1 / (1 + exp(-x)) for one value (exp(-x) = inf for very negative x gives 0, as it should).
template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// y = z[:, :n] * sigmoid(z[:, n:]) into `y` (L x n) for z of L x 2n. Allocates nothing; `y` must not
/// overlap `z`. Throws ssm::error for an odd column count or a wrongly sized `y`.
template <class In, class Out>
void glu_into(const Eigen::MatrixBase<In>& z, const Eigen::MatrixBase<Out>& y_out) {
  auto& y = const_cast<Eigen::MatrixBase<Out>&>(y_out);  // Eigen's idiom for writable expression arguments
  using T = typename In::Scalar;
  if (z.cols() % 2 != 0)
    check(false, "nn::glu", "z", "an even number of columns (value half, gate half)", shape_string(z.rows(), z.cols()));
  const Index n = z.cols() / 2;
  if (y.rows() != z.rows() || y.cols() != n) check_shape(y, z.rows(), n, "nn::glu", "y", "L x n for z of L x 2n");
  for (Index j = 0; j < n; ++j)
    for (Index t = 0; t < z.rows(); ++t) y(t, j) = T(z(t, j)) * sigmoid(T(z(t, n + j)));
}

/// glu(z): L x 2n in, L x n out (see the file comment).
template <class Derived>
MatrixX<typename Derived::Scalar> glu(const Eigen::MatrixBase<Derived>& z) {
  MatrixX<typename Derived::Scalar> y(z.rows(), z.cols() / 2);
  glu_into(z, y);
  return y;
}

}  // namespace ssm::nn
