#pragma once
/// \file mamba.hpp
/// The Mamba block (v1, "mamba_simple" in state-spaces/mamba): a gated, input-selective SSM.
///
/// For an input sequence u (L x d_model), with d_inner = floor(expand d_model):
///
///     [x | z]  = u W_in^T (+ b_in)                      in_proj, L x 2 d_inner (x first, z second)
///     x        = silu(causal_depthwise_conv(x) + b_conv) kernel d_conv per channel (b_conv = 0 without conv_bias)
///     [r|B|C]  = x W_x^T                                x_proj: dt_rank, d_state, d_state columns
///     (Falcon-Mamba only: r, B and C each v / sqrt(mean(v^2) + eps), row by row, no weight)
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
/// The block follows the layer concept of core/layer.hpp: `Params` (= `MambaParams`), construction
/// from it, `initialise` (the reference's initialisation), `initial_state`, `State::reset`, `forward`
/// from the zero state or from a state, and an allocation-free `step` that accepts strided vectors
/// (a row of an L x d_model matrix) and lets y alias u. The selective scan runs through the public
/// `selective_scan_into` on views of the block's own buffers (no copies).
///
/// Weight formats: in_proj, x_proj, dt_proj and out_proj can be kept as bfloat16, IEEE half or int8
/// blocks (core/weight_matrix.hpp) instead of T: `Mamba(params, WeightFormat::bf16)`. Everything else (A,
/// D, the biases, the convolution) and every state stays T, and every product sums in T. The block then
/// computes exactly what a T block with the decoded weights computes (`params()` returns those), to the
/// rounding of the sums.
///
/// Example:
/// \code
///   std::mt19937_64 gen(0);
///   auto block = ssm::Mamba<float>::initialise(config, gen);   // or ssm::Mamba<float>(params): PyTorch weights
///   auto state = block.initial_state();
///   ssm::Sequence<float> y = block.forward(prompt, state);     // L x d_model, state now after prompt
///   ssm::VectorX<float> next(config.d_model);
///   block.step(token_embedding, state, next);                  // allocation-free
///   block.step(x.row(t), state, x.row(t));                     // in place on a row of a sequence
/// \endcode

#include "ssm/core/batch.hpp"
#include "ssm/core/depthwise_conv.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/core/weight_matrix.hpp"
#include "ssm/layers/selective_scan.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

namespace ssm {

/// Sizes and options of a Mamba block, named as in the reference's constructor
/// (`Mamba(d_model, d_state, d_conv, expand, dt_rank, conv_bias, bias)`; its initialisation-only
/// arguments dt_min, dt_max, dt_init_floor, dt_scale do not change the network: they are arguments
/// of `Mamba::initialise`).
struct MambaConfig {
  Index d_model = 0;      ///< Width of the block's input and output.
  Index d_state = 16;     ///< N, the SSM state size per channel.
  Index d_conv = 4;       ///< Taps of the depthwise causal convolution.
  double expand = 2;      ///< Expansion factor, possibly fractional: d_inner = floor(expand d_model).
  Index dt_rank = 0;      ///< Rank of the delta projection; 0 means "auto" = ceil(d_model / 16).
  bool conv_bias = true;  ///< The convolution has a bias (conv1d_bias); without it b_conv = 0.
  bool bias = false;      ///< in_proj and out_proj have biases (in_proj_bias, out_proj_bias).
  /// Falcon-Mamba's mixer (FalconMambaMixer of Hugging Face transformers): after x_proj, the dt input r
  /// (dt_rank), B and C (d_state each) are each RMS-normalised on their own, without a weight,
  /// v / sqrt(mean(v^2) + dt_bc_norm_eps), before dt_proj and the scan. Off in the reference's Mamba.
  bool dt_bc_norm = false;
  double dt_bc_norm_eps = 1e-6;  ///< eps of those norms (Falcon-Mamba's mixer_rms_eps).

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

  /// The same parameters in scalar U (every field cast; an empty bias stays empty).
  template <class U>
  MambaParams<U> cast() const {
    MambaParams<U> p;
    p.config = config;
    p.in_proj_weight = in_proj_weight.template cast<U>();
    p.in_proj_bias = in_proj_bias.template cast<U>();
    p.conv1d_weight = conv1d_weight.template cast<U>();
    p.conv1d_bias = conv1d_bias.template cast<U>();
    p.x_proj_weight = x_proj_weight.template cast<U>();
    p.dt_proj_weight = dt_proj_weight.template cast<U>();
    p.dt_proj_bias = dt_proj_bias.template cast<U>();
    p.A_log = A_log.template cast<U>();
    p.D = D.template cast<U>();
    p.out_proj_weight = out_proj_weight.template cast<U>();
    p.out_proj_bias = out_proj_bias.template cast<U>();
    return p;
  }
};

/// A Mamba block: full-sequence forward, forward from a state, and one-token steps.
template <class T>
class Mamba {
  static_assert(is_supported_scalar_v<T>, "Mamba: Scalar must be float or double");

