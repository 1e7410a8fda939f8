#pragma once
/// \file s4_block.hpp
/// The S4 block of the official state-spaces/s4 code (`S4Block` in models/s4/s4.py: FFTConv around an SSM
/// kernel, then a pointwise output layer), on sequences u of L x H (rows are time steps), run from its
/// official state_dict. In order, for the input u (L x H):
///
/// 1. SSM convolution, `Cc` output channels c (the official `channels`, doubled when `activation` is GLU):
///        z_c[t, h] = sum_{0 <= j < Lk} K_c[j, h] u[t - j, h] + D_c[h] u[t, h]                       (causal)
///                  + sum_{0 <= j < Lk} Kr_c[j, h] u[t + 1 + j, h]                  (bidirectional only)
///    with Lk = min(L, l_max) taps (all L when l_max is 0), K_c[j, h] = 2 Re(C_c Abar^j Bbar) the kernel of
///    kernel row c and Kr_c the kernel of row Cc + c (the anti-causal half, which starts at lag +1: Kr_c[0]
///    multiplies u[t + 1], and has no skip term). Every row reads the same SSM (Lambda, P, B, dt), each its
///    own C. The rows are ssm layers: S4 (DPLR, bilinear; ssm/layers/s4.hpp) or S4D (diagonal, ZOH or
///    bilinear; ssm/layers/s4d.hpp).
/// 2. Flatten to L x (Cc H) with column c H + h = z_c[:, h] (the official "(c h)" order), then the activation
///    (exact-erf GELU by default; GLU halves the columns).
/// 3. The output linear y = a W^T + b (W: out x (channels H)) and the final activation (GLU by default, then
///    W has 2H rows and y = first half * sigmoid(second half)); or no output layer at all (final_act None).
///
/// The recurrent mode (unidirectional blocks): the SSM state x (M x H complex, shared by every output channel,
/// as the official state is) advances with row 0's layer, and channel c reads out 2 Re(C_c x) + D_c u. It
/// equals the convolution while L <= l_max. A bidirectional block has no recurrent mode (its anti-causal half
/// needs future inputs): `step` and `forward(u, state)` throw ssm::error saying so.
///
/// Loading (`load`): the official keys, with the official transforms:
///   layer.D (Cc, H)                       D_c, row c
///   layer.kernel.inv_dt (H, 1)            dt = param_transform(inv_dt, dt_transform) ('exp': dt = exp(inv_dt))
///   layer.kernel.A_real, A_imag (S, M)    A = -f_real(A_real) - i f_imag(A_imag) (s4.py's sign; default f_real = exp,
///                                         f_imag = identity); channel h reads row h mod S (S = n_ssm, default H)
///   layer.kernel.B (1, S, M, 2)           complex B, view_as_real
///   layer.kernel.P (R, S, M, 2)           DPLR only: A = diag(Lambda) - P P^* over the full state
///   layer.kernel.C (K, H, M, 2)           complex C per kernel row (K = Cc, twice that when bidirectional);
///                                         DPLR: C_tilde = C (I - Abar^l_kernel), converted back to C
///   layer.kernel.l_kernel () I64          DPLR only: the length C_tilde belongs to (0: C is the true C)
///   output_linear.0.weight, .bias         the output linear (absent when final_act is None)
/// A missing, extra or misshaped key is an ssm::error naming it.
///
/// The loader also reads the minimal `S4D` of models/s4/s4d.py (example.py's layers; config "class": "S4D"),
/// which is this block with one diagonal ZOH kernel row, B = 1, GELU and a Conv1d(H, 2H, 1) + GLU output, under
/// its own keys and with the opposite imaginary sign:
///   D (H), kernel.C (H, M, 2), kernel.log_dt (H): dt = exp(log_dt),
///   kernel.log_A_real, kernel.A_imag (H, M): A = -exp(log_A_real) + i A_imag,
///   output_linear.0.weight (2H, H, 1), output_linear.0.bias (2H).
///
/// Example:
/// \code
///   auto config = ssm::S4BlockConfig::read("config.json");
///   auto block = ssm::S4Block<double>::load("model.safetensors", config);
///   ssm::Sequence<double> y = block.forward(u);   // u: L x H
/// \endcode

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/layer.hpp"
#include "ssm/core/types.hpp"
#include "ssm/hippo.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/nn/activation.hpp"
#include "ssm/nn/linear.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

/// Which SSM kernel an S4 block runs.
enum class S4BlockKernel {
  dplr,      ///< S4: diagonal plus low rank, bilinear (the official modes 'dplr', 'nplr', 's4')
  diagonal,  ///< S4D: diagonal (the official modes 'diag', 's4d')
};

/// Which official module a checkpoint comes from.
enum class S4BlockModule {
  s4_block,  ///< models/s4/s4.py S4Block (FFTConv + SSMKernelDPLR / SSMKernelDiag)
  s4d,       ///< models/s4/s4d.py S4D (the minimal diagonal layer of example.py)
};

