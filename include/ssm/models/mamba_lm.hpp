#pragma once
/// \file mamba_lm.hpp
/// The Mamba language model (MambaLMHeadModel of state-spaces/mamba), loaded from a checkpoint
/// directory holding model.safetensors and config.json in the reference's names.
///
/// For token ids t_0 .. t_{L-1}, with E the embedding (vocab x d_model):
///
///     h_0 = E[t]                                      L x d_model
///     layer i:  residual = h + residual  (h alone in layer 0)
///               h = Mamba_i(RMSNorm_i(residual))
///     logits = RMSNorm_f(h + residual) W_head^T       L x vocab
///
/// RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, row by row, eps = config norm_epsilon (1e-5 by
/// default). W_head is the checkpoint's lm_head.weight when present, else E itself (tied).
///
/// Checkpoint tensors (PyTorch shapes; F32, F16 or BF16 (converted), or F64):
///   backbone.embedding.weight                 (vocab, d_model)
///   backbone.layers.{i}.norm.weight           (d_model)
///   backbone.layers.{i}.mixer.in_proj.weight  (2 d_inner, d_model)
///   backbone.layers.{i}.mixer.conv1d.weight   (d_inner, 1, d_conv)
///   backbone.layers.{i}.mixer.conv1d.bias     (d_inner)
///   backbone.layers.{i}.mixer.x_proj.weight   (dt_rank + 2 d_state, d_inner)
///   backbone.layers.{i}.mixer.dt_proj.weight  (d_inner, dt_rank)
///   backbone.layers.{i}.mixer.dt_proj.bias    (d_inner)
///   backbone.layers.{i}.mixer.A_log           (d_inner, d_state)
///   backbone.layers.{i}.mixer.D               (d_inner)
///   backbone.layers.{i}.mixer.out_proj.weight (d_model, d_inner)
///   backbone.norm_f.weight                    (d_model)
///   lm_head.weight                            (vocab, d_model), optional
/// config.json: d_model, n_layer, vocab_size, ssm_cfg {d_state, d_conv, expand, dt_rank ("auto" or
/// an integer)}, norm_epsilon, rms_norm (must be true), pad_vocab_size_multiple. The reference pads
/// vocab_size up to a multiple of pad_vocab_size_multiple; the embedding's row count is what counts.
///
/// Example:
/// \code
///   auto lm = ssm::MambaLM<float>::load("checkpoints/mamba-130m");
///   std::vector<std::int64_t> next = lm.generate({510, 3158, 8516}, 20);   // greedy
/// \endcode

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/layers/mamba.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

/// The model's sizes, as in the reference's config.json.
struct MambaLMConfig {
  Index d_model = 0;
  Index n_layer = 0;
  Index vocab_size = 0;               ///< As written in config.json (before padding).
  Index pad_vocab_size_multiple = 1;  ///< 1 when config.json has none.
  double norm_epsilon = 1e-5;
  MambaConfig block;                  ///< d_model, d_state, d_conv, expand, dt_rank of every layer.

  /// vocab_size rounded up to a multiple of pad_vocab_size_multiple (the reference's embedding size).
  Index padded_vocab_size() const {
    const Index m = pad_vocab_size_multiple;
    return (vocab_size + m - 1) / m * m;
  }

