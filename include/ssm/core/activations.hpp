#pragma once
/// \file activations.hpp
/// The scalar activations the gated layers (Mamba, Mamba-2) share, exactly as PyTorch computes them:
///
///     softplus(v) = log(1 + e^v), and v itself for v > 20   (F.softplus, beta 1, threshold 20)
///     silu(v)     = v sigmoid(v) = v / (1 + e^-v)

#include <cmath>

namespace ssm {

/// softplus(v) = log(1 + exp(v)), and v for v > 20, exactly as PyTorch's F.softplus (beta 1, threshold 20).
template <class Scalar>
inline Scalar softplus(Scalar v) {
  return v > Scalar(20) ? v : std::log1p(std::exp(v));
}

/// silu(v) = v * sigmoid(v) = v / (1 + exp(-v)).
template <class Scalar>
inline Scalar silu(Scalar v) {
  return v / (Scalar(1) + std::exp(-v));
}

}  // namespace ssm