 public:
  using Scalar = T;
  using Params = MambaParams<T>;

  /// Streaming state: the convolution's last d_conv inputs and the SSM state, plus the scratch a
  /// step needs, so that `step` allocates nothing. Make one with `initial_state()`; one per stream.
  struct State {
    MatrixX<T> conv;  ///< d_inner x d_conv: the last d_conv conv inputs, newest in the last column.
    MatrixX<T> ssm;   ///< d_inner x d_state: x_t.
    /// Scratch of `step`, no meaning between calls: the input and output (d_model), in_proj's
    /// [x | z] (2 d_inner), the conv output, x_proj's [dt input | B | C], delta and the gated scan output.
    VectorX<T> in, out, xz, xc, x_dbl, dt, y;
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "Mamba";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("conv", conv);
      v("ssm", ssm);
    }

    /// Back to the start of a stream (zero states), keeping the memory.
    void reset() {
      conv.setZero();
      ssm.setZero();
    }
  };

  /// Checks every parameter's shape against `params.config` and keeps them, the four projection weights
  /// in `weights` (full: as given, without a copy; otherwise encoded, and the T copies dropped).
  /// \throws ssm::error naming the parameter, its expected and its actual shape (a bias present
  /// although the config says it is absent, or the other way round, is a shape error too), or a
  /// non-finite weight with q8.
  SSM_NOINLINE explicit Mamba(Params params, WeightFormat weights = WeightFormat::full) : p_(std::move(params)) {
    constexpr const char* where = "Mamba";
    const MambaConfig& c = p_.config;
    check_config(c, where);
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
    A_ = (-p_.A_log.array().exp()).matrix();  // d_inner x N: for each state, the channels contiguous
    in_proj_ = WeightMatrix<T>::take(std::move(p_.in_proj_weight), weights);
    x_proj_ = WeightMatrix<T>::take(std::move(p_.x_proj_weight), weights);
    dt_proj_ = WeightMatrix<T>::take(std::move(p_.dt_proj_weight), weights);
    out_proj_ = WeightMatrix<T>::take(std::move(p_.out_proj_weight), weights);
  }

