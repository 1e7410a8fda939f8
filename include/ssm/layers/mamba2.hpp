#pragma once
/// \file mamba2.hpp
/// The Mamba-2 mixer (state-spaces/mamba `Mamba2`): an input projection, a depthwise causal
/// convolution, the SSD scan (ssd_scan.hpp), a gated RMSNorm and an output projection.
///
/// Sizes (the reference's names): d_inner = expand d_model, d_ssm (= d_inner unless given), H = d_ssm / P
/// heads of P = headdim channels, G = ngroups, N = d_state, K = d_conv, d_mlp = d_inner - d_ssm,
/// conv_dim = d_ssm + 2 G N, d_in_proj = 2 d_inner + 2 G N + H. For an input u (L x d_model):
///
///     [z0 | x0 | z | xBC | dt] = u W_in^T (+ b_in)     widths d_mlp, d_mlp, d_ssm, conv_dim, H (this order)
///     xBC   = silu(causal_depthwise_conv(xBC) + b_conv)   all of x, B, C convolved: K taps per channel
///     [x | B | C] = xBC                                   widths d_ssm, G N, G N
///     y     = SSD(x, dt, A = -exp(A_log), B, C, D; dt_bias, softplus, dt_limit)   (gate z here if !rmsnorm)
///     y     = gated_rmsnorm(y, z)                          if rmsnorm, in groups of d_ssm / G channels:
///               norm_before_gate = false:  v = y silu(z),  v / sqrt(mean_group(v^2) + eps) * w
///               norm_before_gate = true:   y / sqrt(mean_group(y^2) + eps) * w * silu(z)
///     y     = [silu(z0) * x0 | y]                          the gated-MLP part first, only if d_mlp > 0
///     out   = y W_out^T (+ b_out)                          L x d_model
///
/// The norm groups are the B/C groups (d_ssm / G channels = all heads of a group), not the heads and
/// not all channels: the module builds its norm with group_size = d_ssm / ngroups. In the MLP part the
/// first half (z0) is the gate. `bias` covers in_proj and out_proj, `conv_bias` the convolution.
/// The convolution is causal: out_t = sum_k w[k] xBC_{t - (K - 1) + k}, tap K - 1 on the current input.
///
/// Streaming: the State holds the last K pre-convolution xBC inputs (conv_dim x K, newest in the last
/// column: the reference's conv_state (batch, conv_dim, d_conv)) and the SSD state ((H P) x N, entry
/// (h P + p, n) = the reference's ssm_state[h, p, n]). `forward(u, state)` runs the chunked SSD form and
/// leaves the state after the last row, so a prompt can be prefilled in pieces and continued with `step`
/// (one token, the recurrence, allocation-free). Unlike the reference's step(), which ignores dt_limit
/// and fails for a per-channel D (D_has_hdim), `step` here clamps and handles both, so it always agrees
/// with `forward`.
///
/// Weight formats: in_proj and out_proj can be kept as bfloat16, IEEE half or int8 blocks
/// (core/weight_matrix.hpp): `Mamba2(params, WeightFormat::q8)`. The rest and the states stay T and every
/// product sums in T; the mixer computes what a T mixer with the decoded weights (`params()`) computes.
///
/// Example:
/// \code
///   std::mt19937_64 gen(0);
///   ssm::Mamba2Config cfg;  cfg.d_model = 768;          // d_state 128, headdim 64, expand 2: 24 heads
///   auto block = ssm::Mamba2<float>::initialise(cfg, gen);
///   auto state = block.initial_state();
///   ssm::Sequence<float> y = block.forward(prompt, state);   // prompt: L x 768; state after the prompt
///   ssm::VectorX<float> next(768);
///   block.step(token, state, next);                          // allocation-free
/// \endcode

#include "ssm/core/batch.hpp"
#include "ssm/core/depthwise_conv.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/layers/ssd_scan.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <random>
#include <utility>