/// The constructor arguments of the official S4Block (config.json), as far as they shape the weights and the
/// forward. Names and defaults are the official ones (S4Block, FFTConv, SSMKernel, SSMKernelDiag).
struct S4BlockConfig {
  S4BlockModule module = S4BlockModule::s4_block;  ///< config "class": "S4D" (or "module" models/s4/s4d.py) for s4d
  Index d_model = 0;              ///< H
  Index d_state = 64;             ///< N (the kernels keep M = N/2 complex modes)
  Index l_max = 0;                ///< longest kernel; 0 for None (kernel as long as the input)
  Index channels = 1;             ///< output channels of the SSM
  bool bidirectional = false;     ///< two-sided kernel (no recurrent mode)
  std::string activation = "gelu";                 ///< after the convolution ("id" for None)
  std::optional<std::string> final_act = "glu";    ///< after the output linear; nullopt: no output layer
  S4BlockKernel mode = S4BlockKernel::dplr;        ///< 'dplr' / 'nplr' / 's4' or 'diag' / 's4d'
  Discretization disc = Discretization::zoh;       ///< diagonal kernel only (DPLR is always bilinear)
  /// The official param_transform of inv_dt, A_real and A_imag: "none" (v), "exp" (e^v), "relu" (max(v, 0) +
  /// 1e-4), "sigmoid" (1 / (1 + e^-v)) or "softplus" (log(1 + e^v)).
  std::string dt_transform = "exp", real_transform = "exp", imag_transform = "none";
  Index rank = 1;                 ///< DPLR low rank R
  Index n_ssm = 0;                ///< S, the (A, B, P) rows shared round-robin by the channels; 0 for None (= H)
  std::string init = "legs";      ///< for `S4Block::initialise` only
  double dt_min = 0.001, dt_max = 0.1;  ///< for `S4Block::initialise` only

  /// Convolution channels Cc: `channels`, doubled when the activation is GLU (as FFTConv does).
  Index conv_channels() const { return activation == "glu" ? 2 * channels : channels; }
  /// Kernel rows K: Cc, twice that when bidirectional.
  Index kernel_rows() const { return conv_channels() * (bidirectional ? 2 : 1); }
  /// S: n_ssm, or H when None.
  Index ssm_rows() const { return n_ssm > 0 ? n_ssm : d_model; }

  /// Parses the text of a config.json holding the block's constructor arguments; `source` names it in
  /// messages. Unknown keys (e.g. "lr", "wd", "class") are ignored; options that would change the block in
  /// ways not implemented (gate, bottleneck, swap_channels, is_real, bandlimit, dt_fast, dt_tie false,
  /// disc 'dss') are an ssm::error naming them.
  static S4BlockConfig parse(const std::string& text, const std::string& source = "config.json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw error(ssm::detail::concat("S4BlockConfig: ", source, ": not valid JSON: ", e.what()));
    }
    auto fail = [&](const std::string& field, const std::string& expected, const std::string& got) {
      throw error(ssm::detail::concat("S4BlockConfig: ", source, ": ", field, ": expected ", expected, ", got ", got));
    };
    if (!j.is_object()) fail("config", "a JSON object", j.type_name());
    auto present = [&](const char* key) { return j.contains(key) && !j.at(key).is_null(); };
    auto integer = [&](const char* key, Index fallback, Index minimum) -> Index {
      if (!present(key)) return fallback;
      const auto& v = j.at(key);
      if (!v.is_number_integer() || v.get<std::int64_t>() < minimum)
        fail(key, ssm::detail::concat("an integer >= ", minimum), v.dump());
      return Index(v.get<std::int64_t>());
    };
    auto text_of = [&](const char* key, const std::string& fallback) -> std::string {
      if (!present(key)) return fallback;
      const auto& v = j.at(key);
      if (!v.is_string()) fail(key, "a string", v.dump());
      return v.get<std::string>();
    };
    auto boolean = [&](const char* key, bool fallback) {
      if (!present(key)) return fallback;
      const auto& v = j.at(key);
      if (!v.is_boolean()) fail(key, "true or false", v.dump());
      return v.get<bool>();
    };
    auto number = [&](const char* key, double fallback) {
      if (!present(key)) return fallback;
      const auto& v = j.at(key);
      if (!v.is_number()) fail(key, "a number", v.dump());
      return v.get<double>();
    };
    S4BlockConfig c;
    if (text_of("class", "S4Block") == "S4D" || text_of("module", "") == "models/s4/s4d.py") {
      // models/s4/s4d.py's S4D(d_model, d_state=64, dropout=0.0, transposed=True, dt_min, dt_max, lr): fixed
      // diagonal ZOH kernel, GELU, Conv1d + GLU; the S4Block options are not its arguments.
      c.module = S4BlockModule::s4d;
      for (const char* key : {"channels", "bidirectional", "activation", "final_act", "mode", "l_max", "disc", "rank",
                              "n_ssm", "dt_transform", "real_transform", "imag_transform", "init"})
        if (j.contains(key)) fail(key, "absent (not an argument of models/s4/s4d.py's S4D)", j.at(key).dump());
      c.mode = S4BlockKernel::diagonal;
      c.init = "diag-lin";
    }
    if (!present("d_model")) fail("d_model", "an integer >= 1", "nothing (the field is missing)");
    c.d_model = integer("d_model", 0, 1);
    c.d_state = integer("d_state", 64, 2);
    if (c.d_state % 2 != 0) fail("d_state", "an even integer (conjugate pairs)", std::to_string(c.d_state));
    c.l_max = integer("l_max", 0, 1);
    c.channels = integer("channels", 1, 1);
    c.bidirectional = boolean("bidirectional", false);
    // FFTConv's activation: None is the identity.
    c.activation = j.contains("activation") && j.at("activation").is_null() ? "id" : text_of("activation", "gelu");
    nn::activation_from_name(c.activation, "activation");  // refuses unknown names
    if (j.contains("final_act") && j.at("final_act").is_null())
      c.final_act.reset();
    else
      c.final_act = text_of("final_act", "glu");
    if (c.final_act) nn::activation_from_name(*c.final_act, "final_act");
    const std::string mode = text_of("mode", "dplr");
    if (mode == "dplr" || mode == "nplr" || mode == "s4") c.mode = S4BlockKernel::dplr;
    else if (mode == "diag" || mode == "s4d") c.mode = S4BlockKernel::diagonal;
    else fail("mode", "'dplr', 'nplr', 's4', 'diag' or 's4d'", "'" + mode + "'");
    const std::string disc = text_of("disc", "zoh");
    if (disc == "zoh") c.disc = Discretization::zoh;
    else if (disc == "bilinear") c.disc = Discretization::bilinear;
    else if (c.mode == S4BlockKernel::diagonal) fail("disc", "'zoh' or 'bilinear'", "'" + disc + "'");
    auto transform = [&](const char* key, const char* fallback) {
      const std::string v = text_of(key, fallback);
      if (v != "none" && v != "exp" && v != "relu" && v != "sigmoid" && v != "softplus")
        fail(key, "'none', 'exp', 'relu', 'sigmoid' or 'softplus'", "'" + v + "'");
      return v;
    };
    c.dt_transform = transform("dt_transform", "exp");
    c.real_transform = transform("real_transform", "exp");
    c.imag_transform = transform("imag_transform", "none");
    c.rank = integer("rank", 1, 1);
    c.n_ssm = integer("n_ssm", 0, 1);
    if (c.n_ssm > 0 && c.d_model % c.n_ssm != 0)
      fail("n_ssm", ssm::detail::concat("a divisor of d_model = ", c.d_model), std::to_string(c.n_ssm));
    c.init = text_of("init", "legs");
    c.dt_min = number("dt_min", 0.001);
    c.dt_max = number("dt_max", 0.1);
    // Options this implementation does not run (or that do not run in the official standalone block either).
    for (const char* key : {"gate", "bottleneck", "postact", "bandlimit", "gate_act", "mult_act", "kernel"})
      if (present(key)) fail(key, "None (not supported)", j.at(key).dump());
    for (const char* key : {"swap_channels", "is_real", "dt_fast"})
      if (boolean(key, false)) fail(key, "false (not supported)", "true");
    if (!boolean("dt_tie", true)) fail("dt_tie", "true (one dt per channel; not supported otherwise)", "false");
    return c;
  }

  /// Reads and parses a config.json file.
  static S4BlockConfig read(const std::string& path) {
    std::ifstream file(path);
    if (!file) throw error(ssm::detail::concat("S4BlockConfig: ", path, ": cannot open the file"));
    std::stringstream text;
    text << file.rdbuf();
    return parse(text.str(), path);
  }
};