  /// Parses the text of a config.json; `source` names it in messages.
  /// \throws ssm::error naming the field that is missing or wrong.
  static MambaLMConfig parse(const std::string& text, const std::string& source = "config.json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw error(detail::concat("MambaLMConfig: ", source, ": not valid JSON: ", e.what()));
    }
    if (!j.is_object()) throw error(detail::concat("MambaLMConfig: ", source, ": expected a JSON object"));
    auto fail = [&](const std::string& field, const std::string& expected, const std::string& got) {
      throw error(detail::concat("MambaLMConfig: ", source, ": ", field, ": expected ", expected, ", got ", got));
    };
    auto integer = [&](const nlohmann::json& obj, const std::string& prefix, const char* key, bool required,
                       Index fallback, Index minimum) -> Index {
      const std::string field = prefix + key;
      if (!obj.contains(key)) {
        if (required) fail(field, "an integer", "nothing (the field is missing)");
        return fallback;
      }
      const auto& v = obj.at(key);
      if (!v.is_number_integer()) fail(field, "an integer", v.dump());
      const auto n = v.get<std::int64_t>();
      if (n < minimum) fail(field, detail::concat("an integer >= ", minimum), v.dump());
      return Index(n);
    };
    MambaLMConfig c;
    c.d_model = integer(j, "", "d_model", true, 0, 1);
    c.n_layer = integer(j, "", "n_layer", true, 0, 1);
    c.vocab_size = integer(j, "", "vocab_size", true, 0, 1);
    c.pad_vocab_size_multiple = integer(j, "", "pad_vocab_size_multiple", false, 1, 1);
    if (j.contains("norm_epsilon")) {
      const auto& v = j.at("norm_epsilon");
      if (!v.is_number() || !(v.get<double>() > 0)) fail("norm_epsilon", "a number > 0", v.dump());
      c.norm_epsilon = v.get<double>();
    }
    if (j.contains("rms_norm") && !(j.at("rms_norm").is_boolean() && j.at("rms_norm").get<bool>()))
      fail("rms_norm", "true (LayerNorm models are not supported)", j.at("rms_norm").dump());
    c.block.d_model = c.d_model;
    nlohmann::json ssm_cfg = nlohmann::json::object();
    if (j.contains("ssm_cfg")) {
      ssm_cfg = j.at("ssm_cfg");
      if (!ssm_cfg.is_object()) fail("ssm_cfg", "an object", ssm_cfg.dump());
    }
    if (ssm_cfg.contains("layer") && ssm_cfg.at("layer") != "Mamba1")
      fail("ssm_cfg.layer", "\"Mamba1\" (the only block implemented)", ssm_cfg.at("layer").dump());
    c.block.d_state = integer(ssm_cfg, "ssm_cfg.", "d_state", false, 16, 1);
    c.block.d_conv = integer(ssm_cfg, "ssm_cfg.", "d_conv", false, 4, 1);
    c.block.expand = integer(ssm_cfg, "ssm_cfg.", "expand", false, 2, 1);
    c.block.dt_rank = 0;
    if (ssm_cfg.contains("dt_rank") && !(ssm_cfg.at("dt_rank").is_string() && ssm_cfg.at("dt_rank") == "auto"))
      c.block.dt_rank = integer(ssm_cfg, "ssm_cfg.", "dt_rank", true, 0, 1);
    return c;
  }
};

/// The Mamba language model: embedding, residual Mamba blocks with RMSNorm, final norm, LM head.
template <class Scalar>
class MambaLM {
  static_assert(is_supported_scalar_v<Scalar>, "MambaLM: Scalar must be float or double");

 public:
  using Token = std::int64_t;

  /// One residual layer: its RMSNorm weight (d_model) and its mixer.
  struct Layer {
    VectorX<Scalar> norm_weight;
    Mamba<Scalar> mixer;
  };

  /// Streaming state of the whole model (every mixer's state plus scratch), so that `step`
  /// allocates nothing. One per stream; make it with `make_state()`.
  struct State {
    std::vector<typename Mamba<Scalar>::State> layers;
    VectorX<Scalar> hidden, residual, normed;  ///< Scratch, d_model.
    VectorX<Scalar> logits;                    ///< The last step's logits, vocab.
  };

  /// Assembles a model from its parts. lm_head empty means tied to the embedding.
  /// \throws ssm::error on a shape that does not fit.
  MambaLM(MambaLMConfig config, MatrixX<Scalar> embedding, std::vector<Layer> layers, VectorX<Scalar> norm_f,
          MatrixX<Scalar> lm_head = {})
      : config_(std::move(config)),
        embedding_(std::move(embedding)),
        layers_(std::move(layers)),
        norm_f_(std::move(norm_f)),
        lm_head_(std::move(lm_head)) {
    constexpr const char* where = "MambaLM";
    const Index dm = config_.d_model;
    check(embedding_.rows() >= 1 && embedding_.cols() == dm, where, "embedding",
          detail::concat("vocab x ", dm, " (vocab x d_model)"), shape_string(embedding_.rows(), embedding_.cols()));
    check(Index(layers_.size()) == config_.n_layer, where, "layers", detail::concat(config_.n_layer, " (n_layer)"),
          detail::concat(layers_.size()));
    for (const Layer& l : layers_) {
      check_size(l.norm_weight, dm, where, "layers[i].norm_weight", "d_model");
      check(l.mixer.config().d_model == dm, where, "layers[i].mixer", detail::concat("d_model ", dm),
            detail::concat("d_model ", l.mixer.config().d_model));
    }
    check_size(norm_f_, dm, where, "norm_f", "d_model");
    if (lm_head_.size() != 0) check_shape(lm_head_, embedding_.rows(), dm, where, "lm_head", "vocab x d_model");
  }

