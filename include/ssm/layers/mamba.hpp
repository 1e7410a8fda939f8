#pragma once
/// \file mamba.hpp
/// The Mamba block (v1, "mamba_simple" in state-spaces/mamba): a gated, input-selective SSM.
///
/// For an input sequence u (L x d_model), with d_inner = floor(expand d_model):
///
///     [x | z]  = u W_in^T (+ b_in)                      in_proj, L x 2 d_inner (x first, z second)
///     x        = silu(causal_depthwise_conv(x) + b_conv) kernel d_conv per channel (b_conv = 0 without conv_bias)
///     [r|B|C]  = x W_x^T                                x_proj: dt_rank, d_state, d_state columns
///     delta    = softplus(r W_dt^T + b_dt)              dt_proj, L x d_inner
///     y        = selective_scan(x, delta, A = -exp(A_log), B, C, D) * silu(z)
///     out      = y W_out^T (+ b_out)                    out_proj, L x d_model
///
/// The biases b_in (2 d_inner) and b_out (d_model) exist only with `MambaConfig::bias` (the
/// reference's `bias=True`; off in every released checkpoint), b_conv only with `conv_bias` (on by
/// default).
///
/// The depthwise convolution is causal: out_t = sum_k w[k] x_{t - (d_conv - 1) + k}. Its state is the
/// last d_conv inputs x (before the convolution), newest in the last column, exactly as the
/// reference's conv_state (batch, d_inner, d_conv); the SSM state is x_t (d_inner x d_state).
/// `forward` from a `State` continues a stream exactly where the previous call left it, so a prompt
/// can be processed in chunks and then continued token by token with `step`.
///
/// Example:
/// \code
///   ssm::Mamba<float> block(params);            // params: ssm::MambaParams<float>, PyTorch weights
///   auto state = block.initial_state();
///   ssm::Sequence<float> y = block.forward(prompt, state);     // L x d_model, state now after prompt
///   const ssm::VectorX<float>& next = block.step(token_embedding, state);  // allocation-free
/// \endcode

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/layers/selective_scan.hpp"

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <utility>

namespace ssm {

/// Sizes and options of a Mamba block, named as in the reference's constructor
/// (`Mamba(d_model, d_state, d_conv, expand, dt_rank, conv_bias, bias)`; its initialisation-only
/// arguments dt_min, dt_max, ... do not change the network and have no field here).
struct MambaConfig {
  Index d_model = 0;      ///< Width of the block's input and output.
  Index d_state = 16;     ///< N, the SSM state size per channel.
  Index d_conv = 4;       ///< Taps of the depthwise causal convolution.
  double expand = 2;      ///< Expansion factor, possibly fractional: d_inner = floor(expand d_model).
  Index dt_rank = 0;      ///< Rank of the delta projection; 0 means "auto" = ceil(d_model / 16).
  bool conv_bias = true;  ///< The convolution has a bias (conv1d_bias); without it b_conv = 0.
  bool bias = false;      ///< in_proj and out_proj have biases (in_proj_bias, out_proj_bias).

  /// floor(expand d_model), computed in double as the reference's int(expand * d_model)
  /// (expand 1.5, d_model 5 gives 7).
  Index d_inner() const { return static_cast<Index>(expand * static_cast<double>(d_model)); }
  /// dt_rank, with "auto" (0) resolved to ceil(d_model / 16).
  Index rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
};

/// The parameters of a Mamba block, in PyTorch's meaning and shapes (the reference's state_dict
/// names with '.' replaced by '_'; PyTorch's (out, in) Linear weights are kept as out x in).
/// A bias the config says the block has not (config.bias false, config.conv_bias false) stays empty.
template <class Scalar>
struct MambaParams {
  MambaConfig config;
  MatrixX<Scalar> in_proj_weight;   ///< (2 d_inner) x d_model; rows [0, d_inner) give x, the rest z.
  VectorX<Scalar> in_proj_bias;     ///< 2 d_inner with config.bias, else empty.
  MatrixX<Scalar> conv1d_weight;    ///< d_inner x d_conv (PyTorch's (d_inner, 1, d_conv) without the 1).
  VectorX<Scalar> conv1d_bias;      ///< d_inner with config.conv_bias (the default), else empty.
  MatrixX<Scalar> x_proj_weight;    ///< (dt_rank + 2 d_state) x d_inner: rows give dt input, B, C. No bias.
  MatrixX<Scalar> dt_proj_weight;   ///< d_inner x dt_rank.
  VectorX<Scalar> dt_proj_bias;     ///< d_inner (added before the softplus).
  MatrixX<Scalar> A_log;            ///< d_inner x d_state; A = -exp(A_log).
  VectorX<Scalar> D;                ///< d_inner, the skip y += D x.
  MatrixX<Scalar> out_proj_weight;  ///< d_model x d_inner.
  VectorX<Scalar> out_proj_bias;    ///< d_model with config.bias, else empty.
};

/// A Mamba block: full-sequence forward, forward from a state, and one-token steps.
template <class Scalar>
class Mamba {
  static_assert(is_supported_scalar_v<Scalar>, "Mamba: Scalar must be float or double");