/// The parameters of an S4 block in their physical meaning. K kernel rows, each a complete S4 or S4D layer
/// (its C the row's output vector, its D the skip term): rows [0, Cc) causal (D = D_c), and when bidirectional
/// rows [Cc, 2 Cc) anti-causal (D = 0). Every row has the same Lambda, P, B, log_dt, kernel_length (and
/// discretisation): one SSM read out by several C.
template <class T>
struct S4BlockParams {
  S4BlockKernel kernel = S4BlockKernel::dplr;
  std::vector<S4Params<T>> dplr;       ///< K rows when kernel == dplr, else empty
  std::vector<S4DParams<T>> diagonal;  ///< K rows when kernel == diagonal, else empty
  bool bidirectional = false;
  nn::Activation activation = nn::Activation::gelu;        ///< after the convolution, on Cc H features
  std::optional<nn::Linear<T>> output_linear;              ///< absent: no output layer (final_act None)
  nn::Activation final_activation = nn::Activation::glu;   ///< after output_linear (identity without it)

  Index kernel_rows() const { return kernel == S4BlockKernel::dplr ? Index(dplr.size()) : Index(diagonal.size()); }

  template <class U>
  S4BlockParams<U> cast() const {
    S4BlockParams<U> out;
    out.kernel = kernel;
    for (const auto& p : dplr) out.dplr.push_back(p.template cast<U>());
    for (const auto& p : diagonal) out.diagonal.push_back(p.template cast<U>());
    out.bidirectional = bidirectional;
    out.activation = activation;
    if (output_linear) out.output_linear = output_linear->template cast<U>();
    out.final_activation = final_activation;
    return out;
  }
};

/// The official S4 block over scalar T (float or double); see the file comment. Immutable after construction;
/// const member functions are safe to call from several threads.
template <class T>
class S4Block {
  static_assert(is_supported_scalar_v<T>, "S4Block: T must be float or double");

 public:
  using Scalar = T;
  using Params = S4BlockParams<T>;

