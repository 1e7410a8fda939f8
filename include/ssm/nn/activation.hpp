#pragma once
/// \file activation.hpp
/// The activations the official S4 block offers (state-spaces/s4, models/s4/s4.py `Activation`), by name:
///
///   name(s)                          f(x)                                        PyTorch module
///   "id", "identity", "linear"       x                                           nn.Identity
///   "tanh"                           tanh x                                      nn.Tanh
///   "relu"                           max(x, 0)                                   nn.ReLU
///   "gelu"                           x / 2 (1 + erf(x / sqrt 2)) (exact)         nn.GELU
///   "elu"                            x if x > 0, else exp(x) - 1 (alpha = 1)     nn.ELU
///   "silu", "swish"                  x sigmoid(x)                                nn.SiLU
///   "glu"                            a sigmoid(b), [a, b] the halves of a row    nn.GLU(dim=-1)
///   "sigmoid"                        1 / (1 + exp(-x))                           nn.Sigmoid
///   "softplus"                       log(1 + exp(x)), x itself when x > 20       nn.Softplus (beta 1, threshold 20)
///
/// Inputs are L x n matrices whose rows are time steps and whose columns are features. Every activation is
/// elementwise (L x n out) except GLU, which halves the features (L x 2n in, L x n out).

#include "ssm/core/activations.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/nn/gelu.hpp"
#include "ssm/nn/glu.hpp"

#include <cmath>
#include <string>
#include <type_traits>

namespace ssm::nn {

/// One of the activations listed in the file comment.
enum class Activation { identity, tanh, relu, gelu, elu, silu, glu, sigmoid, softplus };

/// The canonical name ("id", "tanh", "relu", "gelu", "elu", "silu", "glu", "sigmoid", "softplus").
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::identity: return "id";
    case Activation::tanh: return "tanh";
    case Activation::relu: return "relu";
    case Activation::gelu: return "gelu";
    case Activation::elu: return "elu";
    case Activation::silu: return "silu";
    case Activation::glu: return "glu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::softplus: return "softplus";
  }
  return "?";
}

/// The activation the official code builds for `name` (aliases as in the file comment). Throws ssm::error
/// naming `what` (e.g. "activation") and listing the accepted names otherwise.
inline Activation activation_from_name(const std::string& name, const char* what = "activation") {
  if (name == "id" || name == "identity" || name == "linear") return Activation::identity;
  if (name == "tanh") return Activation::tanh;
  if (name == "relu") return Activation::relu;
  if (name == "gelu") return Activation::gelu;
  if (name == "elu") return Activation::elu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "glu") return Activation::glu;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "softplus") return Activation::softplus;
  check(false, "nn::activation_from_name", what,
        "one of id, identity, linear, tanh, relu, gelu, elu, silu, swish, glu, sigmoid, softplus",
        "'" + name + "'");
  return Activation::identity;  // not reached
}

/// f(x) for one value of an elementwise activation (GLU is not elementwise: ssm::error).
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
T activate(Activation a, T x) {
  switch (a) {
    case Activation::identity: return x;
    case Activation::tanh: return std::tanh(x);
    case Activation::relu: return x > T(0) ? x : T(0);
    case Activation::gelu: return gelu(x);
    case Activation::elu: return x > T(0) ? x : std::expm1(x);
    case Activation::silu: return x * sigmoid(x);
    case Activation::sigmoid: return sigmoid(x);
    case Activation::softplus: return ssm::softplus(x);  // core/activations.hpp, shared with the Mamba layers
    case Activation::glu: break;
  }
  check(false, "nn::activate", "activation", "an elementwise activation", "glu (it needs a whole row: use glu())");
  return x;  // not reached
}

/// Features out of `a` for `features` in: features / 2 for GLU, features otherwise.
inline Index activation_output_width(Activation a, Index features) { return a == Activation::glu ? features / 2 : features; }

/// y = a(x) for x of L x n; y is L x activation_output_width(a, n) and must not overlap x unless `a` is
/// elementwise and y is x itself. Allocates nothing. Throws ssm::error on a wrongly sized y (or an odd n for GLU).
template <class In, class Out>
void activate_into(Activation a, const Eigen::MatrixBase<In>& x, const Eigen::MatrixBase<Out>& y_out) {
  if (a == Activation::glu) return glu_into(x, y_out);
  auto& y = const_cast<Eigen::MatrixBase<Out>&>(y_out);  // Eigen's idiom for writable expression arguments
  if (y.rows() != x.rows() || y.cols() != x.cols()) check_shape(y, x.rows(), x.cols(), "nn::activate", "y", "the shape of x");
  for (Index j = 0; j < x.cols(); ++j)
    for (Index t = 0; t < x.rows(); ++t) y(t, j) = activate(a, x(t, j));
}

/// a(x) for x of L x n (see the file comment).
template <class Derived>
MatrixX<typename Derived::Scalar> activate(Activation a, const Eigen::MatrixBase<Derived>& x) {
  MatrixX<typename Derived::Scalar> y(x.rows(), activation_output_width(a, x.cols()));
  activate_into(a, x, y);
  return y;
}

}  // namespace ssm::nn