namespace ssm {

/// Sizes and options of a Mamba-2 mixer, named and defaulted as the reference's constructor
/// (`Mamba2(d_model, d_state=128, d_conv=4, expand=2, headdim=64, d_ssm=None, ngroups=1, D_has_hdim=False,
/// rmsnorm=True, norm_before_gate=False, dt_limit=(0, inf), bias=False, conv_bias=True)`).
struct Mamba2Config {
  Index d_model = 0;              ///< Width of the input and output.
  Index d_state = 128;            ///< N, states per channel.
  Index d_conv = 4;               ///< K, taps of the depthwise causal convolution.
  Index expand = 2;               ///< d_inner = expand d_model.
  Index headdim = 64;             ///< P, channels per head.
  Index d_ssm = 0;                ///< Channels through the SSM; 0 means d_inner (the rest is a gated MLP).
  Index ngroups = 1;              ///< G, groups of B and C (and of the gated norm); divides nheads.
  bool D_has_hdim = false;        ///< D per channel (d_ssm) instead of per head (nheads).
  bool rmsnorm = true;            ///< Gated RMSNorm after the scan; without it the scan gates y * silu(z).
  bool norm_before_gate = false;  ///< Norm order (see the file comment).
  double dt_limit_min = 0.0;      ///< dt_limit[0]: delta is clamped to [dt_limit_min, dt_limit_max].
  double dt_limit_max = std::numeric_limits<double>::infinity();  ///< dt_limit[1].
  bool bias = false;              ///< in_proj and out_proj have biases.
  bool conv_bias = true;          ///< The convolution has a bias.
  double norm_eps = 1e-5;         ///< eps of the gated RMSNorm (the reference hard-codes 1e-5).
  /// Groups of the gated RMSNorm; 0 means ngroups (the reference: group size d_ssm / ngroups). Hugging
  /// Face's Mamba2 normalises over all d_ssm channels at once whatever n_groups is: 1.
  Index norm_groups = 0;
  /// Q of the chunked SSD form in `forward` (a speed knob only: every Q >= 1 gives the same result).
  Index chunk_size = kSsdDefaultChunk;

  Index d_inner() const { return expand * d_model; }
  /// norm_groups with "0 = ngroups" resolved.
  Index norm_group_count() const { return norm_groups > 0 ? norm_groups : ngroups; }
  /// d_ssm with "0 = d_inner" resolved.
  Index ssm_channels() const { return d_ssm > 0 ? d_ssm : d_inner(); }
  Index nheads() const { return headdim > 0 ? ssm_channels() / headdim : 0; }
  Index d_mlp() const { return d_inner() - ssm_channels(); }
  Index conv_dim() const { return ssm_channels() + 2 * ngroups * d_state; }
  Index d_in_proj() const { return 2 * d_inner() + 2 * ngroups * d_state + nheads(); }
};

/// The initialisation-only arguments of the reference's constructor.
struct Mamba2Init {
  double A_init_min = 1.0, A_init_max = 16.0;  ///< A_init_range: A ~ U(A_init_min, A_init_max), A_log = log A.
  double dt_min = 0.001, dt_max = 0.1;         ///< dt log-uniform in [dt_min, dt_max] ...
  double dt_init_floor = 1e-4;                 ///< ... then floored here; dt_bias = softplus^{-1}(dt).
  double conv_init = 0.0;                      ///< > 0: conv weights U(-conv_init, conv_init); 0: PyTorch's default.
};

/// The parameters of a Mamba-2 mixer: the reference's state_dict with '.' -> '_', PyTorch's (out, in)
/// Linear weights kept out x in. A tensor the config says is absent stays empty.
template <class T>
struct Mamba2Params {
  Mamba2Config config;
  VectorX<T> dt_bias;          ///< nheads, added to dt before the softplus.
  VectorX<T> A_log;            ///< nheads; A = -exp(A_log), one rate per head.
  VectorX<T> D;                ///< nheads, or d_ssm with D_has_hdim (index h headdim + p).
  MatrixX<T> in_proj_weight;   ///< d_in_proj x d_model; rows split [z0, x0, z, xBC, dt].
  VectorX<T> in_proj_bias;     ///< d_in_proj with config.bias, else empty.
  MatrixX<T> conv1d_weight;    ///< conv_dim x d_conv (PyTorch's (conv_dim, 1, d_conv) without the 1).
  VectorX<T> conv1d_bias;      ///< conv_dim with config.conv_bias, else empty.
  VectorX<T> norm_weight;      ///< d_ssm with config.rmsnorm, else empty.
  MatrixX<T> out_proj_weight;  ///< d_model x d_inner.
  VectorX<T> out_proj_bias;    ///< d_model with config.bias, else empty.