  /// Recurrent state of one stream: the shared SSM state (M x H complex, in `dplr` or `diagonal` depending on
  /// the kernel; the other is empty) and scratch so that `step` allocates nothing.
  struct State {
    typename S4<T>::State dplr;
    typename S4D<T>::State diagonal;
    VectorX<T> conv;    ///< Cc H: the convolution channels of one step
    VectorX<T> hidden;  ///< after the activation
    VectorX<T> linear;  ///< after the output linear
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "S4Block";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("dplr.x", dplr.x);
      v("diagonal.x", diagonal.x);
    }
    /// Back to the zero state (keeps the memory).
    void reset() {
      dplr.reset();
      diagonal.reset();
    }
  };

  /// Checks `params` (ssm::error naming the field) and builds the K row layers.
  SSM_NOINLINE explicit S4Block(Params params) : p_(std::move(params)) {
    const char* where = "S4Block";
    const bool is_dplr = p_.kernel == S4BlockKernel::dplr;
    check(is_dplr ? p_.diagonal.empty() : p_.dplr.empty(), where, is_dplr ? "diagonal" : "dplr",
          "empty (the rows of the other kernel kind)", "rows");
    const Index K = p_.kernel_rows();
    check(K >= 1 && (!p_.bidirectional || K % 2 == 0), where, is_dplr ? "dplr" : "diagonal",
          p_.bidirectional ? "an even number >= 2 of kernel rows (causal, then anti-causal)" : "at least one kernel row",
          ssm::detail::concat(K, " rows"));
    conv_channels_ = p_.bidirectional ? K / 2 : K;
    if (is_dplr) {
      for (Index k = 0; k < K; ++k) {
        const S4Params<T>& a = p_.dplr[std::size_t(k)];
        const S4Params<T>& b = p_.dplr[0];
        bool same = equal(a.Lambda, b.Lambda) && equal(a.B, b.B) && equal(a.log_dt, b.log_dt) &&
                    a.kernel_length == b.kernel_length && a.P.size() == b.P.size();
        for (std::size_t r = 0; same && r < a.P.size(); ++r) same = equal(a.P[r], b.P[r]);
        if (!same) check(false, where, row_name("dplr", k).c_str(), "the Lambda, P, B, log_dt, kernel_length of row 0 (one SSM)", "different ones");
        dplr_.emplace_back(a);
      }
    } else {
      for (Index k = 0; k < K; ++k) {
        const S4DParams<T>& a = p_.diagonal[std::size_t(k)];
        const S4DParams<T>& b = p_.diagonal[0];
        const bool same = equal(a.Lambda, b.Lambda) && equal(a.B, b.B) && equal(a.log_dt, b.log_dt) &&
                          a.kernel_length == b.kernel_length && a.discretization == b.discretization;
        if (!same) check(false, where, row_name("diagonal", k).c_str(), "the Lambda, B, log_dt, kernel_length, discretization of row 0 (one SSM)", "different ones");
        diagonal_.emplace_back(a);
      }
    }
    for (Index k = conv_channels_; k < K; ++k) {
      const VectorX<T>& D = is_dplr ? p_.dplr[std::size_t(k)].D : p_.diagonal[std::size_t(k)].D;
      if (!D.isZero(0)) check(false, where, row_name(is_dplr ? "dplr" : "diagonal", k).c_str(), "D = 0 (the anti-causal half has no skip term)", "a nonzero D");
    }
    const Index conv_width = conv_channels_ * channels();
    if (p_.activation == nn::Activation::glu && conv_width % 2 != 0)
      check(false, where, "activation", "an even number of convolution features for GLU", ssm::detail::concat(conv_width));
    hidden_width_ = nn::activation_output_width(p_.activation, conv_width);
    if (p_.output_linear) {
      const nn::Linear<T>& lin = *p_.output_linear;
      if (lin.in_features() != hidden_width_)
        check(false, where, "output_linear", ssm::detail::concat("weight of out x ", hidden_width_, " (the activation's output)"),
              shape_string(lin.out_features(), lin.in_features()));
      if (p_.final_activation == nn::Activation::glu && lin.out_features() % 2 != 0)
        check(false, where, "output_linear", "an even number of outputs for the final GLU", ssm::detail::concat(lin.out_features()));
      output_width_ = nn::activation_output_width(p_.final_activation, lin.out_features());
    } else {
      check(p_.final_activation == nn::Activation::identity, where, "final_activation",
            "identity without an output_linear (final_act None)", nn::activation_name(p_.final_activation));
      output_width_ = hidden_width_;
    }
    // Readouts of channels c >= 1 in the recurrent mode: C_c as M x H, and D_c.
    for (Index c = 1; c < conv_channels_; ++c) {
      if (is_dplr) {
        readout_C_.push_back(p_.dplr[std::size_t(c)].C.transpose());
        readout_D_.push_back(p_.dplr[std::size_t(c)].D);
      } else {
        readout_C_.push_back(p_.diagonal[std::size_t(c)].C.transpose());
        readout_D_.push_back(p_.diagonal[std::size_t(c)].D);
      }
    }
  }

  /// A block with the official initialisation scheme for `config` (its d_model, d_state, channels,
  /// bidirectional, activation, final_act, mode, init, disc, rank, dt_min, dt_max, l_max): the SSM from
  /// S4::initialise (init 'legs', 'legt', 'lagt', 'glagt', 'fout' / 'fourier') or S4D::initialise (init
  /// 'diag-lin', 'diag-inv', 'diag-real', 'diag-legs'), every kernel row its own C (complex normal, unit
  /// variance), D standard normal, the output linear uniform in +-1/sqrt(in) (PyTorch's default).
  /// Deterministic given `gen`.
  SSM_NOINLINE static S4Block initialise(const S4BlockConfig& config, std::mt19937_64& gen) {
    const char* where = "S4Block::initialise";
    check(config.d_model >= 1, where, "config.d_model", ">= 1", ssm::detail::concat(config.d_model));
    const Index H = config.d_model, N = config.d_state, K = config.kernel_rows(), Cc = config.conv_channels();
    Params p;
    p.kernel = config.mode;
    p.bidirectional = config.bidirectional;
    p.activation = nn::activation_from_name(config.activation, "activation");
    std::normal_distribution<double> normal(0.0, 1.0);
    auto random_C = [&](Index M) {
      MatrixXc<T> C(H, M);
      for (Index n = 0; n < M; ++n)
        for (Index h = 0; h < H; ++h)
          C(h, n) = Complex<T>(T(normal(gen) / std::sqrt(2.0)), T(normal(gen) / std::sqrt(2.0)));
      return C;
    };
    auto random_D = [&](Index k) {
      VectorX<T> D = VectorX<T>::Zero(H);
      if (k < Cc)
        for (Index h = 0; h < H; ++h) D(h) = T(normal(gen));
      return D;
    };
    if (config.mode == S4BlockKernel::dplr) {
      static const std::pair<const char*, hippo::Measure> measures[] = {
          {"legs", hippo::Measure::legs}, {"legt", hippo::Measure::legt},   {"lagt", hippo::Measure::lagt},
          {"glagt", hippo::Measure::glagt}, {"fout", hippo::Measure::fout}, {"fourier", hippo::Measure::fout}};
      std::optional<hippo::Measure> measure;
      for (const auto& [name, m] : measures)
        if (config.init == name) measure = m;
      if (!measure) check(false, where, "config.init", "one of legs, legt, lagt, glagt, fout, fourier (DPLR)", "'" + config.init + "'");
      S4Params<T> base = S4<T>::initialise(H, N, *measure, gen, config.dt_min, config.dt_max, config.rank).params();
      base.kernel_length = config.l_max;
      for (Index k = 0; k < K; ++k) {
        S4Params<T> row = base;
        row.C = random_C(base.modes());
        row.D = random_D(k);
        p.dplr.push_back(std::move(row));
      }
    } else {
      static const std::pair<const char*, hippo::DiagonalInit> inits[] = {
          {"diag-lin", hippo::DiagonalInit::lin}, {"diag-inv", hippo::DiagonalInit::inv},
          {"diag-real", hippo::DiagonalInit::real}, {"diag-legs", hippo::DiagonalInit::legs}};
      std::optional<hippo::DiagonalInit> init;
      for (const auto& [name, i] : inits)
        if (config.init == name) init = i;
      if (!init) check(false, where, "config.init", "one of diag-lin, diag-inv, diag-real, diag-legs (diagonal)", "'" + config.init + "'");
      S4DParams<T> base = S4D<T>::initialise(H, N, *init, config.disc, gen, config.dt_min, config.dt_max).params();
      base.kernel_length = config.l_max;
      for (Index k = 0; k < K; ++k) {
        S4DParams<T> row = base;
        row.C = random_C(base.modes());
        row.D = random_D(k);
        p.diagonal.push_back(std::move(row));
      }
    }
    if (config.final_act) {
      p.final_activation = nn::activation_from_name(*config.final_act, "final_act");
      const Index in = nn::activation_output_width(p.activation, Cc * H);
      const Index out = p.final_activation == nn::Activation::glu ? 2 * H : H;
      std::uniform_real_distribution<double> uniform(-1.0 / std::sqrt(double(in)), 1.0 / std::sqrt(double(in)));
      MatrixX<T> W(out, in);
      for (Index i = 0; i < in; ++i)
        for (Index o = 0; o < out; ++o) W(o, i) = T(uniform(gen));
      VectorX<T> b(out);
      for (Index o = 0; o < out; ++o) b(o) = T(uniform(gen));
      p.output_linear = nn::Linear<T>(std::move(W), std::move(b));
    } else {
      p.final_activation = nn::Activation::identity;
    }
    return S4Block(std::move(p));
  }

  /// The block from an official S4Block state_dict in `file` (keys `prefix` + the names in the file comment,
  /// e.g. prefix "layers.3." inside a model) and its constructor arguments `config`. The transforms are done
  /// in double (the DPLR C_tilde -> C solve included), then rounded to T. Keys of `file` that start with
  /// `prefix` must be exactly the expected ones: a missing, extra or misshaped (or wrongly typed) key is an
  /// ssm::error naming it.
  SSM_NOINLINE static S4Block load(const io::SafetensorsFile& file, const S4BlockConfig& config, const std::string& prefix = "") {
    return S4Block(load_params(file, config, prefix).template cast<T>());
  }

  /// The same from the path of a safetensors file.
  SSM_NOINLINE static S4Block load(const std::string& safetensors_path, const S4BlockConfig& config, const std::string& prefix = "") {
    return load(io::SafetensorsFile::read(safetensors_path), config, prefix);
  }

  /// The same from a directory holding model.safetensors and config.json (as the golden cases do).
  SSM_NOINLINE static S4Block load_directory(const std::string& directory, const std::string& prefix = "") {
    return load(directory + "/model.safetensors", S4BlockConfig::read(directory + "/config.json"), prefix);
  }

  /// The parameters `load` builds (in double, before rounding to T).
  SSM_NOINLINE static S4BlockParams<double> load_params(const io::SafetensorsFile& file, const S4BlockConfig& config,
                                           const std::string& prefix = "");

  const Params& params() const { return p_; }
  /// H: the width of the input.
  Index channels() const { return p_.kernel == S4BlockKernel::dplr ? p_.dplr[0].channels() : p_.diagonal[0].channels(); }
  /// The width of the output: H with an output layer (final GLU included), Cc H (or half for a GLU activation)
  /// without one.
  Index output_width() const { return output_width_; }
  /// Cc: the convolution's output channels per feature.
  Index conv_channels() const { return conv_channels_; }
  /// M: complex modes of the SSM.
  Index modes() const { return p_.kernel == S4BlockKernel::dplr ? p_.dplr[0].modes() : p_.diagonal[0].modes(); }
  bool bidirectional() const { return p_.bidirectional; }

  /// The convolution kernel of row k (0 <= k < K) for Lk taps, Lk x H (without D).
  SSM_NOINLINE MatrixX<T> kernel(Index k, Index Lk) const {
    check(k >= 0 && k < p_.kernel_rows(), "S4Block::kernel", "k", ssm::detail::concat("0 <= k < ", p_.kernel_rows()),
          ssm::detail::concat(k));
    return p_.kernel == S4BlockKernel::dplr ? dplr_[std::size_t(k)].kernel(Lk) : diagonal_[std::size_t(k)].kernel(Lk);
  }

  /// Convolution mode from the zero state: u is L x H, returns L x output_width(). The kernel has
  /// min(L, l_max) taps (all L when l_max is 0), as the official FFTConv.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    check_input(u, "S4Block::forward");
    const Index L = u.rows(), H = channels();
    if (L == 0) return Sequence<T>(0, output_width_);
    MatrixX<T> conv(L, conv_channels_ * H);
    for (Index c = 0; c < conv_channels_; ++c) conv.middleCols(c * H, H) = row_forward(c, u);
    if (p_.bidirectional && L > 1) {
      // Anti-causal half: z = Kr * reverse(u) causally, then sum_j Kr[j] u[t + 1 + j] = z[L - 2 - t].
      const Sequence<T> reversed = u.colwise().reverse();
      for (Index c = 0; c < conv_channels_; ++c) {
        const Sequence<T> z = row_forward(conv_channels_ + c, reversed);
        conv.block(0, c * H, L - 1, H) += z.topRows(L - 1).colwise().reverse();
      }
    }
    return head(conv);
  }

  /// The zero state of one stream.
  State initial_state() const {
    State s;
    if (p_.kernel == S4BlockKernel::dplr)
      s.dplr = dplr_[0].initial_state();
    else
      s.diagonal = diagonal_[0].initial_state();
    s.conv = VectorX<T>::Zero(conv_channels_ * channels());
    s.hidden = VectorX<T>::Zero(hidden_width_);
    s.linear = VectorX<T>::Zero(p_.output_linear ? p_.output_linear->out_features() : 0);
    return s;
  }

  /// A whole sequence from `state`, leaving the state after the last row in it (unidirectional blocks only).
  /// `mode` is passed to the row layers (S4 / S4D `forward(u, state, mode)`): both give the same result.
  /// Runs the untruncated recurrence: equal to `forward(u)` only while L <= l_max.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state, Mode mode = Mode::automatic) const {
    const char* where = "S4Block::forward";
    check_recurrent(where);
    check_input(u, where);
    check_state(state, where);
    const Index L = u.rows(), H = channels();
    if (L == 0) return Sequence<T>(0, output_width_);
    MatrixX<T> conv(L, conv_channels_ * H);
    // Channels c >= 1 from copies of the starting state, then channel 0 advances the state itself.
    for (Index c = conv_channels_ - 1; c >= 0; --c) {
      if (p_.kernel == S4BlockKernel::dplr) {
        typename S4<T>::State copy = state.dplr;
        conv.middleCols(c * H, H) = dplr_[std::size_t(c)].forward(u, c == 0 ? state.dplr : copy, mode);
      } else {
        typename S4D<T>::State copy = state.diagonal;
        conv.middleCols(c * H, H) = diagonal_[std::size_t(c)].forward(u, c == 0 ? state.diagonal : copy, mode);
      }
    }
    return head(conv);
  }

  /// One time step (unidirectional blocks only): `u` has H entries, `y` output_width() entries; both may be
  /// strided and `y` may alias `u`. Allocates nothing.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    const char* where = "S4Block::step";
    check_recurrent(where);
    const Index H = channels();
    if (u.size() != H) check_size(u, H, where, "u", "H");
    if (y.size() != output_width_) check_size(y, output_width_, where, "y", "output_width()");
    check_state(state, where);
    const MatrixXc<T>* x = nullptr;
    if (p_.kernel == S4BlockKernel::dplr) {
      dplr_[0].step(u, state.dplr, state.conv.head(H));
      x = &state.dplr.x;
    } else {
      diagonal_[0].step(u, state.diagonal, state.conv.head(H));
      x = &state.diagonal.x;
    }
    // The other channels read the same state: 2 Re(C_c x) + D_c u.
    for (Index c = 1; c < conv_channels_; ++c) {
      const MatrixXc<T>& C = readout_C_[std::size_t(c - 1)];
      const VectorX<T>& D = readout_D_[std::size_t(c - 1)];
      for (Index h = 0; h < H; ++h) {
        T acc = 0;
        for (Index n = 0; n < C.rows(); ++n) acc += re_mul(C(n, h), (*x)(n, h));
        state.conv(c * H + h) = 2 * acc + D(h) * u(h);
      }
    }
    const Eigen::Map<const MatrixX<T>> conv(state.conv.data(), 1, state.conv.size());
    if (p_.output_linear) {
      Eigen::Map<MatrixX<T>> hidden(state.hidden.data(), 1, state.hidden.size());
      Eigen::Map<MatrixX<T>> linear(state.linear.data(), 1, state.linear.size());
      nn::activate_into(p_.activation, conv, hidden);
      p_.output_linear->forward_into(hidden, linear);
      nn::activate_into(p_.final_activation, linear, y.transpose());
    } else {
      nn::activate_into(p_.activation, conv, y.transpose());
    }
  }

 private:
  static std::string row_name(const char* kind, Index k) { return ssm::detail::concat(kind, "[", k, "]"); }

  /// Same shape and the same values (Eigen's == needs equal shapes).
  template <class A, class B>
  static bool equal(const A& a, const B& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && a == b;
  }

  void check_input(const Eigen::Ref<const Sequence<T>>& u, const char* where) const {
    if (u.cols() != channels())
      check(false, where, "u", ssm::detail::concat("L x ", channels(), " (L x H)"), shape_string(u.rows(), u.cols()));
  }

  void check_recurrent(const char* where) const {
    if (p_.bidirectional)  // the message is built only on failure: step allocates nothing
      check(false, where, "block", "a unidirectional block",
            "a bidirectional one: its anti-causal half needs future inputs, so it has no recurrent mode (use forward(u))");
  }

  void check_state(const State& state, const char* where) const {
    check_size(state.conv, conv_channels_ * channels(), where, "state.conv", "Cc H (from initial_state())");
    check_size(state.hidden, hidden_width_, where, "state.hidden", "from initial_state()");
    check_size(state.linear, p_.output_linear ? p_.output_linear->out_features() : 0, where, "state.linear",
               "from initial_state()");
    // The SSM state's shape is checked by the row layer.
  }

  SSM_NOINLINE Sequence<T> row_forward(Index k, const Eigen::Ref<const Sequence<T>>& u) const {
    return p_.kernel == S4BlockKernel::dplr ? dplr_[std::size_t(k)].forward(u) : diagonal_[std::size_t(k)].forward(u);
  }

  /// Activation, output linear, final activation on the L x Cc H convolution output.
  SSM_NOINLINE Sequence<T> head(const MatrixX<T>& conv) const {
    MatrixX<T> hidden = nn::activate(p_.activation, conv);
    if (!p_.output_linear) return hidden;
    return nn::activate(p_.final_activation, p_.output_linear->forward(hidden));
  }

  Params p_;
  Index conv_channels_ = 0, hidden_width_ = 0, output_width_ = 0;
  std::vector<S4<T>> dplr_;
  std::vector<S4D<T>> diagonal_;
  std::vector<MatrixXc<T>> readout_C_;  // channels c >= 1: C_c as M x H
  std::vector<VectorX<T>> readout_D_;   // channels c >= 1: D_c
};

