#pragma once
/// \file linear.hpp
/// A fully connected layer as PyTorch's nn.Linear, with rows as time steps:
///
///     y = x W^T + b,     x: L x in,  W: out x in (PyTorch's weight, as stored),  b: out,  y: L x out,
///
/// i.e. y[t, o] = sum_i W[o, i] x[t, i] + b[o]. The bias may be absent (empty), as nn.Linear(bias=False).

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <utility>

namespace ssm::nn {

template <class T>
class Linear {
 public:
  Linear() = default;

  /// W is out x in (>= 1 each, finite), b has `out` entries or none. Throws ssm::error naming the bad one.
  Linear(MatrixX<T> weight, VectorX<T> bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
    check(weight_.rows() >= 1 && weight_.cols() >= 1, "nn::Linear", "weight", "out x in with out, in >= 1",
          shape_string(weight_.rows(), weight_.cols()));
    check_finite(weight_, "nn::Linear", "weight");
    if (bias_.size() != 0) {
      check_size(bias_, weight_.rows(), "nn::Linear", "bias", "one per output (or none)");
      check_finite(bias_, "nn::Linear", "bias");
    }
  }

  const MatrixX<T>& weight() const { return weight_; }  ///< out x in
  const VectorX<T>& bias() const { return bias_; }      ///< out, or empty
  Index in_features() const { return weight_.cols(); }
  Index out_features() const { return weight_.rows(); }

  /// The same layer in scalar U (each value rounded to U).
  template <class U>
  Linear<U> cast() const {
    return Linear<U>(weight_.template cast<U>(), bias_.template cast<U>());
  }

  /// y = x W^T + b for x of L x in; returns L x out.
  template <class Derived>
  MatrixX<T> forward(const Eigen::MatrixBase<Derived>& x) const {
    check_input(x.rows(), x.cols());
    MatrixX<T> y = x * weight_.transpose();
    if (bias_.size() != 0) y.rowwise() += bias_.transpose();
    return y;
  }

  /// y = x W^T + b into `y` (L x out), by plain loops: allocates nothing (for recurrent steps). `y` must not
  /// overlap `x`.
  template <class In, class Out>
  void forward_into(const Eigen::MatrixBase<In>& x, const Eigen::MatrixBase<Out>& y_out) const {
    auto& y = const_cast<Eigen::MatrixBase<Out>&>(y_out);  // Eigen's idiom for writable expression arguments
    check_input(x.rows(), x.cols());
    if (y.rows() != x.rows() || y.cols() != out_features()) check_shape(y, x.rows(), out_features(), "nn::Linear", "y", "L x out");
    for (Index t = 0; t < x.rows(); ++t)
      for (Index o = 0; o < out_features(); ++o) {
        T acc = bias_.size() != 0 ? bias_(o) : T(0);
        for (Index i = 0; i < in_features(); ++i) acc += weight_(o, i) * x(t, i);
        y(t, o) = acc;
      }
  }

 private:
  void check_input(Index rows, Index cols) const {
    if (cols != in_features())
      check(false, "nn::Linear", "x", ssm::detail::concat("L x ", in_features(), " (L x in)"), shape_string(rows, cols));
  }

  MatrixX<T> weight_;
  VectorX<T> bias_;
};

}  // namespace ssm::nn