  /// The same parameters in scalar type U.
  template <class U>
  Mamba2Params<U> cast() const {
    Mamba2Params<U> r;
    r.config = config;
    r.dt_bias = dt_bias.template cast<U>();
    r.A_log = A_log.template cast<U>();
    r.D = D.template cast<U>();
    r.in_proj_weight = in_proj_weight.template cast<U>();
    r.in_proj_bias = in_proj_bias.template cast<U>();
    r.conv1d_weight = conv1d_weight.template cast<U>();
    r.conv1d_bias = conv1d_bias.template cast<U>();
    r.norm_weight = norm_weight.template cast<U>();
    r.out_proj_weight = out_proj_weight.template cast<U>();
    r.out_proj_bias = out_proj_bias.template cast<U>();
    return r;
  }
};

/// The Mamba-2 mixer: full-sequence forward, forward from a state, and one-token steps.
template <class T>
class Mamba2 {
  static_assert(is_supported_scalar_v<T>, "Mamba2: T must be float or double");

 public:
  using Scalar = T;
  using Params = Mamba2Params<T>;

  /// Streaming state of one stream, plus the scratch `step` needs so that it allocates nothing.
  struct State {
    MatrixX<T> conv;  ///< conv_dim x d_conv: the last d_conv pre-convolution xBC inputs, newest last.
    MatrixX<T> ssm;   ///< (nheads headdim) x d_state: the SSD state, row h headdim + p.
    /// Scratch of `step` (no meaning between calls): u (d_model), zxbcdt (d_in_proj), xbc (conv_dim),
    /// y (d_inner), out (d_model).
    VectorX<T> u, zxbcdt, xbc, y, out;
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "Mamba2";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("conv", conv);
      v("ssm", ssm);
    }

    /// Back to the start of a stream (zero states).
    void reset() {
      conv.setZero();
      ssm.setZero();
    }
  };

  /// Checks every option and parameter shape against `params.config`.
  /// \throws ssm::error naming the field (config.ngroups not dividing nheads, config.d_ssm not a multiple
  /// of config.headdim, a tensor of the wrong shape, a bias present that the config says is absent, ...).
  SSM_NOINLINE explicit Mamba2(Params params, WeightFormat weights = WeightFormat::full)
      : p_(std::move(params)), scan_(scan_params(p_)) {
    in_proj_ = WeightMatrix<T>::take(std::move(p_.in_proj_weight), weights);
    out_proj_ = WeightMatrix<T>::take(std::move(p_.out_proj_weight), weights);
  }

