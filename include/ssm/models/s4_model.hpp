#pragma once
/// \file s4_model.hpp
/// The sequence classifier of the official state-spaces/s4 `example.py` (`S4Model`, the sCIFAR / sMNIST
/// backbone built on models/s4/s4d.py's S4D), run from its state_dict at inference (every dropout off).
///
/// For an input x of L x d_input (rows are time steps), H = d_model:
///
///     h = x W_enc^T + b_enc                                 L x H        encoder (nn.Linear)
///     layer i = 0 .. n_layers - 1:
///         z = LayerNorm_i(h)   (prenorm)   or   z = h   (postnorm, the default)
///         h = S4D_i(z) + h                                  L x H        the residual add (dropout: identity)
///         h = LayerNorm_i(h)   (postnorm only)
///     pooled = (1/L) sum_t h[t, :]                          H            mean over time
///     logits = W_dec pooled + b_dec                         d_output     decoder (nn.Linear)
///
/// S4D_i is the minimal S4D of models/s4/s4d.py as an ssm::S4Block (ssm/layers/s4_block.hpp): a diagonal
/// ZOH kernel over all L taps with B = 1, A = -exp(log_A_real) + i A_imag, + D u, exact-erf GELU,
/// Conv1d(H, 2H, 1) and GLU over channels. LayerNorm_i is nn.LayerNorm(H) (eps 1e-5, biased variance).
/// With postnorm there is no final norm; with prenorm neither (the official model has none).
///
/// Two modes give the same logits:
/// - `forward(x)`: every layer by FFT convolution over the whole sequence;
/// - streaming: `initial_state()`, then `step(x[t], state)` for t = 0 .. L-1 (each layer by its S4Block's
///   recurrent step; the state keeps the running sum of h[t, :] for the mean), then `logits(state)`.
///   The S4D kernel is as long as the input (no l_max), so the recurrence equals the convolution for any L.
///
/// Checkpoint tensors (example.py's state_dict names and PyTorch shapes; F32, F16, BF16 or F64), M = d_state/2:
///   encoder.weight (H, d_input), encoder.bias (H)
///   s4_layers.{i}.D (H), s4_layers.{i}.kernel.C (H, M, 2), s4_layers.{i}.kernel.log_dt (H),
///   s4_layers.{i}.kernel.log_A_real (H, M), s4_layers.{i}.kernel.A_imag (H, M),
///   s4_layers.{i}.output_linear.0.weight (2H, H, 1), s4_layers.{i}.output_linear.0.bias (2H)
///   norms.{i}.weight (H), norms.{i}.bias (H)
///   decoder.weight (d_output, H), decoder.bias (d_output)
/// A missing, extra or misshaped tensor is an ssm::error naming it. example.py saves
/// {'model': state_dict, 'acc', 'epoch'} to ckpt.pth; write its 'model' entry as model.safetensors:
/// \code{.py}
///   import torch, safetensors.torch
///   sd = torch.load("checkpoint/ckpt.pth", map_location="cpu")["model"]
///   safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "model.safetensors")
/// \endcode
///
/// config.json: d_input, d_output, d_model, n_layers (integers >= 1, required), prenorm (default false),
/// layer_norm_eps (default 1e-5), and "s4d": {d_state (default 64), ...}. "class", if present, must be
/// "S4Model". Other keys (dropout, lr, dt_min, dt_max, descriptive strings) do not change inference and are
/// ignored.
///
/// Example:
/// \code
///   auto model = ssm::S4Model<float>::load("checkpoints/s4model");
///   ssm::VectorX<float> logits = model.forward(x);          // x: L x d_input
///   auto state = model.initial_state();
///   for (Eigen::Index t = 0; t < x.rows(); ++t) model.step(x.row(t).transpose(), state);   // allocation-free
///   ssm::VectorX<float> same = model.logits(state);
/// \endcode

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/layers/s4_block.hpp"
#include "ssm/nn/layer_norm.hpp"
#include "ssm/nn/linear.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

/// example.py's S4Model constructor arguments (config.json).
struct S4ModelConfig {
  Index d_input = 0;              ///< features per time step of the input
  Index d_output = 0;             ///< classes
  Index d_model = 0;              ///< H
  Index n_layers = 0;
  bool prenorm = false;           ///< LayerNorm before each S4D (true) or after each residual add (false)
  Index d_state = 64;             ///< N of every S4D ("s4d": {"d_state"}); M = N/2 complex modes
  double layer_norm_eps = 1e-5;   ///< nn.LayerNorm's default

