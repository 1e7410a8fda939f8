#pragma once
/// \file mamba_lm.hpp
/// The Mamba language model (MambaLMHeadModel of state-spaces/mamba), loaded from a checkpoint
/// directory holding config.json and model.safetensors (or shards named by model.safetensors.index.json,
/// io/checkpoint.hpp), in the reference's names or in those of Hugging Face transformers. One class serves
/// both mixers: Mamba-1 (mamba.hpp) and Mamba-2 (mamba2.hpp), chosen by config.json's ssm_cfg.layer.
///
/// Hugging Face layouts (detected from config.json's model_type or architectures; the keys read are listed
/// at `MambaLMConfig::parse_hugging_face`):
///   MambaForCausalLM ("mamba"), FalconMambaForCausalLM ("falcon_mamba"): the Mamba-1 tensors below, the
///     embedding named backbone.embeddings.weight with exactly vocab_size rows; every RMSNorm with
///     layer_norm_epsilon. Falcon-Mamba's mixer also RMS-normalises dt, B and C after x_proj, without
///     weights, with mixer_rms_eps (MambaConfig::dt_bc_norm).
///   Mamba2ForCausalLM ("mamba2"): the Mamba-2 tensors below, same embedding name; its gated norm runs over
///     all d_ssm channels at once (Mamba2Config::norm_groups = 1), not per group as the reference's, with
///     layer_norm_epsilon.
///   With tie_word_embeddings (transformers' default for Mamba and Falcon-Mamba, not for Mamba-2) the head
///   is the embedding, and a stored lm_head.weight is not read.
///
/// For token ids t_0 .. t_{L-1}, with E the embedding (vocab x d_model):
///
///     h_0 = E[t]                                      L x d_model
///     layer i:  residual = h + residual  (h alone in layer 0)
///               h = Mixer_i(RMSNorm_i(residual))        Mamba or Mamba2
///     logits = RMSNorm_f(h + residual) W_head^T       L x vocab
///
/// RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, row by row, eps = 1e-5. The reference's
/// MambaLMHeadModel always builds its norms with eps 1e-5 (its MambaConfig has no such field);
/// as an ssm extension a "norm_epsilon" in config.json is read and used instead. W_head is the
/// checkpoint's lm_head.weight when present, else E itself (tied).
///
/// Checkpoint tensors (PyTorch shapes; F32, F16 or BF16 (converted), or F64):
///   backbone.embedding.weight                 (vocab, d_model), vocab = padded vocab_size
///   backbone.layers.{i}.norm.weight           (d_model)
/// with ssm_cfg.layer "Mamba1" (the default):
///   backbone.layers.{i}.mixer.in_proj.weight  (2 d_inner, d_model)
///   backbone.layers.{i}.mixer.in_proj.bias    (2 d_inner), only with ssm_cfg.bias = true
///   backbone.layers.{i}.mixer.conv1d.weight   (d_inner, 1, d_conv)
///   backbone.layers.{i}.mixer.conv1d.bias     (d_inner), absent with ssm_cfg.conv_bias = false
///   backbone.layers.{i}.mixer.x_proj.weight   (dt_rank + 2 d_state, d_inner)
///   backbone.layers.{i}.mixer.dt_proj.weight  (d_inner, dt_rank)
///   backbone.layers.{i}.mixer.dt_proj.bias    (d_inner)
///   backbone.layers.{i}.mixer.A_log           (d_inner, d_state)
///   backbone.layers.{i}.mixer.D               (d_inner)
///   backbone.layers.{i}.mixer.out_proj.weight (d_model, d_inner)
///   backbone.layers.{i}.mixer.out_proj.bias   (d_model), only with ssm_cfg.bias = true
/// with ssm_cfg.layer "Mamba2" (sizes as in mamba2.hpp: H heads, d_in_proj, conv_dim, d_ssm, d_inner):
///   backbone.layers.{i}.mixer.in_proj.weight  (d_in_proj, d_model), in_proj.bias (d_in_proj) with bias
///   backbone.layers.{i}.mixer.conv1d.weight   (conv_dim, 1, d_conv), conv1d.bias (conv_dim) with conv_bias
///   backbone.layers.{i}.mixer.dt_bias         (H)
///   backbone.layers.{i}.mixer.A_log           (H)
///   backbone.layers.{i}.mixer.D               (H), or (d_ssm) with D_has_hdim
///   backbone.layers.{i}.mixer.norm.weight     (d_ssm), only with rmsnorm (the default)
///   backbone.layers.{i}.mixer.out_proj.weight (d_model, d_inner), out_proj.bias (d_model) with bias
/// and for both:
///   backbone.norm_f.weight                    (d_model)
///   lm_head.weight                            (vocab, d_model), optional (required with tie_embeddings false)
/// Any other tensor in the file is an error naming it: a checkpoint of another architecture
/// (a GatedMLP per block, attention layers, ...) is refused rather than run without its weights.
///
/// config.json, as the reference's MambaConfig (mamba_ssm/models/config_mamba.py):
///   d_model, n_layer, vocab_size (required); pad_vocab_size_multiple (default 8: vocab_size is
///   rounded up to a multiple of it, and the embedding must have exactly that many rows);
///   ssm_cfg: the mixer's constructor arguments. layer "Mamba1" (the default when absent):
///     {d_state 16, d_conv 4, expand 2 (may be fractional: d_inner = int(expand d_model)),
///     dt_rank "auto" or an integer, conv_bias true, bias false; the initialisation options dt_min,
///     dt_max, dt_init, dt_scale, dt_init_floor and use_fast_path are accepted and ignored}.
///   layer "Mamba2": {d_state 128, d_conv 4, expand 2 (an integer), headdim 64, d_ssm null (= d_inner)
///     or an integer, ngroups 1, D_has_hdim false, rmsnorm true, norm_before_gate false,
///     dt_limit [0, inf) as two numbers, bias false, conv_bias true; conv_init, A_init_range, dt_min,
///     dt_max, dt_init_floor, use_mem_eff_path and chunk_size are accepted and ignored (chunk_size is
///     the reference's GPU kernel tile; here Mamba2Config::chunk_size keeps ssm's measured default,
///     which changes only rounding)}.
///   Any other key is an error, as it is a TypeError in the reference. rms_norm (must be true);
///   tie_embeddings (default true); residual_in_fp32 and fused_add_norm (no effect on the result).
///   Refused with an error naming the field, because the network would differ: d_intermediate > 0
///   (a GatedMLP per block), a non-empty attn_layer_idx or attn_cfg (attention layers), ssm_cfg.layer
///   other than "Mamba1" or "Mamba2".
///
/// Only safetensors is read. For an official checkpoint that ships pytorch_model.bin (e.g.
/// state-spaces/mamba-130m), write model.safetensors beside it once, in Python:
/// \code{.py}
///   import torch, safetensors.torch
///   sd = torch.load("pytorch_model.bin", map_location="cpu"); sd.pop("lm_head.weight", None)  # tied: a copy of the embedding
///   safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "model.safetensors")
/// \endcode
/// (save_file refuses tensors that share memory, which the tied lm_head.weight does; dropping it
/// loses nothing, the model then ties the head to the embedding. Keep it when tie_embeddings is false.)
///
/// Example:
/// \code
///   auto lm = ssm::MambaLM<float>::load("checkpoints/mamba-130m");
///   std::vector<std::int64_t> next = lm.generate({510, 3158, 8516}, 20);   // greedy
///   ssm::GenerationOptions sample;  sample.sampling = {0.8, 40, 0.95, 7};    // temperature, top-k, top-p, seed
///   lm.generate(prompt, 20, sample, [](std::int64_t t) { std::cout << t << ' '; return true; });
///   // or by hand, in the words of every layer (core/layer.hpp):
///   auto state = lm.initial_state();
///   ssm::MatrixX<float> prompt_logits = lm.forward({510, 3158, 8516}, state);   // L x vocab
///   ssm::VectorX<float> logits(lm.vocab_size());
///   lm.step(next[0], state, logits);                                            // allocation-free
///   // a prompt whose last logits are all you need: no head product on the other positions
///   auto fresh = lm.initial_state();
///   ssm::VectorX<float> last = lm.prefill({510, 3158, 8516}, fresh);             // vocab
/// \endcode

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/core/weight_matrix.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/models/sampling.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace ssm {

/// The mixer of every layer of a language model (config.json's ssm_cfg.layer).
enum class MambaMixer { mamba1, mamba2 };

/// The convention a checkpoint's config.json and tensor names follow. The model built is the same.
enum class CheckpointLayout {
  reference,        ///< state-spaces/mamba's MambaLMHeadModel: d_model, n_layer, ssm_cfg; backbone.embedding.weight.
  hf_mamba,         ///< Hugging Face transformers' MambaForCausalLM (model_type "mamba"): hidden_size, ...; backbone.embeddings.weight.
  hf_mamba2,        ///< Mamba2ForCausalLM (model_type "mamba2").
  hf_falcon_mamba,  ///< FalconMambaForCausalLM (model_type "falcon_mamba"): a Mamba-1 mixer with norms on dt, B and C.
};

namespace detail {

/// JSON text with Python's bare Infinity, -Infinity and NaN (which json.dump writes for float("inf"), e.g. a
/// dt_limit of (0, inf)) turned into the strings "Infinity", "-Infinity" and "NaN", so that a strict JSON
/// parser reads it; the readers that allow an infinite value accept those strings. Text inside strings is
/// left alone.
inline std::string quote_python_non_finite(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      const std::size_t n = std::char_traits<char>::length(word);
      if (text.compare(i, n, word) == 0) {
        out += '"';
        out += word;
        out += '"';
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return out;
}

}  // namespace detail

/// The model's sizes, as in the reference's config.json.
struct MambaLMConfig {
  Index d_model = 0;
  Index n_layer = 0;
  Index vocab_size = 0;               ///< As written in config.json (before padding).
  Index pad_vocab_size_multiple = 8;  ///< The reference MambaConfig's default when config.json has none.
  /// eps of every RMSNorm. The reference always uses 1e-5; reading "norm_epsilon" from config.json
  /// is an ssm extension.
  double norm_epsilon = 1e-5;
  /// The LM head is the embedding unless the checkpoint has an lm_head.weight of its own; false
  /// makes lm_head.weight required.
  bool tie_embeddings = true;
  MambaMixer mixer = MambaMixer::mamba1;  ///< Which of the two blocks below every layer is.
  CheckpointLayout layout = CheckpointLayout::reference;  ///< The config.json and tensor names it was read from.
  MambaConfig block;                  ///< With mixer mamba1: d_model, d_state, d_conv, expand, dt_rank, conv_bias, bias.
  Mamba2Config block2;                ///< With mixer mamba2: the Mamba-2 mixer's sizes and options.

  /// vocab_size rounded up to a multiple of pad_vocab_size_multiple (the reference's embedding size).
  Index padded_vocab_size() const {
    const Index m = pad_vocab_size_multiple;
    return (vocab_size + m - 1) / m * m;
  }

  /// The embedding's tensor name in this layout's checkpoints.
  std::string embedding_name() const {
    return layout == CheckpointLayout::reference ? "backbone.embedding.weight" : "backbone.embeddings.weight";
  }

  /// Parses the text of a config.json; `source` names it in messages. The layout is detected: a
  /// model_type of "mamba", "mamba2" or "falcon_mamba" (or such an entry in "architectures") is a Hugging
  /// Face config (see `parse_hugging_face`); a config without a model_type is the reference's.
  /// \throws ssm::error naming the field that is missing or wrong.
  static MambaLMConfig parse(const std::string& text, const std::string& source = "config.json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(detail::quote_python_non_finite(text));
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
    auto boolean = [&](const nlohmann::json& obj, const std::string& prefix, const char* key, bool fallback) {
      if (!obj.contains(key)) return fallback;
      const auto& v = obj.at(key);
      if (!v.is_boolean()) fail(prefix + key, "true or false", v.dump());
      return v.get<bool>();
    };
    // A number; the strings "Infinity" / "-Infinity" (Python's inf, see quote_python_non_finite) when allowed.
    auto number = [&](const nlohmann::json& v, const std::string& field, bool infinite_ok) -> double {
      if (v.is_number()) return v.get<double>();
      if (infinite_ok && v.is_string() && (v == "Infinity" || v == "-Infinity"))
        return v == "Infinity" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
      fail(field, infinite_ok ? "a number (or Infinity)" : "a number", v.dump());
      return 0;
    };
    // A number > 0 (an epsilon).
    auto positive = [&](const nlohmann::json& v, const std::string& field) -> double {
      if (!v.is_number() || !(v.get<double>() > 0)) fail(field, "a number > 0", v.dump());
      return v.get<double>();
    };
    const CheckpointLayout layout = detect_layout(j, fail);
    if (layout != CheckpointLayout::reference)
      return parse_hugging_face(j, layout, fail, integer, boolean, number, positive);
    MambaLMConfig c;
    c.d_model = integer(j, "", "d_model", true, 0, 1);
    c.n_layer = integer(j, "", "n_layer", true, 0, 1);
    c.vocab_size = integer(j, "", "vocab_size", true, 0, 1);
    c.pad_vocab_size_multiple = integer(j, "", "pad_vocab_size_multiple", false, 8, 1);
    if (j.contains("norm_epsilon")) c.norm_epsilon = positive(j.at("norm_epsilon"), "norm_epsilon");
    if (!boolean(j, "", "rms_norm", true)) fail("rms_norm", "true (LayerNorm models are not supported)", "false");
    c.tie_embeddings = boolean(j, "", "tie_embeddings", true);
    boolean(j, "", "residual_in_fp32", true);  // checked for type only: no effect on the result
    boolean(j, "", "fused_add_norm", true);
    if (integer(j, "", "d_intermediate", false, 0, 0) > 0)
      fail("d_intermediate", "0 (a GatedMLP after each mixer is not supported)", j.at("d_intermediate").dump());
    for (const char* key : {"attn_layer_idx", "attn_cfg"}) {
      if (!j.contains(key) || j.at(key).is_null()) continue;
      const auto& v = j.at(key);
      if (!(v.is_array() || v.is_object()) || !v.empty())
        fail(key, "empty or absent (attention layers are not supported)", v.dump());
    }
    nlohmann::json ssm_cfg = nlohmann::json::object();
    if (j.contains("ssm_cfg")) {
      ssm_cfg = j.at("ssm_cfg");
      if (!ssm_cfg.is_object()) fail("ssm_cfg", "an object", ssm_cfg.dump());
    }
    if (ssm_cfg.contains("layer") && ssm_cfg.at("layer") != "Mamba1" && ssm_cfg.at("layer") != "Mamba2")
      fail("ssm_cfg.layer", "\"Mamba1\" or \"Mamba2\" (the blocks implemented)", ssm_cfg.at("layer").dump());
    c.mixer = ssm_cfg.contains("layer") && ssm_cfg.at("layer") == "Mamba2" ? MambaMixer::mamba2 : MambaMixer::mamba1;
    // Every key is an argument of the reference's Mamba(...) / Mamba2(...): unknown ones would be a TypeError there.
    static const std::set<std::string> known1 = {"layer",     "d_state", "d_conv",        "expand",
                                                 "dt_rank",   "conv_bias", "bias",        "dt_min",
                                                 "dt_max",    "dt_init", "dt_scale",      "dt_init_floor",
                                                 "use_fast_path"};
    static const std::set<std::string> known2 = {
        "layer",    "d_state",  "d_conv",     "conv_init", "expand",           "headdim",   "d_ssm",
        "ngroups",  "A_init_range", "D_has_hdim", "rmsnorm", "norm_before_gate", "dt_min", "dt_max",
        "dt_init_floor", "dt_limit", "bias",   "conv_bias", "chunk_size",       "use_mem_eff_path"};
    const bool v2 = c.mixer == MambaMixer::mamba2;
    for (const auto& item : ssm_cfg.items())
      if (!(v2 ? known2 : known1).count(item.key()))
        fail("ssm_cfg." + item.key(),
             v2 ? "no such option (the reference's Mamba2 takes d_state, d_conv, expand, headdim, d_ssm, ngroups, "
                  "D_has_hdim, rmsnorm, norm_before_gate, dt_limit, bias, conv_bias and initialisation options)"
                : "no such option (the reference's Mamba takes d_state, d_conv, expand, dt_rank, conv_bias, bias and "
                  "initialisation options)",
             item.value().dump());
    if (v2) {
      Mamba2Config& b = c.block2;
      b.d_model = c.d_model;
      b.d_state = integer(ssm_cfg, "ssm_cfg.", "d_state", false, 128, 1);
      b.d_conv = integer(ssm_cfg, "ssm_cfg.", "d_conv", false, 4, 1);
      b.expand = integer(ssm_cfg, "ssm_cfg.", "expand", false, 2, 1);
      b.headdim = integer(ssm_cfg, "ssm_cfg.", "headdim", false, 64, 1);
      b.d_ssm = ssm_cfg.contains("d_ssm") && !ssm_cfg.at("d_ssm").is_null()
                    ? integer(ssm_cfg, "ssm_cfg.", "d_ssm", true, 0, 1)
                    : 0;
      b.ngroups = integer(ssm_cfg, "ssm_cfg.", "ngroups", false, 1, 1);
      b.D_has_hdim = boolean(ssm_cfg, "ssm_cfg.", "D_has_hdim", false);
      b.rmsnorm = boolean(ssm_cfg, "ssm_cfg.", "rmsnorm", true);
      b.norm_before_gate = boolean(ssm_cfg, "ssm_cfg.", "norm_before_gate", false);
      b.bias = boolean(ssm_cfg, "ssm_cfg.", "bias", false);
      b.conv_bias = boolean(ssm_cfg, "ssm_cfg.", "conv_bias", true);
      if (ssm_cfg.contains("dt_limit")) {
        read_dt_limit(ssm_cfg.at("dt_limit"), "ssm_cfg.dt_limit", b, fail, number);
      }
      // The mixer's own checks (nheads, groups, d_ssm) run when it is built; run them here already so
      // that a bad config.json is named before any tensor is read.
      const Index ds = b.ssm_channels();
      if (b.d_ssm > b.d_inner())
        fail("ssm_cfg.d_ssm", detail::concat("at most d_inner = expand d_model = ", b.d_inner()), detail::concat(b.d_ssm));
      if (ds % b.headdim != 0)
        fail("ssm_cfg.headdim", detail::concat("a divisor of d_ssm = ", ds), detail::concat(b.headdim));
      if (b.nheads() % b.ngroups != 0)
        fail("ssm_cfg.ngroups", detail::concat("a divisor of nheads = d_ssm / headdim = ", b.nheads()),
             detail::concat(b.ngroups));
      return c;
    }
    c.block.d_model = c.d_model;
    c.block.d_state = integer(ssm_cfg, "ssm_cfg.", "d_state", false, 16, 1);
    c.block.d_conv = integer(ssm_cfg, "ssm_cfg.", "d_conv", false, 4, 1);
    if (ssm_cfg.contains("expand")) {
      const auto& v = ssm_cfg.at("expand");
      const double inner = v.is_number() ? v.get<double>() * double(c.d_model) : 0.0;
      if (!(inner >= 1 && inner < 1e15))
        fail("ssm_cfg.expand", detail::concat("a number with 1 <= expand d_model < 1e15 (d_model ", c.d_model, ")"),
             v.dump());
      c.block.expand = v.get<double>();
    }
    c.block.conv_bias = boolean(ssm_cfg, "ssm_cfg.", "conv_bias", true);
    c.block.bias = boolean(ssm_cfg, "ssm_cfg.", "bias", false);
    c.block.dt_rank = 0;
    if (ssm_cfg.contains("dt_rank") && !(ssm_cfg.at("dt_rank").is_string() && ssm_cfg.at("dt_rank") == "auto"))
      c.block.dt_rank = integer(ssm_cfg, "ssm_cfg.", "dt_rank", true, 0, 1);
    return c;
  }

 private:
  /// The layout of a parsed config.json: its model_type, else its architectures, else the reference's.
  template <class Fail>
  static CheckpointLayout detect_layout(const nlohmann::json& j, Fail& fail) {
    static const std::pair<const char*, CheckpointLayout> model_types[] = {
        {"mamba", CheckpointLayout::hf_mamba},
        {"mamba2", CheckpointLayout::hf_mamba2},
        {"falcon_mamba", CheckpointLayout::hf_falcon_mamba}};
    static const std::pair<const char*, CheckpointLayout> classes[] = {
        {"MambaForCausalLM", CheckpointLayout::hf_mamba},
        {"Mamba2ForCausalLM", CheckpointLayout::hf_mamba2},
        {"FalconMambaForCausalLM", CheckpointLayout::hf_falcon_mamba}};
    if (j.contains("model_type")) {
      const auto& v = j.at("model_type");
      for (const auto& [name, layout] : model_types)
        if (v == name) return layout;
      fail("model_type", "\"mamba\", \"mamba2\" or \"falcon_mamba\" (or no model_type: the state-spaces/mamba config)",
           v.dump());
    }
    if (j.contains("architectures") && j.at("architectures").is_array())
      for (const auto& entry : j.at("architectures"))
        for (const auto& [name, layout] : classes)
          if (entry == name) return layout;
    return CheckpointLayout::reference;
  }

  /// ssm_cfg.dt_limit (reference) or time_step_limit (Hugging Face): [min, max], 0 <= min <= max, max may
  /// be Infinity.
  template <class Fail, class Number>
  static void read_dt_limit(const nlohmann::json& v, const char* field, Mamba2Config& b, Fail& fail, Number& number) {
    if (!v.is_array() || v.size() != 2) fail(field, "two numbers [min, max]", v.dump());
    const double lo = number(v[0], field, false), hi = number(v[1], field, true);
    if (!(lo >= 0 && lo <= hi)) fail(field, "[min, max] with 0 <= min <= max", v.dump());
    b.dt_limit_min = lo;
    b.dt_limit_max = hi;
  }

  /// A Hugging Face config.json (MambaConfig, Mamba2Config or FalconMambaConfig of transformers), with
  /// transformers' defaults for absent keys. The keys read:
  ///   all: hidden_size, num_hidden_layers, vocab_size (the embedding has exactly vocab_size rows),
  ///        layer_norm_epsilon (every RMSNorm, Mamba-2's gated one included), tie_word_embeddings,
  ///        state_size, conv_kernel, expand, use_bias, use_conv_bias, hidden_act (must be "silu");
  ///   mamba, falcon_mamba: intermediate_size (d_inner; when absent int(expand hidden_size); when given it
  ///        wins over expand, as in transformers, where config.json's keys are set after the derived value:
  ///        tiiuae/falcon-mamba-7b's config.json says expand 16 and intermediate_size 8192 = 2 hidden_size),
  ///        time_step_rank ("auto" = ceil(hidden_size / 16));
  ///   falcon_mamba: mixer_rms_eps (the norms of dt, B and C; MambaConfig::dt_bc_norm);
  ///   mamba2: num_heads, head_dim (num_heads head_dim must be int(expand hidden_size)), n_groups,
  ///        time_step_limit. transformers' Mamba2 always applies its gated norm, gate before norm, over
  ///        all intermediate_size channels at once (not per group as the reference): norm_groups = 1.
  /// Other keys (token ids, initialisation, chunk_size, residual_in_fp32, use_cache, ...) do not change
  /// the result and are not read.
  template <class Fail, class Integer, class Boolean, class Number, class Positive>
  static MambaLMConfig parse_hugging_face(const nlohmann::json& j, CheckpointLayout layout, Fail& fail, Integer& integer,
                                          Boolean& boolean, Number& number, Positive& positive) {
    const bool v2 = layout == CheckpointLayout::hf_mamba2;
    MambaLMConfig c;
    c.layout = layout;
    c.mixer = v2 ? MambaMixer::mamba2 : MambaMixer::mamba1;
    c.d_model = integer(j, "", "hidden_size", false, v2 ? 4096 : 768, 1);
    c.n_layer = integer(j, "", "num_hidden_layers", false, v2 ? 64 : 32, 1);
    c.vocab_size = integer(j, "", "vocab_size", false, v2 ? 32768 : 50280, 1);
    c.pad_vocab_size_multiple = 1;
    if (j.contains("layer_norm_epsilon")) c.norm_epsilon = positive(j.at("layer_norm_epsilon"), "layer_norm_epsilon");
    c.tie_embeddings = boolean(j, "", "tie_word_embeddings", !v2);
    if (j.contains("hidden_act") && j.at("hidden_act") != "silu")
      fail("hidden_act", "\"silu\" (the activation of the mixer's convolution and gate)", j.at("hidden_act").dump());
    const Index d_state = integer(j, "", "state_size", false, v2 ? 128 : 16, 1);
    const Index d_conv = integer(j, "", "conv_kernel", false, 4, 1);
    double expand = 2;
    if (j.contains("expand")) expand = number(j.at("expand"), "expand", false);
    const double inner = expand * double(c.d_model);
    if (!(inner >= 1 && inner < 1e15))
      fail("expand", detail::concat("a number with 1 <= expand hidden_size < 1e15 (hidden_size ", c.d_model, ")"),
           j.contains("expand") ? j.at("expand").dump() : "2");
    const Index d_inner = static_cast<Index>(inner);  // int(expand * hidden_size), as transformers computes it
    const bool bias = boolean(j, "", "use_bias", false), conv_bias = boolean(j, "", "use_conv_bias", true);
    if (v2) {
      Mamba2Config& b = c.block2;
      b.d_model = c.d_model;
      b.d_state = d_state;
      b.d_conv = d_conv;
      if (d_inner % c.d_model != 0)
        fail("expand", detail::concat("a factor with int(expand hidden_size) a multiple of hidden_size ", c.d_model,
                                      " (ssm's Mamba2Config::expand is an integer)"),
             j.at("expand").dump());
      b.expand = d_inner / c.d_model;
      b.headdim = integer(j, "", "head_dim", false, 64, 1);
      const Index heads = integer(j, "", "num_heads", false, 128, 1);
      if (heads > d_inner || heads * b.headdim != d_inner)
        fail("num_heads", detail::concat("int(expand hidden_size) / head_dim = ", d_inner, " / ", b.headdim,
                                         " (num_heads head_dim must be the intermediate size)"),
             detail::concat(heads));
      b.ngroups = integer(j, "", "n_groups", false, 8, 1);
      if (heads % b.ngroups != 0) fail("n_groups", detail::concat("a divisor of num_heads = ", heads), detail::concat(b.ngroups));
      b.bias = bias;
      b.conv_bias = conv_bias;
      b.norm_eps = c.norm_epsilon;
      b.norm_groups = 1;
      if (j.contains("time_step_limit")) read_dt_limit(j.at("time_step_limit"), "time_step_limit", b, fail, number);
      return c;
    }
    MambaConfig& b = c.block;
    b.d_model = c.d_model;
    b.d_state = d_state;
    b.d_conv = d_conv;
    b.expand = expand;
    if (j.contains("intermediate_size")) {
      // MambaConfig keeps d_inner as the factor expand: the double nearest intermediate_size / hidden_size,
      // nudged up where int(expand d_model) rounds below intermediate_size.
      const Index intermediate = integer(j, "", "intermediate_size", true, 0, 1);
      b.expand = double(intermediate) / double(c.d_model);
      if (b.d_inner() < intermediate) b.expand = std::nextafter(b.expand, 2 * b.expand);
      if (b.d_inner() != intermediate)
        fail("intermediate_size", "a width that d_inner = int(expand hidden_size) can express",
             j.at("intermediate_size").dump());
    }
    b.bias = bias;
    b.conv_bias = conv_bias;
    b.dt_rank = 0;
    if (j.contains("time_step_rank") && !(j.at("time_step_rank").is_string() && j.at("time_step_rank") == "auto"))
      b.dt_rank = integer(j, "", "time_step_rank", true, 0, 1);
    if (layout == CheckpointLayout::hf_falcon_mamba) {
      b.dt_bc_norm = true;
      if (j.contains("mixer_rms_eps")) b.dt_bc_norm_eps = positive(j.at("mixer_rms_eps"), "mixer_rms_eps");
    }
    return c;
  }
};

/// The Mamba language model: embedding, residual Mamba or Mamba-2 blocks with RMSNorm, final norm, LM head.
template <class Scalar>
class MambaLM {
  static_assert(is_supported_scalar_v<Scalar>, "MambaLM: Scalar must be float or double");

 public:
  using Token = std::int64_t;

  /// A layer's mixer: a Mamba-1 block or a Mamba-2 mixer (std::get<Mamba2<Scalar>>(layer.mixer) reads it).
  using Mixer = std::variant<Mamba<Scalar>, Mamba2<Scalar>>;
  /// The streaming state of one layer's mixer, of the same alternative as the mixer.
  using MixerState = std::variant<typename Mamba<Scalar>::State, typename Mamba2<Scalar>::State>;

  /// One residual layer: its RMSNorm weight (d_model) and its mixer.
  struct Layer {
    VectorX<Scalar> norm_weight;
    Mixer mixer;
  };

  /// Streaming state of the whole model (every mixer's state plus scratch), so that `step`
  /// allocates nothing. One per stream; make it with `initial_state()`.
  struct State {
    std::vector<MixerState> layers;
    VectorX<Scalar> hidden, residual, normed;  ///< Scratch, d_model.
    using scalar_type = Scalar;  ///< float or double: the real type of the values
    static constexpr const char* kind = "MambaLM";
    /// Every layer's conv and SSM state (named by the mixer), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const std::string prefix = detail::concat("layers.", i, layers[i].index() == 0 ? ".mamba." : ".mamba2.");
        std::visit([&](auto& s) {
          v(prefix + "conv", s.conv);
          v(prefix + "ssm", s.ssm);
        }, layers[i]);
      }
    }

    /// Back to the start of a stream (every layer's zero state), keeping the memory.
    void reset() {
      for (auto& l : layers) std::visit([](auto& s) { s.reset(); }, l);
    }
  };

  /// Assembles a model from its parts. lm_head empty means tied to the embedding.
  /// \throws ssm::error on a shape that does not fit.
  MambaLM(MambaLMConfig config, MatrixX<Scalar> embedding, std::vector<Layer> layers, VectorX<Scalar> norm_f,
          MatrixX<Scalar> lm_head = {})
      : MambaLM(std::move(config), WeightMatrix<Scalar>(std::move(embedding)), std::move(layers), std::move(norm_f),
                WeightMatrix<Scalar>(std::move(lm_head))) {}

  /// The same from an embedding and head in any storage format (core/weight_matrix.hpp); a head of 0 rows
  /// means tied.
  SSM_NOINLINE MambaLM(MambaLMConfig config, WeightMatrix<Scalar> embedding, std::vector<Layer> layers,
                       VectorX<Scalar> norm_f, WeightMatrix<Scalar> lm_head = {})
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
    const std::size_t kind = config_.mixer == MambaMixer::mamba2 ? 1 : 0;  // the Mixer alternative config says
    for (const Layer& l : layers_) {
      check_size(l.norm_weight, dm, where, "layers[i].norm_weight", "d_model");
      check(l.mixer.index() == kind, where, "layers[i].mixer", kind ? "Mamba2 (config.mixer is mamba2)" : "Mamba (config.mixer is mamba1)",
            l.mixer.index() ? "Mamba2" : "Mamba");
      const Index mixer_width = std::visit([](const auto& m) { return m.channels(); }, l.mixer);
      check(mixer_width == dm, where, "layers[i].mixer", detail::concat("d_model ", dm),
            detail::concat("d_model ", mixer_width));
    }
    check_size(norm_f_, dm, where, "norm_f", "d_model");
    if (lm_head_.rows() != 0 || lm_head_.cols() != 0)
      check(lm_head_.rows() == embedding_.rows() && lm_head_.cols() == dm, where, "lm_head",
            detail::concat(embedding_.rows(), " x ", dm, " (vocab x d_model)"), shape_string(lm_head_.rows(), lm_head_.cols()));
  }

  /// Loads `directory`/config.json and the checkpoint beside it: model.safetensors, or the shards that
  /// model.safetensors.index.json names (io::Checkpoint; every file memory-mapped, each tensor's pages
  /// released once converted, so loading holds the model plus about 1 MB, not the files too). The layout
  /// (the reference's or a Hugging Face one) is read from config.json. `weights` is the storage format of
  /// the large matrices (every layer's projections, the embedding and the head; core/weight_matrix.hpp):
  /// full keeps them in Scalar; bf16 / f16 keep a checkpoint stored in that dtype exactly as stored (and
  /// round any other); q8 quantises at load.
  /// \throws ssm::error naming the file, the field or the tensor that is missing or misshaped.
  SSM_NOINLINE static MambaLM load(const std::string& directory, WeightFormat weights = WeightFormat::full) {
    const std::string config_path = directory + "/config.json";
    std::ifstream in(config_path);
    if (!in) throw error(detail::concat("MambaLM::load: ", config_path, ": cannot open the file"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const MambaLMConfig config = MambaLMConfig::parse(text, config_path);
    return from_checkpoint(config, io::Checkpoint::open(directory), weights);
  }

  /// Builds the model from a parsed config and one checkpoint file (see `from_checkpoint`).
  SSM_NOINLINE static MambaLM from_safetensors(const MambaLMConfig& config, const io::SafetensorsFile& file,
                                               WeightFormat weights = WeightFormat::full) {
    return from_checkpoint(config, io::Checkpoint::single(file), weights);
  }

  /// Builds the model from a parsed config and checkpoint (the names listed in the file comment; in a
  /// Hugging Face layout the embedding is backbone.embeddings.weight, with exactly vocab_size rows, and
  /// with tie_word_embeddings the head is the embedding whether or not lm_head.weight is stored), the
  /// large matrices in `weights` (see `load`). The embedding and the head go from the file to their format
  /// a block of rows at a time; each layer's projections pass through Scalar once, one layer at a time.
  /// \throws ssm::error naming a tensor that is missing, misshaped (the embedding must have
  /// padded_vocab_size() rows) or not used by the model.
  SSM_NOINLINE static MambaLM from_checkpoint(const MambaLMConfig& config, const io::Checkpoint& file,
                                              WeightFormat weights = WeightFormat::full) {
    const Index dm = config.d_model, vocab = config.padded_vocab_size();
    std::set<std::string> used;
    auto tensor = [&](const std::string& name, const std::vector<Index>& shape) {
      used.insert(name);
      return file.matrix<Scalar>(name, shape);
    };
    auto large = [&](const std::string& name, Index rows, Index cols) {
      used.insert(name);
      WeightMatrix<Scalar> m(rows, cols, weights);
      file.file_of(name).template for_each_row_block<Scalar>(
          name, {rows, cols}, [&](Index first, Index count, const Scalar* values) { m.set_rows(first, count, values); });
      return m;
    };
    const std::string emb_name = config.embedding_name();
    const auto& emb_info = file.info(emb_name);  // throws naming it when absent
    if (emb_info.shape != std::vector<Index>{vocab, dm})
      throw error(detail::concat("MambaLM: tensor '", emb_name, "': expected shape ",
                                 io::SafetensorsFile::shape_text({vocab, dm}), " (vocab_size ", config.vocab_size,
                                 " padded to a multiple of ", config.pad_vocab_size_multiple, ", d_model), got ",
                                 io::SafetensorsFile::shape_text(emb_info.shape)));
    WeightMatrix<Scalar> embedding = large(emb_name, vocab, dm);
    std::vector<Layer> layers;
    layers.reserve(std::size_t(config.n_layer));
    for (Index i = 0; i < config.n_layer; ++i) {
      const std::string pre = detail::concat("backbone.layers.", i, ".");
      const std::string mix = pre + "mixer.";
      Mixer mixer = config.mixer == MambaMixer::mamba2 ? Mixer(load_mamba2(config.block2, mix, tensor, weights))
                                                       : Mixer(load_mamba1(config.block, mix, tensor, weights));
      VectorX<Scalar> norm = tensor(pre + "norm.weight", {dm});
      layers.push_back(Layer{std::move(norm), std::move(mixer)});
    }
    VectorX<Scalar> norm_f = tensor("backbone.norm_f.weight", {dm});
    WeightMatrix<Scalar> head;
    const bool hugging_face = config.layout != CheckpointLayout::reference;
    if (hugging_face && config.tie_embeddings) {
      if (file.contains("lm_head.weight")) {  // transformers ties it to the embedding on load: the stored copy is unused
        file.file_of("lm_head.weight").check_shape_of("lm_head.weight", {vocab, dm});
        used.insert("lm_head.weight");
      }
    } else if (file.contains("lm_head.weight") || !config.tie_embeddings) {
      head = large("lm_head.weight", vocab, dm);
    }
    const bool v2 = config.mixer == MambaMixer::mamba2;
    const bool bias = v2 ? config.block2.bias : config.block.bias;
    const bool conv_bias = v2 ? config.block2.conv_bias : config.block.conv_bias;
    for (const std::string& name : file.names())  // sorted: the first unused one in name order
      if (!used.count(name))
        throw error(detail::concat(
            "MambaLM: tensor '", name, "' in ", file.file_of(name).source(),
            " is not used by this model (config: ssm_cfg.layer ", v2 ? "Mamba2" : "Mamba1",
            ", d_intermediate 0, no attention layers, ssm_cfg.bias ", bias ? "true" : "false",
            ", ssm_cfg.conv_bias ", conv_bias ? "true" : "false",
            v2 ? (config.block2.rmsnorm ? ", ssm_cfg.rmsnorm true" : ", ssm_cfg.rmsnorm false") : "",
            ", n_layer ", config.n_layer, "); refusing to drop it silently"));
    return MambaLM(config, std::move(embedding), std::move(layers), std::move(norm_f), std::move(head));
  }

  const MambaLMConfig& config() const { return config_; }
  /// Rows of the embedding: the number of logits per position.
  Index vocab_size() const { return embedding_.rows(); }
  /// The embedding (vocab x d_model) in its storage format (`.decode()` gives the matrix).
  const WeightMatrix<Scalar>& embedding() const { return embedding_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const VectorX<Scalar>& norm_f() const { return norm_f_; }
  /// The LM head weight (vocab x d_model): lm_head.weight, or the embedding when tied.
  const WeightMatrix<Scalar>& lm_head() const { return tied() ? embedding_ : lm_head_; }
  /// True when the head is the embedding.
  bool tied() const { return lm_head_.rows() == 0; }

  /// The same model with its large matrices (every layer's projections, the embedding, the head) in
  /// `format`, re-encoded from their present values.
  MambaLM with_weights(WeightFormat format) const {
    std::vector<Layer> layers;
    layers.reserve(layers_.size());
    for (const Layer& l : layers_)
      layers.push_back(Layer{l.norm_weight, std::visit([&](const auto& m) { return Mixer(m.with_weights(format)); }, l.mixer)});
    return MambaLM(config_, WeightMatrix<Scalar>::encode(embedding_.decode(), format), std::move(layers), norm_f_,
                   tied() ? WeightMatrix<Scalar>() : WeightMatrix<Scalar>::encode(lm_head_.decode(), format));
  }
  /// How the large matrices are stored.
  WeightFormat weight_format() const { return embedding_.format(); }
  /// Bytes of the large matrices as stored: every layer's projections, the embedding and an untied head.
  std::size_t weight_bytes() const {
    std::size_t bytes = embedding_.bytes() + lm_head_.bytes();
    for (const Layer& l : layers_) bytes += std::visit([](const auto& m) { return m.weight_bytes(); }, l.mixer);
    return bytes;
  }

  /// A zero state with all scratch allocated.
  State initial_state() const {
    State s;
    for (const Layer& l : layers_)
      s.layers.push_back(std::visit([](const auto& m) { return MixerState(m.initial_state()); }, l.mixer));
    s.hidden.resize(config_.d_model);
    s.residual.resize(config_.d_model);
    s.normed.resize(config_.d_model);
    return s;
  }

  /// Logits (L x vocab) of `tokens` from zero states.
  SSM_NOINLINE MatrixX<Scalar> forward(const std::vector<Token>& tokens) const {
    State s = initial_state();
    return forward(tokens, s);
  }

  /// Logits (L x vocab) of `tokens` starting from `state`, left as the state after the last token
  /// (chunked prefill continues exactly; `step` continues from it).
  SSM_NOINLINE MatrixX<Scalar> forward(const std::vector<Token>& tokens, State& state) const {
    MatrixX<Scalar> logits;
    lm_head().multiply_rows(final_hidden(tokens, state, "MambaLM::forward"), logits);
    return logits;
  }

  /// A prompt's prefill: the next-token logits (vocab) after the last of `tokens`, starting from
  /// `state` and leaving it after the last token. The same as the last row of `forward(tokens, state)`
  /// without the head's product on the other L - 1 positions (2 (L - 1) vocab d_model FLOPs: at the
  /// mamba-130m shape and L = 512 about a quarter of forward's time).
  SSM_NOINLINE VectorX<Scalar> prefill(const std::vector<Token>& tokens, State& state) const {
    check(!tokens.empty(), "MambaLM::prefill", "tokens", "at least one token", "none");
    const MatrixX<Scalar> normed = final_hidden(tokens, state, "MambaLM::prefill");
    const VectorX<Scalar> last = normed.row(normed.rows() - 1).transpose();
    VectorX<Scalar> logits(vocab_size());
    lm_head().multiply(last, logits);
    return logits;
  }

  /// One token: advances `state` and writes the next-token logits into `logits` (vocab; contiguous,
  /// so that the head's product needs no temporary). Allocates nothing.
  SSM_NOINLINE void step(Token token, State& state, Eigen::Ref<VectorX<Scalar>> logits) const {
    check_token(token, "MambaLM::step");
    check_state(state, "MambaLM::step");
    check_size(logits, vocab_size(), "MambaLM::step", "logits", "vocab");
    embedding_.decode_row(token, state.hidden);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (i == 0) state.residual = state.hidden;
      else state.residual += state.hidden;
      rms_norm(state.residual, layers_[i].norm_weight, state.normed);
      with_mixer(i, state, [&](const auto& mixer, auto& mixer_state) {
        mixer.step(state.normed, mixer_state, state.hidden);
      });
    }
    state.residual += state.hidden;
    rms_norm(state.residual, norm_f_, state.normed);
    lm_head().multiply(state.normed, logits);
  }

  /// One token for each of B streams (batched decoding): tokens[b] advances states[b] and row b of
  /// `logits` (B x vocab) gets its next-token logits. Each stream keeps its own state and may be at its own
  /// position. Every large product (in_proj and out_proj of each layer, the head) is one matrix product
  /// over the B streams, so the weights are read once per call rather than once per stream; the first
  /// call packs them for that product (core/panel_matrix.hpp: one more copy of in_proj, out_proj and the
  /// head, kept for later calls). The convolutions and scans run per stream with the arithmetic of
  /// `step`; the products and norms sum in another order than `step`'s, so the logits agree with B
  /// separate steps to rounding (tested), not bit for bit. A stream's logits do not depend on the other
  /// streams of the batch (tested bit for bit). Allocates the B x width intermediates.
  /// \throws ssm::error on a token out of range, a state count or shape that does not fit, or logits not B x vocab.
  SSM_NOINLINE void step_batch(const std::vector<Token>& tokens, std::vector<State>& states,
                               Eigen::Ref<MatrixX<Scalar>> logits) const {
    constexpr const char* where = "MambaLM::step_batch";
    const Index B = Index(tokens.size()), dm = config_.d_model;
    check(Index(states.size()) == B, where, "states", detail::concat(B, " (one per token)"), detail::concat(states.size()));
    check_shape(logits, B, vocab_size(), where, "logits", "B x vocab (B = tokens.size())");
    check_tokens(tokens, where);
    for (const State& s : states) check_state(s, where);
    MatrixX<Scalar> hidden(B, dm), residual(B, dm), normed(B, dm);
    embed(tokens, hidden);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (i == 0) residual = hidden;
      else residual += hidden;
      rms_norm_each_row(residual, layers_[i].norm_weight, normed);
      std::visit([&](const auto& mixer) {
        using M = std::decay_t<decltype(mixer)>;
        std::vector<typename M::State*> mixer_states(std::size_t(B), nullptr);
        for (Index b = 0; b < B; ++b)
          mixer_states[std::size_t(b)] = &std::get<typename M::State>(states[std::size_t(b)].layers[i]);  // kinds checked
        mixer.step_batch(normed, mixer_states.data(), hidden);
      }, layers_[i].mixer);
    }
    residual += hidden;
    rms_norm_each_row(residual, norm_f_, normed);
    lm_head().multiply_streams(normed, logits, VectorX<Scalar>());
  }

  /// Decoding: the prompt is run through `prefill` (one pass), then up to `n_new` tokens are each chosen
  /// from the logits by a `Sampler` with `options.sampling` (greedy by default: the argmax, the first on a
  /// tie; sampling.hpp gives the draw) and fed back with `step`. Ends early after a token of
  /// `options.stop_tokens` (which is returned) or when `on_token`, called with each new token as it is
  /// chosen (to stream text out), returns false. Returns the new tokens.
  SSM_NOINLINE std::vector<Token> generate(const std::vector<Token>& prompt, Index n_new, const GenerationOptions& options = {},
                              const std::function<bool(Token)>& on_token = {}) const {
    constexpr const char* where = "MambaLM::generate";
    check(!prompt.empty(), where, "prompt", "at least one token", "none");
    check(n_new >= 0, where, "n_new", "a count >= 0", detail::concat(n_new));
    options.sampling.validate(where);
    Sampler sampler(options.sampling);
    State state = initial_state();
    VectorX<Scalar> logits = prefill(prompt, state);
    std::vector<Token> out;
    out.reserve(std::size_t(n_new));
    for (Index k = 0; k < n_new; ++k) {
      const Token token = sampler.next(logits);
      out.push_back(token);
      const bool go_on = !on_token || on_token(token);
      const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) != options.stop_tokens.end();
      if (!go_on || stop) break;
      if (k + 1 < n_new) step(token, state, logits);
    }
    return out;
  }

 private:
  /// The final-normed hidden states (L x d_model) of `tokens` from `state`, which is advanced: every
  /// layer's residual stream, mixer and norm, then norm_f; the head is left to the caller.
  SSM_NOINLINE MatrixX<Scalar> final_hidden(const std::vector<Token>& tokens, State& state, const char* where) const {
    check_tokens(tokens, where);
    check_state(state, where);
    const Index L = Index(tokens.size()), dm = config_.d_model;
    MatrixX<Scalar> h(L, dm), residual(L, dm);
    embed(tokens, h);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (i == 0) residual = h;
      else residual += h;
      const MatrixX<Scalar> normed = rms_norm_rows(residual, layers_[i].norm_weight);
      h = with_mixer(i, state, [&](const auto& mixer, auto& mixer_state) { return mixer.forward(normed, mixer_state); });
    }
    residual += h;
    return rms_norm_rows(residual, norm_f_);
  }

  /// Row t of `out` (tokens.size() x d_model) = the embedding of tokens[t].
  void embed(const std::vector<Token>& tokens, MatrixX<Scalar>& out) const {
    VectorX<Scalar> row(config_.d_model);
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      embedding_.decode_row(tokens[t], row);
      out.row(Index(t)) = row.transpose();
    }
  }

  /// Mamba-1 block `prefix`* of a checkpoint (names and shapes in the file comment).
  template <class Tensor>
  SSM_NOINLINE static Mamba<Scalar> load_mamba1(const MambaConfig& b, const std::string& prefix, Tensor& tensor,
                                                WeightFormat weights) {
    const Index dm = b.d_model, di = b.d_inner(), N = b.d_state, K = b.d_conv, R = b.rank();
    MambaParams<Scalar> p;
    p.config = b;
    p.in_proj_weight = tensor(prefix + "in_proj.weight", {2 * di, dm});
    if (b.bias) p.in_proj_bias = tensor(prefix + "in_proj.bias", {2 * di});
    p.conv1d_weight = tensor(prefix + "conv1d.weight", {di, 1, K});
    if (b.conv_bias) p.conv1d_bias = tensor(prefix + "conv1d.bias", {di});
    p.x_proj_weight = tensor(prefix + "x_proj.weight", {R + 2 * N, di});
    p.dt_proj_weight = tensor(prefix + "dt_proj.weight", {di, R});
    p.dt_proj_bias = tensor(prefix + "dt_proj.bias", {di});
    p.A_log = tensor(prefix + "A_log", {di, N});
    p.D = tensor(prefix + "D", {di});
    p.out_proj_weight = tensor(prefix + "out_proj.weight", {dm, di});
    if (b.bias) p.out_proj_bias = tensor(prefix + "out_proj.bias", {dm});
    return Mamba<Scalar>(std::move(p), weights);
  }

  /// Mamba-2 mixer `prefix`* of a checkpoint (names and shapes in the file comment).
  template <class Tensor>
  SSM_NOINLINE static Mamba2<Scalar> load_mamba2(const Mamba2Config& b, const std::string& prefix, Tensor& tensor,
                                                 WeightFormat weights) {
    const Index dm = b.d_model, H = b.nheads(), ds = b.ssm_channels(), cd = b.conv_dim();
    Mamba2Params<Scalar> p;
    p.config = b;
    p.in_proj_weight = tensor(prefix + "in_proj.weight", {b.d_in_proj(), dm});
    if (b.bias) p.in_proj_bias = tensor(prefix + "in_proj.bias", {b.d_in_proj()});
    p.conv1d_weight = tensor(prefix + "conv1d.weight", {cd, 1, b.d_conv});
    if (b.conv_bias) p.conv1d_bias = tensor(prefix + "conv1d.bias", {cd});
    p.dt_bias = tensor(prefix + "dt_bias", {H});
    p.A_log = tensor(prefix + "A_log", {H});
    p.D = tensor(prefix + "D", {b.D_has_hdim ? ds : H});
    if (b.rmsnorm) p.norm_weight = tensor(prefix + "norm.weight", {ds});
    p.out_proj_weight = tensor(prefix + "out_proj.weight", {dm, b.d_inner()});
    if (b.bias) p.out_proj_bias = tensor(prefix + "out_proj.bias", {dm});
    return Mamba2<Scalar>(std::move(p), weights);
  }

  /// Calls f(mixer, mixer_state) with layer i's mixer and its state, both of their concrete types.
  template <class F>
  decltype(auto) with_mixer(std::size_t i, State& state, F&& f) const {
    return std::visit(
        [&](const auto& mixer) -> decltype(auto) {
          using M = std::decay_t<decltype(mixer)>;
          return f(mixer, std::get<typename M::State>(state.layers[i]));  // kinds checked by check_state
        },
        layers_[i].mixer);
  }

  /// y = x / sqrt(mean(x^2) + eps) * weight for one vector (no allocation).
  void rms_norm(const VectorX<Scalar>& x, const VectorX<Scalar>& weight, VectorX<Scalar>& y) const {
    const Scalar rstd = Scalar(1) / std::sqrt(x.squaredNorm() / Scalar(x.size()) + Scalar(config_.norm_epsilon));
    y = (x.array() * rstd * weight.array()).matrix();
  }

  /// The formula of `rms_norm` on each row of x (B x d_model) into y.
  void rms_norm_each_row(const MatrixX<Scalar>& x, const VectorX<Scalar>& weight, MatrixX<Scalar>& y) const {
    for (Index b = 0; b < x.rows(); ++b) {
      const Scalar rstd =
          Scalar(1) / std::sqrt(x.row(b).squaredNorm() / Scalar(x.cols()) + Scalar(config_.norm_epsilon));
      y.row(b) = (x.row(b).array() * rstd * weight.transpose().array()).matrix();
    }
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
    bool ok = s.layers.size() == layers_.size() && s.hidden.size() == config_.d_model &&
              s.residual.size() == config_.d_model && s.normed.size() == config_.d_model;
    for (std::size_t i = 0; ok && i < layers_.size(); ++i) ok = s.layers[i].index() == layers_[i].mixer.index();
    if (!ok) check(false, where, "state", "a state from initial_state() of this model", "another shape");
  }

  MambaLMConfig config_;
  WeightMatrix<Scalar> embedding_;
  std::vector<Layer> layers_;
  VectorX<Scalar> norm_f_;
  WeightMatrix<Scalar> lm_head_;  ///< 0 x 0 when tied.
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(MambaLM)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