 public:
  /// Streaming state: the convolution's last d_conv inputs and the SSM state, plus the scratch a
  /// step needs, so that `step` allocates nothing. Make one with `initial_state()`; one per stream.
  struct State {
    MatrixX<Scalar> conv;  ///< d_inner x d_conv: the last d_conv conv inputs, newest in the last column.
    MatrixX<Scalar> ssm;   ///< d_inner x d_state: x_t.
    /// Scratch of `step` (no meaning between calls); `out` holds the last step's output (d_model).
    VectorX<Scalar> xz, xc, x_dbl, dt, y, out;

    /// Back to the start of a stream (zero states).
    void reset() {
      conv.setZero();
      ssm.setZero();
    }
  };

  /// Checks every parameter's shape against `params.config` and keeps them.
  /// \throws ssm::error naming the parameter, its expected and its actual shape (a bias present
  /// although the config says it is absent, or the other way round, is a shape error too).
  explicit Mamba(MambaParams<Scalar> params) : p_(std::move(params)) {
    constexpr const char* where = "Mamba";
    const MambaConfig& c = p_.config;
    using detail::concat;
    check(c.d_model >= 1, where, "config.d_model", "a size >= 1", concat(c.d_model));
    check(c.d_state >= 1, where, "config.d_state", "a size >= 1", concat(c.d_state));
    check(c.d_conv >= 1, where, "config.d_conv", "a size >= 1", concat(c.d_conv));
    const double inner = c.expand * static_cast<double>(c.d_model);  // checked before the cast in d_inner()
    check(std::isfinite(inner) && inner >= 1 && inner < 1e15, where, "config.expand",
          concat("a factor with 1 <= expand d_model < 1e15 (d_model ", c.d_model, ")"), concat(c.expand));
    check(c.dt_rank >= 0, where, "config.dt_rank", "a rank >= 1, or 0 for auto", concat(c.dt_rank));
    const Index di = c.d_inner(), N = c.d_state, R = c.rank();
    check_shape(p_.in_proj_weight, 2 * di, c.d_model, where, "in_proj_weight", "2 d_inner x d_model");
    check_size(p_.in_proj_bias, c.bias ? 2 * di : 0, where, "in_proj_bias",
               c.bias ? "2 d_inner (config.bias is true)" : "empty (config.bias is false)");
    check_shape(p_.conv1d_weight, di, c.d_conv, where, "conv1d_weight", "d_inner x d_conv");
    check_size(p_.conv1d_bias, c.conv_bias ? di : 0, where, "conv1d_bias",
               c.conv_bias ? "d_inner (config.conv_bias is true)" : "empty (config.conv_bias is false)");
    check_shape(p_.x_proj_weight, R + 2 * N, di, where, "x_proj_weight", "(dt_rank + 2 d_state) x d_inner");
    check_shape(p_.dt_proj_weight, di, R, where, "dt_proj_weight", "d_inner x dt_rank");
    check_size(p_.dt_proj_bias, di, where, "dt_proj_bias", "d_inner");
    check_shape(p_.A_log, di, N, where, "A_log", "d_inner x d_state");
    check_size(p_.D, di, where, "D", "d_inner");
    check_shape(p_.out_proj_weight, c.d_model, di, where, "out_proj_weight", "d_model x d_inner");
    check_size(p_.out_proj_bias, c.bias ? c.d_model : 0, where, "out_proj_bias",
               c.bias ? "d_model (config.bias is true)" : "empty (config.bias is false)");
    check_finite(p_.A_log, where, "A_log");
    A_ = (-p_.A_log.array().exp()).matrix().transpose();  // N x d_inner: channel d's A contiguous
  }