  /// The S4Block config of every layer: models/s4/s4d.py's S4D(d_model, d_state).
  S4BlockConfig layer_config() const {
    return S4BlockConfig::parse(nlohmann::json{{"class", "S4D"}, {"d_model", d_model}, {"d_state", d_state}}.dump(),
                                "S4ModelConfig layer");
  }

  /// Parses the text of a config.json; `source` names it in messages.
  /// \throws ssm::error naming the field that is missing or wrong.
  static S4ModelConfig parse(const std::string& text, const std::string& source = "config.json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw error(detail::concat("S4ModelConfig: ", source, ": not valid JSON: ", e.what()));
    }
    auto fail = [&](const std::string& field, const std::string& expected, const std::string& got) {
      throw error(detail::concat("S4ModelConfig: ", source, ": ", field, ": expected ", expected, ", got ", got));
    };
    if (!j.is_object()) fail("config", "a JSON object", j.type_name());
    if (j.contains("class") && j.at("class") != "S4Model")
      fail("class", "\"S4Model\" (example.py's classifier)", j.at("class").dump());
    auto integer = [&](const nlohmann::json& obj, const std::string& prefix, const char* key, bool required,
                       Index fallback) -> Index {
      if (!obj.contains(key) || obj.at(key).is_null()) {
        if (required) fail(prefix + key, "an integer >= 1", "nothing (the field is missing)");
        return fallback;
      }
      const auto& v = obj.at(key);
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1) fail(prefix + key, "an integer >= 1", v.dump());
      return Index(v.get<std::int64_t>());
    };
    S4ModelConfig c;
    c.d_input = integer(j, "", "d_input", true, 0);
    c.d_output = integer(j, "", "d_output", true, 0);
    c.d_model = integer(j, "", "d_model", true, 0);
    c.n_layers = integer(j, "", "n_layers", true, 0);
    if (j.contains("prenorm")) {
      if (!j.at("prenorm").is_boolean()) fail("prenorm", "true or false", j.at("prenorm").dump());
      c.prenorm = j.at("prenorm").get<bool>();
    }
    if (j.contains("layer_norm_eps")) {
      const auto& v = j.at("layer_norm_eps");
      if (!v.is_number() || !(v.get<double>() > 0)) fail("layer_norm_eps", "a number > 0", v.dump());
      c.layer_norm_eps = v.get<double>();
    }
    if (j.contains("s4d")) {
      const auto& s4d = j.at("s4d");
      if (!s4d.is_object()) fail("s4d", "an object (the S4D layers' arguments)", s4d.dump());
      c.d_state = integer(s4d, "s4d.", "d_state", false, 64);
      if (c.d_state % 2 != 0) fail("s4d.d_state", "an even integer (conjugate pairs)", detail::concat(c.d_state));
      if (s4d.contains("transposed") && s4d.at("transposed") != true)
        fail("s4d.transposed", "true (example.py's layout)", s4d.at("transposed").dump());
    }
    return c;
  }

  /// Reads and parses a config.json file.
  static S4ModelConfig read(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw error(detail::concat("S4ModelConfig: ", path, ": cannot open the file"));
    return parse(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), path);
  }
};

/// example.py's S4Model over scalar T (float or double); see the file comment. Immutable after construction;
/// const member functions are safe to call from several threads.
template <class T>
class S4Model {
  static_assert(is_supported_scalar_v<T>, "S4Model: T must be float or double");

 public:
  using Scalar = T;

  /// One residual layer: its S4D block and its LayerNorm.
  struct Layer {
    S4Block<T> block;
    nn::LayerNorm<T> norm;
  };