namespace detail {

/// One expected key of a state_dict: its name (without the prefix), PyTorch shape, and integer or float dtype.
struct StateDictKey {
  std::string name;
  std::vector<Index> shape;
  bool integer = false;
};

/// Checks that the keys of `file` under `prefix` are exactly `keys` (prefix + name), each with its shape and
/// kind of dtype: a missing, misshaped, wrongly typed or extra key is an ssm::error naming it.
inline void check_state_dict_keys(const io::SafetensorsFile& file, const std::string& prefix,
                                  const std::vector<StateDictKey>& keys) {
  const char* where = "S4Block::load";
  std::set<std::string> expected;
  for (const StateDictKey& key : keys) {
    const std::string name = prefix + key.name;
    expected.insert(name);
    if (!file.contains(name))
      throw error(ssm::detail::concat(where, ": ", file.source(), ": tensor '", name, "': missing (expected shape ",
                                      io::SafetensorsFile::shape_text(key.shape), ")"));
    const io::TensorInfo& info = file.info(name);
    if (info.shape != key.shape)
      throw error(ssm::detail::concat(where, ": ", file.source(), ": tensor '", name, "': expected shape ",
                                      io::SafetensorsFile::shape_text(key.shape), ", got ",
                                      io::SafetensorsFile::shape_text(info.shape)));
    if (io::is_integer_dtype(info.dtype) != key.integer)
      throw error(ssm::detail::concat(where, ": ", file.source(), ": tensor '", name, "': expected ",
                                      key.integer ? "an integer dtype (I64)" : "a floating-point dtype", ", got ",
                                      io::dtype_name(info.dtype)));
  }
  for (const std::string& name : file.names())
    if (name.compare(0, prefix.size(), prefix) == 0 && expected.count(name) == 0)
      throw error(ssm::detail::concat(where, ": ", file.source(), ": tensor '", name,
                                      "': not a parameter of this S4 block (an unexpected key for its config)"));
}

/// The official param_transform: the positive value a stored parameter stands for.
inline double s4_param_transform(double v, const std::string& transform) {
  if (transform == "none") return v;
  if (transform == "exp") return std::exp(v);
  if (transform == "relu") return (v > 0 ? v : 0.0) + 1e-4;
  if (transform == "sigmoid") return nn::sigmoid(v);
  if (transform == "softplus") return ssm::softplus(v);
  check(false, "S4Block::load", "config transform", "'none', 'exp', 'relu', 'sigmoid' or 'softplus'", "'" + transform + "'");
  return v;  // not reached
}

/// models/s4/s4d.py's S4D as block parameters (see the file comment of s4_block.hpp).
inline S4BlockParams<double> load_s4d_params(const io::SafetensorsFile& file, const S4BlockConfig& config,
                                             const std::string& prefix) {
  const Index H = config.d_model, M = config.d_state / 2;
  check_state_dict_keys(file, prefix,
                        {{"D", {H}, false},
                         {"kernel.C", {H, M, 2}, false},
                         {"kernel.log_dt", {H}, false},
                         {"kernel.log_A_real", {H, M}, false},
                         {"kernel.A_imag", {H, M}, false},
                         {"output_linear.0.weight", {2 * H, H, 1}, false},
                         {"output_linear.0.bias", {2 * H}, false}});
  auto values = [&](const char* key) { return file.values<double>(prefix + key); };
  const std::vector<double> D = values("D"), C = values("kernel.C"), log_dt = values("kernel.log_dt"),
                            log_A_real = values("kernel.log_A_real"), A_imag = values("kernel.A_imag");
  S4DParams<double> row;
  row.Lambda.resize(H, M);
  row.C.resize(H, M);
  for (Index h = 0; h < H; ++h)
    for (Index n = 0; n < M; ++n) {
      const std::size_t i = std::size_t(h * M + n);
      row.Lambda(h, n) = Complex<double>(-std::exp(log_A_real[i]), A_imag[i]);  // s4d.py: + i A_imag
      row.C(h, n) = Complex<double>(C[2 * i], C[2 * i + 1]);
    }
  row.B = MatrixXc<double>::Ones(H, M);
  row.D = Eigen::Map<const VectorX<double>>(D.data(), H);
  row.log_dt = Eigen::Map<const VectorX<double>>(log_dt.data(), H);
  row.discretization = Discretization::zoh;
  S4BlockParams<double> p;
  p.kernel = S4BlockKernel::diagonal;
  p.diagonal.push_back(std::move(row));
  p.activation = nn::Activation::gelu;
  const std::vector<double> b = values("output_linear.0.bias");
  p.output_linear = nn::Linear<double>(file.matrix<double>(prefix + "output_linear.0.weight"),  // (2H, H, 1) as 2H x H
                                       Eigen::Map<const VectorX<double>>(b.data(), 2 * H));
  p.final_activation = nn::Activation::glu;
  return p;
}

}  // namespace detail

