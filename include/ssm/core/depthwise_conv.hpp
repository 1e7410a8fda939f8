#pragma once
/// \file depthwise_conv.hpp
/// The short causal depthwise convolution followed by SiLU that Mamba and Mamba-2 put in front of
/// their scans (PyTorch's Conv1d(C, C, K, groups=C, padding=K-1) cut to the first L outputs), over a
/// stream: a window of the last K inputs carries the convolution across calls.
///
/// Per channel c, with taps w(c, 0..K-1) (tap K-1 on the current input), bias b_c (0 if none) and
/// the inputs x_t of the stream so far,
///
///     out_t[c] = silu(b_c + sum_k w(c, k) x_{t-(K-1)+k}[c]),      silu(v) = v / (1 + e^-v)
///
/// window: C x K, column k holds x_{t-(K-1)+k} after step t (newest in the last column, zeros before
/// the start of the stream): the reference's conv_state (batch, C, K) for one batch entry.

#include "ssm/core/types.hpp"

namespace ssm::detail {

/// A whole chunk: x (L x C, rows are steps, may be columns of a wider matrix) continues the stream
/// whose last K inputs are in `window`; writes out (L x C) and leaves the last K inputs of [window, x]
/// in `window` (so L < K - 1 keeps part of the old window). bias: C, or empty for none.
template <class T, class XIn, class Out>
void causal_depthwise_conv_silu(const Eigen::MatrixBase<XIn>& x, const MatrixX<T>& weight, const VectorX<T>& bias,
                                MatrixX<T>& window, Eigen::MatrixBase<Out>& out) {
  const Index L = x.rows(), C = x.cols(), K = weight.cols();
  if (L == 0) return;
  VectorX<T> ext(L + K - 1);  // [the window's last K - 1 inputs, x[:, c]]
  for (Index c = 0; c < C; ++c) {
    ext.head(K - 1) = window.row(c).tail(K - 1).transpose();
    ext.tail(L) = x.col(c);
    auto o = out.col(c);
    o.setConstant(bias.size() ? bias[c] : T(0));
    for (Index k = 0; k < K; ++k) o += weight(c, k) * ext.segment(k, L);
    o.array() = o.array() / (T(1) + (-o.array()).exp());
    window.row(c) = ext.tail(K).transpose();  // L >= 1, so ext has >= K entries
  }
}

/// One step: shifts x_t (C) into `window` and writes out (C) = silu(bias + sum_k w(:, k) o window(:, k)).
/// Allocates nothing. out must not alias x_t.
template <class T, class XIn, class Out>
void causal_depthwise_conv_silu_step(const Eigen::MatrixBase<XIn>& x_t, const MatrixX<T>& weight,
                                     const VectorX<T>& bias, MatrixX<T>& window, Eigen::MatrixBase<Out>& out) {
  const Index K = weight.cols();
  for (Index k = 0; k + 1 < K; ++k) window.col(k) = window.col(k + 1);
  window.col(K - 1) = x_t;
  if (bias.size()) out = bias;
  else out.setZero();
  for (Index k = 0; k < K; ++k) out.array() += window.col(k).array() * weight.col(k).array();
  out.array() = out.array() / (T(1) + (-out.array()).exp());
}

}  // namespace ssm::detail