  /// A block initialised as the reference does (state-spaces/mamba, mamba_simple.py, dt_init "random"),
  /// drawing from `gen`. Every value is drawn in double and rounded to T once:
  ///  - in_proj, x_proj, out_proj weights (and the in / out biases with config.bias): uniform in
  ///    +-1/sqrt(fan_in), PyTorch's nn.Linear default (kaiming-uniform with a = sqrt(5));
  ///    fan_in = d_model, d_inner, d_inner;
  ///  - conv1d weight and bias: uniform in +-1/sqrt(d_conv) (nn.Conv1d's default; depthwise, so
  ///    fan_in = d_conv);
  ///  - dt_proj weight: uniform in +-dt_scale / sqrt(dt_rank);
  ///  - dt_proj bias: softplus^-1(dt) = dt + log(-expm1(-dt)), with dt = exp(U(log dt_min, log dt_max))
  ///    clamped below at dt_init_floor, so that softplus(bias) = dt is log-uniform in [dt_min, dt_max];
  ///  - A_log[d, n] = log(n + 1) (S4D-Real: A = -(1, 2, ..., d_state) for every channel); D = 1.
  /// (MambaLMHeadModel re-initialises some of these, e.g. out_proj scaled by 1/sqrt(n_layer); this is
  /// the block's own recipe.)
  /// \throws ssm::error naming config fields or the dt arguments when out of range
  /// (0 < dt_min <= dt_max, dt_init_floor >= 0, dt_scale > 0, all finite).
  SSM_NOINLINE static Mamba initialise(const MambaConfig& config, std::mt19937_64& gen, double dt_min = 1e-3, double dt_max = 0.1,
                          double dt_init_floor = 1e-4, double dt_scale = 1.0) {
    constexpr const char* where = "Mamba::initialise";
    using detail::concat;
    check_config(config, where);
    check(std::isfinite(dt_min) && dt_min > 0, where, "dt_min", "a finite step > 0", concat(dt_min));
    check(std::isfinite(dt_max) && dt_max >= dt_min, where, "dt_max", concat("a finite step >= dt_min = ", dt_min),
          concat(dt_max));
    check(std::isfinite(dt_init_floor) && dt_init_floor >= 0, where, "dt_init_floor", "a finite value >= 0",
          concat(dt_init_floor));
    check(std::isfinite(dt_scale) && dt_scale > 0, where, "dt_scale", "a finite factor > 0", concat(dt_scale));
    const Index dm = config.d_model, di = config.d_inner(), N = config.d_state, R = config.rank(), K = config.d_conv;
    auto uniform = [&gen](Index rows, Index cols, double bound) {
      std::uniform_real_distribution<double> draw(-bound, bound);
      MatrixX<T> m(rows, cols);
      for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i) m(i, j) = T(draw(gen));
      return m;
    };
    Params p;
    p.config = config;
    const double in_bound = 1 / std::sqrt(double(dm)), inner_bound = 1 / std::sqrt(double(di));
    const double conv_bound = 1 / std::sqrt(double(K));
    p.in_proj_weight = uniform(2 * di, dm, in_bound);
    if (config.bias) p.in_proj_bias = uniform(2 * di, 1, in_bound);
    p.conv1d_weight = uniform(di, K, conv_bound);
    if (config.conv_bias) p.conv1d_bias = uniform(di, 1, conv_bound);
    p.x_proj_weight = uniform(R + 2 * N, di, inner_bound);
    p.dt_proj_weight = uniform(di, R, dt_scale / std::sqrt(double(R)));
    p.dt_proj_bias.resize(di);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const double log_min = std::log(dt_min), log_max = std::log(dt_max);
    for (Index d = 0; d < di; ++d) {
      const double dt = std::max(std::exp(log_min + unit(gen) * (log_max - log_min)), dt_init_floor);
      p.dt_proj_bias[d] = T(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
    }
    p.A_log.resize(di, N);
    for (Index n = 0; n < N; ++n) p.A_log.col(n).setConstant(T(std::log(double(n + 1))));
    p.D = VectorX<T>::Ones(di);
    p.out_proj_weight = uniform(dm, di, inner_bound);
    if (config.bias) p.out_proj_bias = uniform(dm, 1, inner_bound);
    return Mamba(std::move(p));
  }

  /// The parameters, a copy, with the projection weights decoded from their format (for full, exactly
  /// the matrices given).
  Params params() const {
    Params p = p_;
    p.in_proj_weight = in_proj_.decode();
    p.x_proj_weight = x_proj_.decode();
    p.dt_proj_weight = dt_proj_.decode();
    p.out_proj_weight = out_proj_.decode();
    return p;
  }
  /// The same block with its projection weights in `format` (re-encoded from their present values).
  Mamba with_weights(WeightFormat format) const { return Mamba(params(), format); }
  /// How the projection weights are stored.
  WeightFormat weight_format() const { return in_proj_.format(); }
  /// Bytes of the stored projection weights (in_proj, x_proj, dt_proj, out_proj).
  std::size_t weight_bytes() const {
    return in_proj_.bytes() + x_proj_.bytes() + dt_proj_.bytes() + out_proj_.bytes();
  }
  /// The sizes.
  const MambaConfig& config() const { return p_.config; }
  /// Width of u and y: d_model.
  Index channels() const { return p_.config.d_model; }