template <class T>
S4BlockParams<double> S4Block<T>::load_params(const io::SafetensorsFile& file, const S4BlockConfig& config,
                                              const std::string& prefix) {
  const char* where = "S4Block::load";
  check(config.d_model >= 1, where, "config.d_model", ">= 1", ssm::detail::concat(config.d_model));
  const bool is_dplr = config.mode == S4BlockKernel::dplr;
  const Index H = config.d_model, M = config.d_state / 2, Cc = config.conv_channels(), K = config.kernel_rows();
  const Index S = config.ssm_rows(), R = config.rank;
  const nn::Activation activation = nn::activation_from_name(config.activation, "activation");
  const Index hidden = nn::activation_output_width(activation, Cc * H);
  std::optional<nn::Activation> final_act;
  if (config.final_act) final_act = nn::activation_from_name(*config.final_act, "final_act");

  if (config.module == S4BlockModule::s4d) return detail::load_s4d_params(file, config, prefix);
  // The expected keys and shapes; every key under the prefix must be one of them.
  std::vector<detail::StateDictKey> keys = {{"layer.D", {Cc, H}, false},
                           {"layer.kernel.inv_dt", {H, 1}, false},
                           {"layer.kernel.C", {K, H, M, 2}, false},
                           {"layer.kernel.B", {1, S, M, 2}, false},
                           {"layer.kernel.A_real", {S, M}, false},
                           {"layer.kernel.A_imag", {S, M}, false}};
  if (is_dplr) {
    keys.push_back({"layer.kernel.P", {R, S, M, 2}, false});
    keys.push_back({"layer.kernel.l_kernel", {}, true});
  }
  const Index out = final_act && *final_act == nn::Activation::glu ? 2 * H : H;
  if (final_act) {
    keys.push_back({"output_linear.0.weight", {out, hidden}, false});
    keys.push_back({"output_linear.0.bias", {out}, false});
  }
  detail::check_state_dict_keys(file, prefix, keys);

  auto values = [&](const char* key) { return file.values<double>(prefix + key); };
  const std::vector<double> D = values("layer.D"), inv_dt = values("layer.kernel.inv_dt"), C = values("layer.kernel.C"),
                            B = values("layer.kernel.B"), A_real = values("layer.kernel.A_real"),
                            A_imag = values("layer.kernel.A_imag");
  // The shared SSM, channel h reading row h mod S.
  MatrixXc<double> Lambda(H, M), Bc(H, M);
  VectorX<double> log_dt(H);
  for (Index h = 0; h < H; ++h) {
    const double v = inv_dt[std::size_t(h)];
    log_dt(h) = config.dt_transform == "exp" ? v : std::log(detail::s4_param_transform(v, config.dt_transform));
    const Index s = h % S;
    for (Index n = 0; n < M; ++n) {
      const std::size_t i = std::size_t(s * M + n);
      Lambda(h, n) = Complex<double>(-detail::s4_param_transform(A_real[i], config.real_transform),
                                     -detail::s4_param_transform(A_imag[i], config.imag_transform));
      Bc(h, n) = Complex<double>(B[2 * i], B[2 * i + 1]);
    }
  }
  auto row_C = [&](Index k) {
    MatrixXc<double> Ck(H, M);
    for (Index h = 0; h < H; ++h)
      for (Index n = 0; n < M; ++n) {
        const std::size_t i = std::size_t(((k * H + h) * M + n) * 2);
        Ck(h, n) = Complex<double>(C[i], C[i + 1]);
      }
    return Ck;
  };
  auto row_D = [&](Index k) {
    VectorX<double> Dk = VectorX<double>::Zero(H);
    if (k < Cc)
      for (Index h = 0; h < H; ++h) Dk(h) = D[std::size_t(k * H + h)];
    return Dk;
  };

  S4BlockParams<double> p;
  p.kernel = config.mode;
  p.bidirectional = config.bidirectional;
  p.activation = activation;
  if (is_dplr) {
    const std::vector<double> P = values("layer.kernel.P");
    const std::int64_t l_kernel = file.integers(prefix + "layer.kernel.l_kernel")[0];
    if (l_kernel < 0)
      throw error(ssm::detail::concat(where, ": ", file.source(), ": tensor '", prefix,
                                      "layer.kernel.l_kernel': expected >= 0, got ", l_kernel));
    S4Params<double> base;
    base.Lambda = Lambda;
    base.B = Bc;
    base.log_dt = log_dt;
    base.kernel_length = config.l_max;
    for (Index r = 0; r < R; ++r) {
      MatrixXc<double> Pr(H, M);
      for (Index h = 0; h < H; ++h)
        for (Index n = 0; n < M; ++n) {
          const std::size_t i = std::size_t(((r * S + h % S) * M + n) * 2);
          Pr(h, n) = Complex<double>(P[i], P[i + 1]);
        }
      base.P.push_back(std::move(Pr));
    }
    for (Index k = 0; k < K; ++k) {
      S4Params<double> row = base;
      row.C = row_C(k);  // C_tilde of this row
      row.C = S4<double>::c_from_c_tilde(row, Index(l_kernel));
      row.D = row_D(k);
      p.dplr.push_back(std::move(row));
    }
  } else {
    for (Index k = 0; k < K; ++k) {
      S4DParams<double> row;
      row.Lambda = Lambda;
      row.B = Bc;
      row.C = row_C(k);
      row.D = row_D(k);
      row.log_dt = log_dt;
      row.discretization = config.disc;
      row.kernel_length = config.l_max;
      p.diagonal.push_back(std::move(row));
    }
  }
  if (final_act) {
    const MatrixX<double> W = file.matrix<double>(prefix + "output_linear.0.weight");
    const std::vector<double> b = values("output_linear.0.bias");
    p.output_linear = nn::Linear<double>(W, Eigen::Map<const VectorX<double>>(b.data(), Index(b.size())));
    p.final_activation = *final_act;
  } else {
    p.final_activation = nn::Activation::identity;
  }
  return p;
}

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(S4Block)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