  /// Streaming state of one sequence: every block's recurrent state, the running sum of the last residual
  /// stream (for the mean pooling) and scratch, so that `step` allocates nothing. Make it with
  /// `initial_state()`.
  struct State {
    std::vector<typename S4Block<T>::State> layers;
    VectorX<T> hidden;   ///< H: the residual stream h[t, :] after the last `step` (after the last layer)
    VectorX<T> normed;   ///< H: scratch, the prenorm input of a block
    VectorX<T> mixed;    ///< H: scratch, a block's output
    VectorX<T> sum;      ///< H: sum of hidden over the steps so far
    Index steps = 0;     ///< samples fed so far
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "S4Model";
    /// The arrays and the count that carry the stream, for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const std::string prefix = detail::concat("layers.", i, ".");
        v(prefix + "dplr.x", layers[i].dplr.x);
        v(prefix + "diagonal.x", layers[i].diagonal.x);
      }
      v("hidden", hidden);
      v("sum", sum);
      v("steps", steps);
    }

    /// Back to the start of a sequence, keeping the memory.
    void reset() {
      for (auto& l : layers) l.reset();
      sum.setZero();
      steps = 0;
    }
  };

  /// Assembles a model from its parts. \throws ssm::error on a part whose size does not fit.
  SSM_NOINLINE S4Model(S4ModelConfig config, nn::Linear<T> encoder, std::vector<Layer> layers, nn::Linear<T> decoder)
      : config_(std::move(config)), encoder_(std::move(encoder)), layers_(std::move(layers)), decoder_(std::move(decoder)) {
    const char* where = "S4Model";
    const Index H = config_.d_model;
    check(encoder_.in_features() == config_.d_input && encoder_.out_features() == H, where, "encoder",
          detail::concat("weight of ", H, " x ", config_.d_input, " (d_model x d_input)"),
          shape_string(encoder_.out_features(), encoder_.in_features()));
    check(Index(layers_.size()) == config_.n_layers, where, "layers", detail::concat(config_.n_layers, " (n_layers)"),
          detail::concat(layers_.size()));
    for (const Layer& l : layers_) {
      check(l.block.channels() == H && l.block.output_width() == H && !l.block.bidirectional(), where,
            "layers[i].block", detail::concat("a unidirectional block of ", H, " -> ", H, " features (d_model)"),
            detail::concat(l.block.channels(), " -> ", l.block.output_width()));
      check(l.norm.features() == H, where, "layers[i].norm", detail::concat(H, " features (d_model)"),
            detail::concat(l.norm.features()));
    }
    check(decoder_.in_features() == H && decoder_.out_features() == config_.d_output, where, "decoder",
          detail::concat("weight of ", config_.d_output, " x ", H, " (d_output x d_model)"),
          shape_string(decoder_.out_features(), decoder_.in_features()));
  }

  /// Loads `directory`/config.json and `directory`/model.safetensors.
  SSM_NOINLINE static S4Model load(const std::string& directory) {
    return load(io::SafetensorsFile::read(directory + "/model.safetensors"),
                S4ModelConfig::read(directory + "/config.json"));
  }

  /// Builds the model from a checkpoint and its config (tensor names in the file comment). Missing and
  /// misshaped tensors are reported first (the model's own, then each layer's), then any tensor the model
  /// does not have. \throws ssm::error naming the tensor.
  SSM_NOINLINE static S4Model load(const io::SafetensorsFile& file, const S4ModelConfig& config) {
    const Index H = config.d_model;
    std::set<std::string> own;  // the model's tensors outside its S4D layers
    auto tensor = [&](const std::string& name, const std::vector<Index>& shape) {
      own.insert(name);
      if (!file.contains(name))
        throw error(detail::concat("S4Model::load: ", file.source(), ": tensor '", name, "': missing (expected shape ",
                                   io::SafetensorsFile::shape_text(shape), ")"));
      const std::vector<Index>& got = file.info(name).shape;
      if (got != shape)
        throw error(detail::concat("S4Model::load: ", file.source(), ": tensor '", name, "': expected shape ",
                                   io::SafetensorsFile::shape_text(shape), ", got ", io::SafetensorsFile::shape_text(got)));
      return file.matrix<T>(name);  // (n) -> n x 1, (r, c) -> r x c; a non-float dtype is an error naming it
    };
    auto linear = [&](const std::string& name, Index out, Index in) {
      MatrixX<T> W = tensor(name + ".weight", {out, in});
      VectorX<T> b = tensor(name + ".bias", {out});
      return nn::Linear<T>(std::move(W), std::move(b));
    };
    nn::Linear<T> encoder = linear("encoder", H, config.d_input);
    const S4BlockConfig layer_config = config.layer_config();
    std::vector<Layer> layers;
    for (Index i = 0; i < config.n_layers; ++i) {
      const std::string norm = detail::concat("norms.", i);
      VectorX<T> w = tensor(norm + ".weight", {H});
      VectorX<T> b = tensor(norm + ".bias", {H});
      // The block checks every key under its prefix: missing, misshaped and extra ones.
      layers.push_back(Layer{S4Block<T>::load(file, layer_config, layer_prefix(i)),
                             nn::LayerNorm<T>(std::move(w), std::move(b), config.layer_norm_eps)});
    }
    nn::Linear<T> decoder = linear("decoder", config.d_output, H);
    for (const std::string& name : file.names()) {
      bool in_layer = false;
      for (Index i = 0; i < config.n_layers && !in_layer; ++i) in_layer = name.rfind(layer_prefix(i), 0) == 0;
      if (!in_layer && own.count(name) == 0)
        throw error(detail::concat("S4Model::load: ", file.source(), ": tensor '", name,
                                   "': not a parameter of this S4Model (n_layers ", config.n_layers,
                                   "); refusing to drop it silently"));
    }
    return S4Model(config, std::move(encoder), std::move(layers), std::move(decoder));
  }

  const S4ModelConfig& config() const { return config_; }
  const nn::Linear<T>& encoder() const { return encoder_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const nn::Linear<T>& decoder() const { return decoder_; }
  Index d_input() const { return config_.d_input; }
  Index d_output() const { return config_.d_output; }

  /// The logits (d_output) of x (L x d_input, L >= 1) by convolution. When `residuals` is given it receives
  /// the residual stream after each layer (n_layers matrices of L x H; after the layer's LayerNorm when
  /// postnorm), the official model's h between layers.
  SSM_NOINLINE VectorX<T> forward(const Eigen::Ref<const Sequence<T>>& x, std::vector<Sequence<T>>* residuals = nullptr) const {
    const char* where = "S4Model::forward";
    if (x.rows() < 1 || x.cols() != config_.d_input)
      check(false, where, "x", detail::concat("L x ", config_.d_input, " with L >= 1 (L x d_input)"),
            shape_string(x.rows(), x.cols()));
    if (residuals) residuals->clear();
    Sequence<T> h = encoder_.forward(x);
    for (const Layer& l : layers_) {
      h += l.block.forward(config_.prenorm ? l.norm.forward(h) : h);
      if (!config_.prenorm) l.norm.forward_into(h, h);
      if (residuals) residuals->push_back(h);
    }
    const VectorX<T> pooled = h.colwise().mean().transpose();
    return decoder_.forward(pooled.transpose()).transpose();
  }

  /// The zero state of one sequence, with all scratch allocated.
  State initial_state() const {
    State s;
    for (const Layer& l : layers_) s.layers.push_back(l.block.initial_state());
    const Index H = config_.d_model;
    s.hidden = VectorX<T>::Zero(H);
    s.normed = VectorX<T>::Zero(H);
    s.mixed = VectorX<T>::Zero(H);
    s.sum = VectorX<T>::Zero(H);
    return s;
  }

  /// Feeds one sample x[t, :] (d_input): runs it through every layer's recurrent step and adds the last
  /// residual stream h[t, :] (left in state.hidden) to the running sum. `sample` may be strided (a row of
  /// an L x d_input matrix, transposed). Allocates nothing.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& sample, State& state) const {
    const char* where = "S4Model::step";
    if (sample.size() != config_.d_input) check_size(sample, config_.d_input, where, "sample", "d_input");
    check_state(state, where);
    const Index H = config_.d_model;
    Eigen::Map<MatrixX<T>> h(state.hidden.data(), 1, H);
    Eigen::Map<MatrixX<T>> normed(state.normed.data(), 1, H);
    encoder_.forward_into(sample.transpose(), h);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Layer& l = layers_[i];
      if (config_.prenorm) l.norm.forward_into(h, normed);
      l.block.step(config_.prenorm ? state.normed : state.hidden, state.layers[i], state.mixed);
      state.hidden += state.mixed;
      if (!config_.prenorm) l.norm.forward_into(h, h);
    }
    state.sum += state.hidden;
    ++state.steps;
  }

  /// The logits (d_output) of the samples fed so far (at least one): the decoder on sum / steps. Equal to
  /// `forward` of the same samples.
  SSM_NOINLINE VectorX<T> logits(const State& state) const {
    const char* where = "S4Model::logits";
    check_state(state, where);
    check(state.steps >= 1, where, "state", "at least one sample fed by step()", "none");
    const VectorX<T> pooled = state.sum / T(state.steps);
    return decoder_.forward(pooled.transpose()).transpose();
  }

 private:
  static std::string layer_prefix(Index i) { return detail::concat("s4_layers.", i, "."); }

  void check_state(const State& s, const char* where) const {
    const Index H = config_.d_model;
    const bool ok = s.layers.size() == layers_.size() && s.hidden.size() == H && s.normed.size() == H &&
                    s.mixed.size() == H && s.sum.size() == H && s.steps >= 0;
    if (!ok) check(false, where, "state", "a state from initial_state() of this model", "another shape");
  }

  S4ModelConfig config_;
  nn::Linear<T> encoder_;
  std::vector<Layer> layers_;
  nn::Linear<T> decoder_;
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(S4Model)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
