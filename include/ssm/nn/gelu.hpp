#pragma once
/// \file gelu.hpp
/// The Gaussian error linear unit, in its exact form (PyTorch's nn.GELU() default, approximate='none'):
///
///     gelu(x) = x Phi(x) = x / 2 (1 + erf(x / sqrt 2)),
///
/// Phi the standard normal distribution function. Not the tanh approximation
/// x / 2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), which differs by up to ~1e-3 (and which the S4 blocks
/// do not use). Elementwise: any shape in, the same shape out.

#include "ssm/core/types.hpp"

#include <cmath>
#include <type_traits>

namespace ssm::nn {

/// gelu(x) = x / 2 (1 + erf(x / sqrt 2)) for one value.
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
T gelu(T x) {
  const T inv_sqrt2 = T(0.70710678118654752440084436210484903928L);
  return T(0.5) * x * (T(1) + std::erf(x * inv_sqrt2));
}

/// gelu of every entry of `x` (any shape; rows are usually time steps).
template <class Derived>
MatrixX<typename Derived::Scalar> gelu(const Eigen::MatrixBase<Derived>& x) {
  using T = typename Derived::Scalar;
  return x.unaryExpr([](T v) { return gelu(v); });
}

}  // namespace ssm::nn