  /// The parameters (read-only: the derived A = -exp(A_log) is cached from them).
  const MambaParams<Scalar>& params() const { return p_; }
  /// The sizes.
  const MambaConfig& config() const { return p_.config; }

  /// A zero state (the start of a stream) with its step scratch allocated.
  State initial_state() const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner();
    State s;
    s.conv = MatrixX<Scalar>::Zero(di, c.d_conv);
    s.ssm = MatrixX<Scalar>::Zero(di, c.d_state);
    s.xz.resize(2 * di);
    s.xc.resize(di);
    s.x_dbl.resize(c.rank() + 2 * c.d_state);
    s.dt.resize(di);
    s.y.resize(di);
    s.out.resize(c.d_model);
    return s;
  }

  /// The full-sequence forward from zero states: u is L x d_model, the result L x d_model.
  template <class Derived>
  Sequence<Scalar> forward(const Eigen::MatrixBase<Derived>& u) const {
    State s = initial_state();
    return forward(u, s);
  }

  /// The forward of u (L x d_model) starting from `state`, which is left as the state after the
  /// last row: chunked calls give the one-pass result, and `step` continues from it.
  template <class Derived>
  Sequence<Scalar> forward(const Eigen::MatrixBase<Derived>& u, State& state) const {
    constexpr const char* where = "Mamba::forward";
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner(), N = c.d_state, R = c.rank(), K = c.d_conv;
    if (u.cols() != c.d_model)
      check(false, where, "u", detail::concat("L x ", c.d_model, " (L x d_model)"), shape_string(u.rows(), u.cols()));
    check_state(state, where);
    const Index L = u.rows();
    if (L == 0) return Sequence<Scalar>(0, c.d_model);

    // in_proj: L x 2 d_inner, x in the first d_inner columns, z in the rest.
    MatrixX<Scalar> xz = u.template cast<Scalar>() * p_.in_proj_weight.transpose();
    if (c.bias) xz.rowwise() += p_.in_proj_bias.transpose();
    // Depthwise causal convolution over [last K - 1 inputs of the state, x], then SiLU.
    MatrixX<Scalar> xc(L, di);
    {
      VectorX<Scalar> ext(L + K - 1);
      for (Index d = 0; d < di; ++d) {
        ext.head(K - 1) = state.conv.row(d).tail(K - 1).transpose();
        ext.tail(L) = xz.col(d);
        auto out = xc.col(d);
        out.setConstant(c.conv_bias ? p_.conv1d_bias[d] : Scalar(0));
        for (Index k = 0; k < K; ++k) out += p_.conv1d_weight(d, k) * ext.segment(k, L);
        for (Index t = 0; t < L; ++t) out[t] = silu(out[t]);
        // New conv state: the last K of [old state, x].
        for (Index k = 0; k < K; ++k) {
          const Index from_end = K - 1 - k;  // 0 for the newest
          state.conv(d, k) = from_end < L ? xz(L - 1 - from_end, d) : state.conv(d, k + L);
        }
      }
    }
    // x_proj, transposed so that each step's (dt input, B, C) is one contiguous column.
    const MatrixX<Scalar> x_dbl = p_.x_proj_weight * xc.transpose();       // (R + 2N) x L
    const MatrixX<Scalar> delta = x_dbl.topRows(R).transpose() * p_.dt_proj_weight.transpose();  // L x d_inner
    Sequence<Scalar> y(L, di);
    detail::RealScanProblem<Scalar> sp = scan_problem(L, xc.data(), L, delta.data(), L, xz.data() + di * L, L,
                                                      x_dbl.data(), R + 2 * N, state, y.data(), L);
    detail::run_real_scan(sp);
    Sequence<Scalar> out = y * p_.out_proj_weight.transpose();
    if (c.bias) out.rowwise() += p_.out_proj_bias.transpose();
    return out;
  }

