#pragma once
/// \file layer_norm.hpp
/// Layer normalisation over the features of each time step, as PyTorch's nn.LayerNorm(n) (elementwise affine,
/// biased variance). For each row x of an L x n input:
///
///     mu = (1/n) sum_i x_i,   var = (1/n) sum_i (x_i - mu)^2,   y_i = (x_i - mu) / sqrt(var + eps) w_i + b_i,
///
/// with w (weight) and b (bias) of n entries and eps = 1e-5 by default. L x n in, L x n out. The mean and the
/// variance are accumulated in double whatever T is.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <cmath>
#include <utility>

namespace ssm::nn {

template <class T>
class LayerNorm {
 public:
  LayerNorm() = default;

  /// weight and bias have n >= 1 entries each (finite), eps > 0. Throws ssm::error naming the bad argument.
  LayerNorm(VectorX<T> weight, VectorX<T> bias, double eps = 1e-5)
      : weight_(std::move(weight)), bias_(std::move(bias)), eps_(eps) {
    check(weight_.size() >= 1, "nn::LayerNorm", "weight", "n >= 1 entries", ssm::detail::concat(weight_.size()));
    check_size(bias_, weight_.size(), "nn::LayerNorm", "bias", "n, the size of weight");
    check_finite(weight_, "nn::LayerNorm", "weight");
    check_finite(bias_, "nn::LayerNorm", "bias");
    check_positive(eps_, "nn::LayerNorm", "eps");
  }

  const VectorX<T>& weight() const { return weight_; }
  const VectorX<T>& bias() const { return bias_; }
  double eps() const { return eps_; }
  Index features() const { return weight_.size(); }

  template <class U>
  LayerNorm<U> cast() const {
    return LayerNorm<U>(weight_.template cast<U>(), bias_.template cast<U>(), eps_);
  }

  /// The normalised L x n matrix (see the file comment).
  template <class Derived>
  MatrixX<T> forward(const Eigen::MatrixBase<Derived>& x) const {
    MatrixX<T> y(x.rows(), x.cols());
    forward_into(x, y);
    return y;
  }

  /// The same into `y` (L x n; may be x itself). Allocates nothing.
  template <class In, class Out>
  void forward_into(const Eigen::MatrixBase<In>& x, const Eigen::MatrixBase<Out>& y_out) const {
    auto& y = const_cast<Eigen::MatrixBase<Out>&>(y_out);  // Eigen's idiom for writable expression arguments
    const Index n = features();
    if (x.cols() != n)
      check(false, "nn::LayerNorm", "x", ssm::detail::concat("L x ", n, " (L x n)"), shape_string(x.rows(), x.cols()));
    if (y.rows() != x.rows() || y.cols() != n) check_shape(y, x.rows(), n, "nn::LayerNorm", "y", "the shape of x");
    for (Index t = 0; t < x.rows(); ++t) {
      double mean = 0;
      for (Index i = 0; i < n; ++i) mean += double(x(t, i));
      mean /= double(n);
      double var = 0;
      for (Index i = 0; i < n; ++i) var += (double(x(t, i)) - mean) * (double(x(t, i)) - mean);
      var /= double(n);
      const double inv = 1.0 / std::sqrt(var + eps_);
      for (Index i = 0; i < n; ++i) y(t, i) = T((double(x(t, i)) - mean) * inv) * weight_(i) + bias_(i);
    }
  }

 private:
  VectorX<T> weight_, bias_;
  double eps_ = 1e-5;
};

}  // namespace ssm::nn