  /// Loads `directory`/config.json and `directory`/model.safetensors.
  /// \throws ssm::error naming the file, the field or the tensor that is missing or misshaped.
  static MambaLM load(const std::string& directory) {
    const std::string config_path = directory + "/config.json";
    std::ifstream in(config_path);
    if (!in) throw error(detail::concat("MambaLM::load: ", config_path, ": cannot open the file"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const MambaLMConfig config = MambaLMConfig::parse(text, config_path);
    const io::SafetensorsFile file = io::SafetensorsFile::read(directory + "/model.safetensors");
    return from_safetensors(config, file);
  }

  /// Builds the model from a parsed config and checkpoint (the names listed in the file comment).
  static MambaLM from_safetensors(const MambaLMConfig& config, const io::SafetensorsFile& file) {
    const MambaConfig& b = config.block;
    const Index dm = config.d_model, di = b.d_inner(), N = b.d_state, K = b.d_conv, R = b.rank();
    const std::string emb_name = "backbone.embedding.weight";
    const auto& emb_info = file.info(emb_name);
    const Index vocab = emb_info.shape.size() == 2 ? emb_info.shape[0] : -1;
    if (vocab < 1) file.matrix<Scalar>(emb_name, {config.padded_vocab_size(), dm});  // throws naming it
    MatrixX<Scalar> embedding = file.matrix<Scalar>(emb_name, {vocab, dm});
    std::vector<Layer> layers;
    layers.reserve(std::size_t(config.n_layer));
    for (Index i = 0; i < config.n_layer; ++i) {
      const std::string pre = detail::concat("backbone.layers.", i, ".");
      const std::string mix = pre + "mixer.";
      MambaParams<Scalar> p;
      p.config = b;
      p.in_proj_weight = file.matrix<Scalar>(mix + "in_proj.weight", {2 * di, dm});
      p.conv1d_weight = file.matrix<Scalar>(mix + "conv1d.weight", {di, 1, K});
      p.conv1d_bias = file.matrix<Scalar>(mix + "conv1d.bias", {di});
      p.x_proj_weight = file.matrix<Scalar>(mix + "x_proj.weight", {R + 2 * N, di});
      p.dt_proj_weight = file.matrix<Scalar>(mix + "dt_proj.weight", {di, R});
      p.dt_proj_bias = file.matrix<Scalar>(mix + "dt_proj.bias", {di});
      p.A_log = file.matrix<Scalar>(mix + "A_log", {di, N});
      p.D = file.matrix<Scalar>(mix + "D", {di});
      p.out_proj_weight = file.matrix<Scalar>(mix + "out_proj.weight", {dm, di});
      VectorX<Scalar> norm = file.matrix<Scalar>(pre + "norm.weight", {dm});
      layers.push_back(Layer{std::move(norm), Mamba<Scalar>(std::move(p))});
    }
    VectorX<Scalar> norm_f = file.matrix<Scalar>("backbone.norm_f.weight", {dm});
    MatrixX<Scalar> head;
    if (file.contains("lm_head.weight")) head = file.matrix<Scalar>("lm_head.weight", {vocab, dm});
    return MambaLM(config, std::move(embedding), std::move(layers), std::move(norm_f), std::move(head));
  }

  const MambaLMConfig& config() const { return config_; }
  /// Rows of the embedding: the number of logits per position.
  Index vocab_size() const { return embedding_.rows(); }
  const MatrixX<Scalar>& embedding() const { return embedding_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const VectorX<Scalar>& norm_f() const { return norm_f_; }
  /// The LM head weight (vocab x d_model): lm_head.weight, or the embedding when tied.
  const MatrixX<Scalar>& lm_head() const { return lm_head_.size() ? lm_head_ : embedding_; }
  /// True when the head is the embedding.
  bool tied() const { return lm_head_.size() == 0; }

  /// A zero state with all scratch allocated.
  State make_state() const {
    State s;
    for (const Layer& l : layers_) s.layers.push_back(l.mixer.make_state());
    s.hidden.resize(config_.d_model);
    s.residual.resize(config_.d_model);
    s.normed.resize(config_.d_model);
    s.logits.resize(vocab_size());
    return s;
  }

  /// Logits (L x vocab) of `tokens` from zero states.
  MatrixX<Scalar> forward(const std::vector<Token>& tokens) const {
    State s = make_state();
    return forward(tokens, s);
  }

  /// Logits (L x vocab) of `tokens` starting from `state`, left as the state after the last token
  /// (chunked prefill continues exactly; `step` continues from it). `state.logits` is set to the
  /// last row when tokens is not empty.
  MatrixX<Scalar> forward(const std::vector<Token>& tokens, State& state) const {
    check_tokens(tokens, "MambaLM::forward");
    check_state(state, "MambaLM::forward");
    const Index L = Index(tokens.size()), dm = config_.d_model;
    MatrixX<Scalar> h(L, dm), residual(L, dm);
    for (Index t = 0; t < L; ++t) h.row(t) = embedding_.row(tokens[std::size_t(t)]);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (i == 0) residual = h;
      else residual += h;
      h = layers_[i].mixer.forward(rms_norm_rows(residual, layers_[i].norm_weight), state.layers[i]);
    }
    residual += h;
    MatrixX<Scalar> logits = rms_norm_rows(residual, norm_f_) * lm_head().transpose();
    if (L > 0) state.logits = logits.row(L - 1).transpose();
    return logits;
  }

  /// One token: advances `state` and returns the next-token logits (vocab), a reference to
  /// `state.logits`. Allocates nothing.
  const VectorX<Scalar>& step(Token token, State& state) const {
    check_token(token, "MambaLM::step");
    check_state(state, "MambaLM::step");
    state.hidden = embedding_.row(token).transpose();
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (i == 0) state.residual = state.hidden;
      else state.residual += state.hidden;
      rms_norm(state.residual, layers_[i].norm_weight, state.normed);
      state.hidden = layers_[i].mixer.step(state.normed, state.layers[i]);
    }
    state.residual += state.hidden;
    rms_norm(state.residual, norm_f_, state.normed);
    state.logits.noalias() = lm_head() * state.normed;
    return state.logits;
  }

  /// Greedy decoding: the prompt is run through `forward` (one pass), then `n_new` tokens are each
  /// the argmax of the logits (the first on a tie) and fed back with `step`. Returns the new tokens.
  std::vector<Token> generate(const std::vector<Token>& prompt, Index n_new) const {
    check(!prompt.empty(), "MambaLM::generate", "prompt", "at least one token", "none");
    check(n_new >= 0, "MambaLM::generate", "n_new", "a count >= 0", detail::concat(n_new));
    State state = make_state();
    forward(prompt, state);
    std::vector<Token> out;
    out.reserve(std::size_t(n_new));
    for (Index k = 0; k < n_new; ++k) {
      Index best = 0;
      state.logits.maxCoeff(&best);
      out.push_back(Token(best));
      if (k + 1 < n_new) step(Token(best), state);
    }
    return out;
  }

 private:
  /// y = x / sqrt(mean(x^2) + eps) * weight for one vector (no allocation).
  void rms_norm(const VectorX<Scalar>& x, const VectorX<Scalar>& weight, VectorX<Scalar>& y) const {
    const Scalar rstd = Scalar(1) / std::sqrt(x.squaredNorm() / Scalar(x.size()) + Scalar(config_.norm_epsilon));
    y = (x.array() * rstd * weight.array()).matrix();
  }

  /// RMSNorm of every row of x (L x d_model).
  MatrixX<Scalar> rms_norm_rows(const MatrixX<Scalar>& x, const VectorX<Scalar>& weight) const {
    const VectorX<Scalar> rstd =
        ((x.rowwise().squaredNorm() / Scalar(x.cols())).array() + Scalar(config_.norm_epsilon)).rsqrt().matrix();
    return rstd.asDiagonal() * x * weight.asDiagonal();
  }

  void check_token(Token token, const char* where) const {
    if (token < 0 || token >= Token(vocab_size()))
      check(false, where, "token", detail::concat("an id in [0, ", vocab_size(), ")"), detail::concat(token));
  }

  void check_tokens(const std::vector<Token>& tokens, const char* where) const {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= Token(vocab_size()))
        check(false, where, "tokens", detail::concat("ids in [0, ", vocab_size(), ")"),
              detail::concat(tokens[i], " at position ", i));
  }

  void check_state(const State& s, const char* where) const {
    const bool ok = s.layers.size() == layers_.size() && s.hidden.size() == config_.d_model &&
                    s.residual.size() == config_.d_model && s.normed.size() == config_.d_model &&
                    s.logits.size() == vocab_size();
    if (!ok) check(false, where, "state", "a state from make_state() of this model", "another shape");
  }

  MambaLMConfig config_;
  MatrixX<Scalar> embedding_;
  std::vector<Layer> layers_;
  VectorX<Scalar> norm_f_;
  MatrixX<Scalar> lm_head_;  ///< Empty when tied.
};

}  // namespace ssm