  /// One token: u (d_model) in, the output (d_model) returned as a reference to `state.out` (valid
  /// until the next step on this state). Allocates nothing.
  const VectorX<Scalar>& step(const Eigen::Ref<const VectorX<Scalar>>& u, State& state) const {
    constexpr const char* where = "Mamba::step";
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner(), R = c.rank(), K = c.d_conv;
    check_size(u, c.d_model, where, "u", "d_model");
    check_state(state, where);
    state.xz.noalias() = p_.in_proj_weight * u;
    if (c.bias) state.xz += p_.in_proj_bias;
    for (Index k = 0; k + 1 < K; ++k) state.conv.col(k) = state.conv.col(k + 1);
    state.conv.col(K - 1) = state.xz.head(di);
    if (c.conv_bias) state.xc = p_.conv1d_bias;
    else state.xc.setZero();
    for (Index k = 0; k < K; ++k) state.xc.array() += state.conv.col(k).array() * p_.conv1d_weight.col(k).array();
    for (Index d = 0; d < di; ++d) state.xc[d] = silu(state.xc[d]);
    state.x_dbl.noalias() = p_.x_proj_weight * state.xc;
    state.dt.noalias() = p_.dt_proj_weight * state.x_dbl.head(R);
    detail::RealScanProblem<Scalar> sp = scan_problem(1, state.xc.data(), 1, state.dt.data(), 1, state.xz.data() + di, 1,
                                                      state.x_dbl.data(), 0, state, state.y.data(), 1);
    detail::run_real_scan(sp);
    state.out.noalias() = p_.out_proj_weight * state.y;
    if (c.bias) state.out += p_.out_proj_bias;
    return state.out;
  }

 private:
  void check_state(const State& s, const char* where) const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner();
    check_shape(s.conv, di, c.d_conv, where, "state.conv", "d_inner x d_conv; use initial_state()");
    check_shape(s.ssm, di, c.d_state, where, "state.ssm", "d_inner x d_state; use initial_state()");
    const bool scratch = s.xz.size() == 2 * di && s.xc.size() == di && s.x_dbl.size() == c.rank() + 2 * c.d_state &&
                         s.dt.size() == di && s.y.size() == di && s.out.size() == c.d_model;
    if (!scratch) check(false, where, "state", "scratch sized by initial_state()", "other sizes");  // no string unless it fails
  }

  /// The scan of the block: u = conv output, delta before bias and softplus, gate z, B and C read
  /// from the columns of x_dbl (stride: scalars between steps), state in state.ssm.
  detail::RealScanProblem<Scalar> scan_problem(Index L, const Scalar* u, Index ld_u, const Scalar* delta,
                                               Index ld_delta, const Scalar* z, Index ld_z, const Scalar* x_dbl,
                                               Index stride, State& state, Scalar* out, Index ld_out) const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner(), N = c.d_state, R = c.rank();
    detail::RealScanProblem<Scalar> p;
    p.L = L;
    p.D = di;
    p.N = N;
    p.u = u;
    p.ld_u = ld_u;
    p.delta = delta;
    p.ld_delta = ld_delta;
    p.z = z;
    p.ld_z = ld_z;
    p.delta_bias = p_.dt_proj_bias.data();
    p.skip = p_.D.data();
    p.softplus = true;
    p.A = A_.data();
    p.B.data = x_dbl + R;
    p.B.stride = stride;
    p.B.group_size = di;
    p.C.data = x_dbl + R + N;
    p.C.stride = stride;
    p.C.group_size = di;
    p.x = state.ssm.data();
    p.x_ld_d = 1;
    p.x_ld_n = di;
    p.out = out;
    p.ld_out = ld_out;
    return p;
  }

  MambaParams<Scalar> p_;
  MatrixX<Scalar> A_;  ///< -exp(A_log), transposed: N x d_inner.
};

}  // namespace ssm