  /// A zero state (the start of a stream) with its step scratch allocated.
  State initial_state() const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner();
    State s;
    s.conv = MatrixX<T>::Zero(di, c.d_conv);
    s.ssm = MatrixX<T>::Zero(di, c.d_state);
    s.in.resize(c.d_model);
    s.out.resize(c.d_model);
    s.xz.resize(2 * di);
    s.xc.resize(di);
    s.x_dbl.resize(c.rank() + 2 * c.d_state);
    s.dt.resize(di);
    s.y.resize(di);
    return s;
  }

  /// The full-sequence forward from zero states: u is L x d_model, the result L x d_model.
  Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    State s = initial_state();
    return forward(u, s);
  }

  /// The forward of u (L x d_model) starting from `state`, which is left as the state after the
  /// last row: chunked calls give the one-pass result, and `step` continues from it.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state) const {
    constexpr const char* where = "Mamba::forward";
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner(), N = c.d_state, R = c.rank();
    if (u.cols() != c.d_model)
      check(false, where, "u", detail::concat("L x ", c.d_model, " (L x d_model)"), shape_string(u.rows(), u.cols()));
    check_state(state, where);
    const Index L = u.rows();
    if (L == 0) return Sequence<T>(0, c.d_model);

    // in_proj: L x 2 d_inner, x in the first d_inner columns, z in the rest.
    MatrixX<T> xz;
    in_proj_.multiply_rows(u, xz);
    if (c.bias) xz.rowwise() += p_.in_proj_bias.transpose();
    // Depthwise causal convolution of x with SiLU, continuing the state's window.
    MatrixX<T> xc(L, di);
    detail::causal_depthwise_conv_silu<T>(xz.leftCols(di), p_.conv1d_weight, p_.conv1d_bias, state.conv, xc);
    // x_proj, transposed so that each step's (dt input, B, C) is one contiguous column.
    MatrixX<T> x_dbl, delta;
    x_proj_.multiply_columns(xc.transpose(), x_dbl);  // (R + 2N) x L
    if (c.dt_bc_norm) normalise_dt_b_c(x_dbl.data(), L);
    dt_proj_.multiply_rows(x_dbl.topRows(R).transpose(), delta);  // L x d_inner
    Sequence<T> y(L, di);
    // B and C: rows R .. R + N - 1 and R + N .. R + 2N - 1 of x_dbl, read in place as L x N.
    selective_scan_into<T>(xc, delta, A_view(), ScanMatrix<T>::per_step(x_dbl.middleRows(R, N).transpose()),
                           ScanMatrix<T>::per_step(x_dbl.middleRows(R + N, N).transpose()),
                           scan_options(xz.rightCols(di)), y, state.ssm);
    Sequence<T> out;
    out_proj_.multiply_rows(y, out);
    if (c.bias) out.rowwise() += p_.out_proj_bias.transpose();
    return out;
  }

  /// One token: u (d_model) in, y (d_model) out, `state` advanced. Allocates nothing. u and y may be
  /// strided (a row of an L x d_model matrix, `x.row(t)`) and may be the same vector: u is read
  /// completely before y is written.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    constexpr const char* where = "Mamba::step";
    const MambaConfig& c = p_.config;
    check_size(u, c.d_model, where, "u", "d_model");
    check_size(y, c.d_model, where, "y", "d_model");
    check_state(state, where);
    state.in = u;  // contiguous for the product, and read before y is written
    in_proj_.multiply(state.in, state.xz);
    if (c.bias) state.xz += p_.in_proj_bias;
    step_inner(state);
    out_proj_.multiply(state.y, state.out);
    if (c.bias) state.out += p_.out_proj_bias;
    y = state.out;
  }

  /// One token for each of B streams: row b of u (B x d_model) advances *states[b] and gives row b of y
  /// (B x d_model). in_proj and out_proj run as one matrix product over the B streams, so each of the two
  /// largest weights is read once per call instead of once per stream (decoding is bound by reading
  /// weights); the convolution, x_proj, dt_proj and the scan run per stream, in parallel over the streams,
  /// with the arithmetic of `step`. The products sum in another order than `step`'s matrix-vector ones, so
  /// the outputs agree with B separate steps to rounding, not bit for bit; a stream's output does not
  /// depend on the other streams of the batch. y may be u. Allocates the B x (2 d_inner) and B x d_inner
  /// intermediates; with full weights the first call also packs in_proj and out_proj for the product
  /// (core/panel_matrix.hpp: one more copy of each, kept for later calls and shared with copies of the layer).
  /// \throws ssm::error on shapes that do not fit or a state not from `initial_state()`.
  /// `states` points to B state pointers (none null), each from `initial_state()`.
  SSM_NOINLINE void step_batch(const Eigen::Ref<const Sequence<T>>& u, State* const* states, Eigen::Ref<Sequence<T>> y) const {
    constexpr const char* where = "Mamba::step_batch";
    const MambaConfig& c = p_.config;
    const Index B = u.rows();
    check_shape(u, B, c.d_model, where, "u", "B x d_model");
    check_shape(y, B, c.d_model, where, "y", "B x d_model (B = u.rows())");
    detail::project_step_project<T>(
        where, u, states, [&](const State& s) { check_state(s, where); }, in_proj_,
        p_.in_proj_bias, &State::xz, [&](State& s) { step_inner(s); }, out_proj_,
        p_.out_proj_bias, y);
  }

 private:
  /// The config checks shared by the constructor and `initialise`.
  static void check_config(const MambaConfig& c, const char* where) {
    using detail::concat;
    check(c.d_model >= 1, where, "config.d_model", "a size >= 1", concat(c.d_model));
    check(c.d_state >= 1, where, "config.d_state", "a size >= 1", concat(c.d_state));
    check(c.d_conv >= 1, where, "config.d_conv", "a size >= 1", concat(c.d_conv));
    const double inner = c.expand * static_cast<double>(c.d_model);  // checked before the cast in d_inner()
    check(std::isfinite(inner) && inner >= 1 && inner < 1e15, where, "config.expand",
          concat("a factor with 1 <= expand d_model < 1e15 (d_model ", c.d_model, ")"), concat(c.expand));
    check(c.dt_rank >= 0, where, "config.dt_rank", "a rank >= 1, or 0 for auto", concat(c.dt_rank));
    check(!c.dt_bc_norm || c.dt_bc_norm_eps > 0, where, "config.dt_bc_norm_eps", "> 0 (dt_bc_norm is on)",
          concat(c.dt_bc_norm_eps));
  }

  /// Falcon-Mamba's norms (MambaConfig::dt_bc_norm) on x_proj's output for `columns` steps, stored column
  /// by column ((R + 2N) x columns, column-major): in each column the dt input [0, R), B [R, R + N) and
  /// C [R + N, R + 2N) are each scaled by 1 / sqrt(mean of their squares + eps).
  void normalise_dt_b_c(T* x_dbl, Index columns) const {
    const MambaConfig& c = p_.config;
    const Index R = c.rank(), N = c.d_state;
    const T eps = T(c.dt_bc_norm_eps);
    for (Index t = 0; t < columns; ++t)
      for (const auto& [begin, length] : {std::pair<Index, Index>{0, R}, {R, N}, {R + N, N}}) {
        Eigen::Map<VectorX<T>> v(x_dbl + t * (R + 2 * N) + begin, length);
        v *= T(1) / std::sqrt(v.squaredNorm() / T(length) + eps);
      }
  }

  /// The part of a step between the two large projections, on one stream's scratch: from in_proj's
  /// output state.xz to the gated scan output state.y (convolution step, x_proj, dt_proj, one scan step).
  void step_inner(State& state) const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner(), N = c.d_state, R = c.rank();
    detail::causal_depthwise_conv_silu_step<T>(state.xz.head(di), p_.conv1d_weight, p_.conv1d_bias, state.conv, state.xc);
    x_proj_.multiply(state.xc, state.x_dbl);
    if (c.dt_bc_norm) normalise_dt_b_c(state.x_dbl.data(), 1);
    dt_proj_.multiply(state.x_dbl.head(R), state.dt);
    // The scan over one step: 1 x d_inner views of the scratch vectors.
    selective_scan_into<T>(Eigen::Map<const Sequence<T>>(state.xc.data(), 1, di),
                           Eigen::Map<const Sequence<T>>(state.dt.data(), 1, di), A_view(),
                           ScanMatrix<T>::per_step(state.x_dbl.segment(R, N).transpose()),
                           ScanMatrix<T>::per_step(state.x_dbl.segment(R + N, N).transpose()),
                           scan_options(state.xz.tail(di).transpose()), Eigen::Map<Sequence<T>>(state.y.data(), 1, di),
                           state.ssm);
  }

  void check_state(const State& s, const char* where) const {
    const MambaConfig& c = p_.config;
    const Index di = c.d_inner();
    check_shape(s.conv, di, c.d_conv, where, "state.conv", "d_inner x d_conv; use initial_state()");
    check_shape(s.ssm, di, c.d_state, where, "state.ssm", "d_inner x d_state; use initial_state()");
    const bool scratch = s.in.size() == c.d_model && s.out.size() == c.d_model && s.xz.size() == 2 * di &&
                         s.xc.size() == di && s.x_dbl.size() == c.rank() + 2 * c.d_state && s.dt.size() == di &&
                         s.y.size() == di;
    if (!scratch) check(false, where, "state", "scratch sized by initial_state()", "other sizes");  // no string unless it fails
  }

  /// A = -exp(A_log) as the scan's D x N operand (read in place; the step's kernel reads each state's
  /// channels as contiguous vectors).
  Eigen::Map<const MatrixX<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> A_view() const {
    return {A_.data(), A_.rows(), A_.cols(), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(A_.rows(), 1)};
  }

  /// The scan's options for the block: skip D, delta bias and softplus (dt_proj's bias and
  /// activation), and the gate z (L x d_inner, a view of in_proj's second half).
  SelectiveScanOptions<T> scan_options(ScanView<T> z) const {
    SelectiveScanOptions<T> o;
    o.D = p_.D;
    o.delta_bias = p_.dt_proj_bias;
    o.delta_softplus = true;
    o.z = z;
    return o;
  }

  Params p_;  ///< Everything but the four projection weights (empty here; they live below).
  WeightMatrix<T> in_proj_, x_proj_, dt_proj_, out_proj_;
  MatrixX<T> A_;  ///< -exp(A_log): d_inner x N.
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(Mamba)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