  /// The reference's initialisation, drawn from `gen` in this order, in double then rounded to T:
  /// in_proj_weight U(-1/sqrt(d_model), 1/sqrt(d_model)) row by row (then in_proj_bias, same bound);
  /// conv1d_weight U(-1/sqrt(d_conv), ..) (or U(-conv_init, conv_init)), conv1d_bias U(-1/sqrt(d_conv), ..);
  /// dt = exp(U(log dt_min, log dt_max)) floored at dt_init_floor, dt_bias = dt + log(-expm1(-dt))
  /// (softplus(dt_bias) = dt); A ~ U(A_init_range), A_log = log A; out_proj_weight U(-1/sqrt(d_inner), ..)
  /// (then out_proj_bias); D = 1, norm_weight = 1. (PyTorch's Linear / Conv1d defaults: kaiming_uniform with
  /// a = sqrt(5) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).) A language model re-initialises some of these.
  SSM_NOINLINE static Mamba2 initialise(const Mamba2Config& config, std::mt19937_64& gen, const Mamba2Init& init = {}) {
    constexpr const char* where = "Mamba2::initialise";
    using detail::concat;
    check(init.A_init_min > 0 && init.A_init_min <= init.A_init_max, where, "init.A_init_range",
          "0 < A_init_min <= A_init_max", concat(init.A_init_min, ", ", init.A_init_max));
    check(init.dt_min > 0 && init.dt_min <= init.dt_max, where, "init.dt_min, init.dt_max", "0 < dt_min <= dt_max",
          concat(init.dt_min, ", ", init.dt_max));
    check(init.dt_init_floor >= 0, where, "init.dt_init_floor", ">= 0", concat(init.dt_init_floor));
    check(init.conv_init >= 0, where, "init.conv_init", ">= 0 (0: PyTorch's default)", concat(init.conv_init));
    // Sizes are checked by the constructor at the end; guard only what would make this loop misbehave.
    check(config.d_model >= 1 && config.expand >= 1 && config.headdim >= 1 && config.d_state >= 1 &&
              config.d_conv >= 1 && config.ngroups >= 1 && config.d_ssm >= 0,
          where, "config", "sizes >= 1", "a size < 1");
    const Mamba2Config& c = config;
    const Index H = c.nheads(), di = c.d_inner(), ds = c.ssm_channels();
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](Index rows, Index cols, double bound) {
      MatrixX<double> m(rows, cols);
      for (Index r = 0; r < rows; ++r)
        for (Index k = 0; k < cols; ++k) m(r, k) = (2 * unit(gen) - 1) * bound;
      return m;
    };
    Params p;
    p.config = c;
    const double b_in = 1 / std::sqrt(double(c.d_model));
    p.in_proj_weight = uniform(c.d_in_proj(), c.d_model, b_in).template cast<T>();
    if (c.bias) p.in_proj_bias = uniform(c.d_in_proj(), 1, b_in).template cast<T>();
    const double b_conv = 1 / std::sqrt(double(c.d_conv));
    p.conv1d_weight = uniform(c.conv_dim(), c.d_conv, init.conv_init > 0 ? init.conv_init : b_conv).template cast<T>();
    if (c.conv_bias) p.conv1d_bias = uniform(c.conv_dim(), 1, b_conv).template cast<T>();
    p.dt_bias.resize(H);
    const double lmin = std::log(init.dt_min), lmax = std::log(init.dt_max);
    for (Index h = 0; h < H; ++h) {
      const double dt = std::max(std::exp(unit(gen) * (lmax - lmin) + lmin), init.dt_init_floor);
      p.dt_bias[h] = T(dt + std::log(-std::expm1(-dt)));
    }
    p.A_log.resize(H);
    for (Index h = 0; h < H; ++h)
      p.A_log[h] = T(std::log(init.A_init_min + unit(gen) * (init.A_init_max - init.A_init_min)));
    p.D = VectorX<T>::Ones(c.D_has_hdim ? ds : H);
    if (c.rmsnorm) p.norm_weight = VectorX<T>::Ones(ds);
    const double b_out = 1 / std::sqrt(double(di));
    p.out_proj_weight = uniform(c.d_model, di, b_out).template cast<T>();
    if (c.bias) p.out_proj_bias = uniform(c.d_model, 1, b_out).template cast<T>();
    return Mamba2(std::move(p));
  }

  /// The parameters, a copy, with in_proj and out_proj decoded from their format (for full, exactly the
  /// matrices given).
  Params params() const {
    Params p = p_;
    p.in_proj_weight = in_proj_.decode();
    p.out_proj_weight = out_proj_.decode();
    return p;
  }
  /// The same mixer with in_proj and out_proj in `format` (re-encoded from their present values).
  Mamba2 with_weights(WeightFormat format) const { return Mamba2(params(), format); }
  /// How in_proj and out_proj are stored.
  WeightFormat weight_format() const { return in_proj_.format(); }
  /// Bytes of the stored in_proj and out_proj.
  std::size_t weight_bytes() const { return in_proj_.bytes() + out_proj_.bytes(); }
  const Mamba2Config& config() const { return p_.config; }
  /// d_model: the width of the input and the output.
  Index channels() const { return p_.config.d_model; }
  /// The SSD scan of this mixer (A = -exp(A_log), D, dt_bias, softplus, dt_limit).
  const SsdScan<T>& scan() const { return scan_; }

  /// Zero states with the step scratch allocated.
  State initial_state() const {
    const Mamba2Config& c = p_.config;
    State s;
    s.conv = MatrixX<T>::Zero(c.conv_dim(), c.d_conv);
    s.ssm = MatrixX<T>::Zero(c.nheads() * c.headdim, c.d_state);
    s.u.resize(c.d_model);
    s.zxbcdt.resize(c.d_in_proj());
    s.xbc.resize(c.conv_dim());
    s.y.resize(c.d_inner());
    s.out.resize(c.d_model);
    return s;
  }

  /// The forward of u (L x d_model) from zero states.
  Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    State s = initial_state();
    return forward(u, s);
  }

  /// The forward of u (L x d_model) from `state`, leaving the state after the last row (chunked calls
  /// give the one-pass result; `step` continues from it). Uses the chunked SSD form (config.chunk_size).
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state) const {
    constexpr const char* where = "Mamba2::forward";
    const Mamba2Config& c = p_.config;
    if (u.cols() != c.d_model)
      check(false, where, "u", detail::concat("L x ", c.d_model, " (L x d_model)"), shape_string(u.rows(), u.cols()));
    check_state(state, where);
    const Index L = u.rows(), ds = c.ssm_channels(), dm = c.d_mlp(), H = c.nheads();
    const Index GN = c.ngroups * c.d_state, cd = c.conv_dim();
    if (L == 0) return Sequence<T>(0, c.d_model);

    MatrixX<T> zx;
    in_proj_.multiply_rows(u, zx);
    if (c.bias) zx.rowwise() += p_.in_proj_bias.transpose();
    const Index z_off = 2 * dm, xbc_off = 2 * dm + ds, dt_off = xbc_off + cd;

    // Depthwise causal convolution of xBC with SiLU, continuing the state's window.
    MatrixX<T> xbc(L, cd);
    detail::causal_depthwise_conv_silu<T>(zx.middleCols(xbc_off, cd), p_.conv1d_weight, p_.conv1d_bias, state.conv, xbc);

    // The scan writes straight into the SSM part of [MLP | SSM].
    MatrixX<T> ycat(L, c.d_inner());
    auto y = ycat.rightCols(ds);
    const MatrixX<T> no_gate;
    scan_.run(xbc.leftCols(ds), zx.middleCols(dt_off, H), xbc.middleCols(ds, GN), xbc.middleCols(ds + GN, GN),
              c.rmsnorm ? Eigen::Ref<const MatrixX<T>>(no_gate) : Eigen::Ref<const MatrixX<T>>(zx.middleCols(z_off, ds)),
              state.ssm, y, SsdAlgorithm::chunked, c.chunk_size);
    if (c.rmsnorm) gated_norm(y, zx.middleCols(z_off, ds));
    if (dm > 0) {
      const auto z0 = zx.leftCols(dm).array();
      ycat.leftCols(dm).array() = z0 / (T(1) + (-z0).exp()) * zx.middleCols(dm, dm).array();
    }
    Sequence<T> out;
    out_proj_.multiply_rows(ycat, out);
    if (c.bias) out.rowwise() += p_.out_proj_bias.transpose();
    return out;
  }

  /// One token: u (d_model; a strided view such as a row of a sequence is fine) in, y (d_model) out.
  /// y may alias u. Uses the SSD recurrence. Allocates nothing.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    constexpr const char* where = "Mamba2::step";
    const Mamba2Config& c = p_.config;
    if (u.size() != c.d_model) check_size(u, c.d_model, where, "u", "d_model");
    if (y.size() != c.d_model) check_size(y, c.d_model, where, "y", "d_model");
    check_state(state, where);
    state.u = u;  // contiguous, and u is not read again (y may alias it)
    in_proj_.multiply(state.u, state.zxbcdt);
    if (c.bias) state.zxbcdt += p_.in_proj_bias;
    step_inner(state);
    out_proj_.multiply(state.y, state.out);
    if (c.bias) state.out += p_.out_proj_bias;
    y = state.out;
  }

  /// One token for each of B streams: row b of u (B x d_model) advances *states[b] and gives row b of y
  /// (B x d_model). in_proj and out_proj run as one matrix product over the B streams (each read once per
  /// call, not once per stream); the convolution, the SSD step, the norm and the gates run per stream, in
  /// parallel over the streams, with the arithmetic of `step`. The products sum in another order than
  /// `step`'s matrix-vector ones: the outputs agree with B separate steps to rounding, not bit for bit; a
  /// stream's output does not depend on the other streams of the batch. y may be u. Allocates the B x
  /// d_in_proj and B x d_inner intermediates; with full weights the first call also packs in_proj and
  /// out_proj for the product (core/panel_matrix.hpp: one more copy of each, kept for later calls and
  /// shared with copies of the layer).
  /// \throws ssm::error on shapes that do not fit or a state not from `initial_state()`.
  /// `states` points to B state pointers (none null), each from `initial_state()`.
  SSM_NOINLINE void step_batch(const Eigen::Ref<const Sequence<T>>& u, State* const* states, Eigen::Ref<Sequence<T>> y) const {
    constexpr const char* where = "Mamba2::step_batch";
    const Mamba2Config& c = p_.config;
    const Index B = u.rows();
    check_shape(u, B, c.d_model, where, "u", "B x d_model");
    check_shape(y, B, c.d_model, where, "y", "B x d_model (B = u.rows())");
    detail::project_step_project<T>(
        where, u, states, [&](const State& s) { check_state(s, where); }, in_proj_,
        p_.in_proj_bias, &State::zxbcdt, [&](State& s) { step_inner(s); }, out_proj_,
        p_.out_proj_bias, y);
  }

 private:
  /// The scan's parameters from the mixer's; validates the whole configuration first.
  static SsdScanParams<T> scan_params(const Params& p) {
    validate(p);
    const Mamba2Config& c = p.config;
    SsdScanParams<T> s;
    s.headdim = c.headdim;
    s.ngroups = c.ngroups;
    s.dstate = c.d_state;
    s.A = (-p.A_log.array().exp()).matrix();
    s.D = p.D;
    s.dt_bias = p.dt_bias;
    s.dt_softplus = true;
    s.dt_min = c.dt_limit_min;
    s.dt_max = c.dt_limit_max;
    return s;
  }

  SSM_NOINLINE static void validate(const Params& p) {
    constexpr const char* where = "Mamba2";
    using detail::concat;
    const Mamba2Config& c = p.config;
    check(c.d_model >= 1, where, "config.d_model", "a size >= 1", concat(c.d_model));
    check(c.d_state >= 1, where, "config.d_state", "a size >= 1", concat(c.d_state));
    check(c.d_conv >= 1, where, "config.d_conv", "a size >= 1", concat(c.d_conv));
    check(c.expand >= 1 && c.expand <= Index(1) << 20 && c.d_model <= (Index(1) << 40) / c.expand, where,
          "config.expand", concat("a factor >= 1 with expand d_model <= 2^40 (d_model ", c.d_model, ")"),
          concat(c.expand));
    check(c.headdim >= 1, where, "config.headdim", "a size >= 1", concat(c.headdim));
    check(c.ngroups >= 1, where, "config.ngroups", "a count >= 1", concat(c.ngroups));
    const Index di = c.d_inner(), ds = c.ssm_channels();
    check(c.d_ssm >= 0 && ds <= di, where, "config.d_ssm", concat("0 (= d_inner) or at most d_inner = ", di),
          concat(c.d_ssm));
    check(ds % c.headdim == 0, where, "config.d_ssm",
          concat("a multiple of config.headdim = ", c.headdim, " (d_ssm = ", c.d_ssm == 0 ? "d_inner" : "d_ssm", ")"),
          concat(ds));
    const Index H = c.nheads();
    check(H % c.ngroups == 0, where, "config.ngroups", concat("a divisor of nheads = d_ssm / headdim = ", H),
          concat(c.ngroups));
    check(!(c.dt_limit_min > c.dt_limit_max) && !std::isnan(c.dt_limit_min) && !std::isnan(c.dt_limit_max), where,
          "config.dt_limit", "dt_limit_min <= dt_limit_max", concat(c.dt_limit_min, ", ", c.dt_limit_max));
    check(c.norm_eps > 0, where, "config.norm_eps", "> 0", concat(c.norm_eps));
    check(c.norm_groups >= 0 && (c.norm_groups == 0 || ds % c.norm_groups == 0), where, "config.norm_groups",
          concat("0 (= ngroups) or a divisor of d_ssm = ", ds), concat(c.norm_groups));
    check(c.chunk_size >= 1, where, "config.chunk_size", "a chunk size >= 1", concat(c.chunk_size));
    check_size(p.dt_bias, H, where, "dt_bias", "nheads");
    check_size(p.A_log, H, where, "A_log", "nheads");
    check_size(p.D, c.D_has_hdim ? ds : H, where, "D",
               c.D_has_hdim ? "d_ssm (config.D_has_hdim is true)" : "nheads (config.D_has_hdim is false)");
    check_shape(p.in_proj_weight, c.d_in_proj(), c.d_model, where, "in_proj_weight", "d_in_proj x d_model");
    check_size(p.in_proj_bias, c.bias ? c.d_in_proj() : 0, where, "in_proj_bias",
               c.bias ? "d_in_proj (config.bias is true)" : "empty (config.bias is false)");
    check_shape(p.conv1d_weight, c.conv_dim(), c.d_conv, where, "conv1d_weight", "conv_dim x d_conv");
    check_size(p.conv1d_bias, c.conv_bias ? c.conv_dim() : 0, where, "conv1d_bias",
               c.conv_bias ? "conv_dim (config.conv_bias is true)" : "empty (config.conv_bias is false)");
    check_size(p.norm_weight, c.rmsnorm ? ds : 0, where, "norm_weight",
               c.rmsnorm ? "d_ssm (config.rmsnorm is true)" : "empty (config.rmsnorm is false)");
    check_shape(p.out_proj_weight, c.d_model, di, where, "out_proj_weight", "d_model x d_inner");
    check_size(p.out_proj_bias, c.bias ? c.d_model : 0, where, "out_proj_bias",
               c.bias ? "d_model (config.bias is true)" : "empty (config.bias is false)");
    check_finite(p.A_log, where, "A_log");
  }

  void check_state(const State& s, const char* where) const {
    const Mamba2Config& c = p_.config;
    if (s.conv.rows() != c.conv_dim() || s.conv.cols() != c.d_conv)
      check_shape(s.conv, c.conv_dim(), c.d_conv, where, "state.conv", "conv_dim x d_conv; use initial_state()");
    if (s.ssm.rows() != c.nheads() * c.headdim || s.ssm.cols() != c.d_state)
      check_shape(s.ssm, c.nheads() * c.headdim, c.d_state, where, "state.ssm",
                  "nheads*headdim x d_state; use initial_state()");
    const bool scratch = s.u.size() == c.d_model && s.zxbcdt.size() == c.d_in_proj() && s.xbc.size() == c.conv_dim() &&
                         s.y.size() == c.d_inner() && s.out.size() == c.d_model;
    if (!scratch) check(false, where, "state", "scratch sized by initial_state()", "other sizes");
  }

  /// The part of a step between the two large projections, on one stream's scratch: from in_proj's
  /// output state.zxbcdt to state.y (convolution step, SSD step, gated norm or gate, the MLP part's gate).
  void step_inner(State& state) const {
    const Mamba2Config& c = p_.config;
    const Index ds = c.ssm_channels(), dm = c.d_mlp(), H = c.nheads();
    const Index GN = c.ngroups * c.d_state, cd = c.conv_dim();
    const Index z_off = 2 * dm, xbc_off = 2 * dm + ds, dt_off = xbc_off + cd;
    detail::causal_depthwise_conv_silu_step<T>(state.zxbcdt.segment(xbc_off, cd), p_.conv1d_weight, p_.conv1d_bias,
                                               state.conv, state.xbc);

    auto ys = state.y.tail(ds);
    scan_.step(state.xbc.head(ds), state.zxbcdt.segment(dt_off, H), state.xbc.segment(ds, GN),
               state.xbc.segment(ds + GN, GN),
               c.rmsnorm ? state.zxbcdt.segment(z_off, 0) : state.zxbcdt.segment(z_off, ds), state.ssm, ys);
    if (c.rmsnorm) {
      Eigen::Map<MatrixX<T>> yrow(ys.data(), 1, ds);
      Eigen::Map<const MatrixX<T>> zrow(state.zxbcdt.data() + z_off, 1, ds);
      gated_norm(yrow, zrow);
    }
    if (dm > 0) {
      const auto z0 = state.zxbcdt.head(dm).array();
      state.y.head(dm).array() = z0 / (T(1) + (-z0).exp()) * state.zxbcdt.segment(dm, dm).array();
    }
  }

  /// The gated RMSNorm over rows of y (rows x d_ssm), in groups of d_ssm / G columns, in place.
  /// Column-wise, so that the work runs along contiguous time columns. Allocates nothing for one row.
  template <class Y, class Z>
  void gated_norm(Y&& y, const Z& z) const {
    const Mamba2Config& c = p_.config;
    const Index rows = y.rows(), ds = c.ssm_channels(), groups = c.norm_group_count(), gs = ds / groups;
    const T eps = T(c.norm_eps);
    for (Index g = 0; g < groups; ++g) {
      // Mean square per row, then scale; one row (a step) uses a scalar, a sequence a column vector.
      if (rows == 1) {
        T ms = 0;
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          T v = y(0, j);
          if (!c.norm_before_gate) y(0, j) = v = v * silu(z(0, j));
          ms += v * v;
        }
        const T r = T(1) / std::sqrt(ms / T(gs) + eps);
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          T v = y(0, j) * r * p_.norm_weight[j];
          if (c.norm_before_gate) v *= silu(z(0, j));
          y(0, j) = v;
        }
      } else {
        VectorX<T> ms = VectorX<T>::Zero(rows);
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          auto col = y.col(j).array();
          if (!c.norm_before_gate) {
            const auto zc = z.col(j).array();
            col = col * (zc / (T(1) + (-zc).exp()));
          }
          ms.array() += col.square();
        }
        ms.array() = (ms.array() / T(gs) + eps).rsqrt();
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          auto col = y.col(j).array();
          col = col * ms.array() * p_.norm_weight[j];
          if (c.norm_before_gate) {
            const auto zc = z.col(j).array();
            col = col * (zc / (T(1) + (-zc).exp()));
          }
        }
      }
    }
  }

  Params p_;  ///< Everything but in_proj and out_proj (empty here; they live below).
  WeightMatrix<T> in_proj_, out_proj_;
  SsdScan<T> scan_;
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(Mamba2)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
