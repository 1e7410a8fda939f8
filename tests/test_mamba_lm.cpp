// The Mamba language model: golden logits and greedy continuation of the reference's tiny model,
// step against forward, chunked prefill, tied and untied heads, F16 / BF16 checkpoints, the ssm_cfg
// options (bias, conv_bias, fractional expand), norm_epsilon, and clear errors for missing, misshaped
// or unused tensors, a vocab_size that does not fit the embedding, and bad or unsupported config.json.
#include "checkpoint_support.hpp"
#include "lm_batch_support.hpp"
#include "test_support.hpp"

#include "ssm/models/mamba_lm.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>

namespace ssm::test {
namespace {

template <class T>
class MambaLMTest : public ::testing::Test {};
TYPED_TEST_SUITE(MambaLMTest, Scalars);

const std::string kDir = data_path("mamba_lm");

std::vector<std::int64_t> golden_ids(const char* array) { return golden("mamba_lm", array).values<std::int64_t>(); }

/// The golden checkpoint's tensors, as F32 values, for rewriting with changes.
std::vector<io::TensorToWrite> golden_tensors() { return read_tensors(kDir + "/model.safetensors"); }

using test::write_checkpoint;
/// A checkpoint directory with the golden config.json.
void write_checkpoint(const std::string& dir, const std::vector<io::TensorToWrite>& tensors) {
  write_checkpoint(dir, tensors, read_text(kDir + "/config.json"));
}

/// Tensors of the right names and shapes for `config` (random weights of the reference's kind),
/// with in_proj / out_proj biases when ssm_cfg.bias and conv1d.bias unless ssm_cfg.conv_bias is false.
std::vector<io::TensorToWrite> synthetic_tensors(const MambaLMConfig& c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const MambaConfig& b = c.block;
  const Index dm = c.d_model, di = b.d_inner(), N = b.d_state, R = b.rank(), V = c.padded_vocab_size();
  std::vector<io::TensorToWrite> out;
  auto add = [&](const std::string& name, std::vector<Index> shape, float scale, float offset = 0) {
    Index n = 1;
    for (Index d : shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = offset + scale * normal(gen);
    out.push_back({name, std::move(shape), std::move(v)});
  };
  add("backbone.embedding.weight", {V, dm}, 0.5f);
  for (Index i = 0; i < c.n_layer; ++i) {
    const std::string pre = ssm::detail::concat("backbone.layers.", i, ".");
    const std::string mix = pre + "mixer.";
    add(pre + "norm.weight", {dm}, 0.1f, 1.0f);
    add(mix + "in_proj.weight", {2 * di, dm}, 0.2f);
    if (b.bias) add(mix + "in_proj.bias", {2 * di}, 0.3f);
    add(mix + "conv1d.weight", {di, 1, b.d_conv}, 0.3f);
    if (b.conv_bias) add(mix + "conv1d.bias", {di}, 0.2f);
    add(mix + "x_proj.weight", {R + 2 * N, di}, 0.2f);
    add(mix + "dt_proj.weight", {di, R}, 0.3f);
    add(mix + "dt_proj.bias", {di}, 0.5f, -3.0f);
    std::vector<float> a_log(std::size_t(di * N));
    for (Index d = 0; d < di; ++d)
      for (Index n = 0; n < N; ++n) a_log[std::size_t(d * N + n)] = float(std::log(double(n + 1)));
    out.push_back({mix + "A_log", {di, N}, a_log});
    add(mix + "D", {di}, 0.1f, 1.0f);
    add(mix + "out_proj.weight", {dm, di}, 0.2f);
    if (b.bias) add(mix + "out_proj.bias", {dm}, 0.3f);
  }
  add("backbone.norm_f.weight", {dm}, 0.1f, 1.0f);
  return out;
}

/// Expects ssm::error whose message contains every fragment.
TYPED_TEST(MambaLMTest, GoldenLogits) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  EXPECT_EQ(lm.vocab_size(), 64);
  EXPECT_EQ(lm.config().n_layer, 2);
  EXPECT_EQ(lm.config().block.rank(), 2);  // "auto": ceil(32 / 16)
  const MatrixX<T> logits = lm.forward(golden_ids("input_ids"));
  SSM_EXPECT_NEAR_REL(logits, golden("mamba_lm", "logits").matrix<T>(), 1e-4);
}

// Batched decoding: five streams at different positions stepped together (one matrix product per
// projection) give the logits of separate steps to rounding and the same greedy tokens.
TYPED_TEST(MambaLMTest, StepBatchEqualsSeparateStepsToRounding) {
  expect_step_batch_matches_steps(MambaLM<TypeParam>::load(kDir));
}

TYPED_TEST(MambaLMTest, GoldenGreedyContinuation) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  const auto expected = golden_ids("generated");
  EXPECT_EQ(lm.generate(golden_ids("input_ids"), Index(expected.size())), expected);
}

TYPED_TEST(MambaLMTest, StepEqualsForwardAndChunkedPrefillContinues) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  std::vector<std::int64_t> ids = golden_ids("input_ids");
  for (std::int64_t k = 0; k < 20; ++k) ids.push_back((k * 37 + 5) % 64);
  const Index L = Index(ids.size());
  const MatrixX<T> whole = lm.forward(ids);
  const double tol = 20 * double(scalar_traits<T>::epsilon) * L;
  VectorX<T> logits(lm.vocab_size());
  {  // token by token
    auto state = lm.initial_state();
    MatrixX<T> stepped(L, lm.vocab_size());
    for (Index t = 0; t < L; ++t) {
      lm.step(ids[std::size_t(t)], state, logits);
      stepped.row(t) = logits.transpose();
    }
    SSM_EXPECT_NEAR_REL(stepped, whole, tol);
    // reset() is the initial state again: the one-pass forward from it is the forward from zero.
    state.reset();
    EXPECT_EQ(lm.forward(ids, state), whole);
  }
  {  // chunks, one shorter than d_conv, then steps
    auto state = lm.initial_state();
    MatrixX<T> joined(L, lm.vocab_size());
    Index at = 0;
    for (Index len : {2, 9, 1, 12}) {
      const std::vector<std::int64_t> chunk(ids.begin() + at, ids.begin() + at + len);
      joined.middleRows(at, len) = lm.forward(chunk, state);
      at += len;
    }
    for (; at < L; ++at) {
      lm.step(ids[std::size_t(at)], state, logits);
      joined.row(at) = logits.transpose();
    }
    SSM_EXPECT_NEAR_REL(joined, whole, tol);
  }
}

TEST(MambaLM, FloatAgreesWithDouble) {
  // Documented bound: float logits within 1e-4 of max |logit| of the double model (two layers of
  // projections, convolution and scan, each a few float roundings deep).
  const auto lf = MambaLM<float>::load(kDir);
  const auto ld = MambaLM<double>::load(kDir);
  const auto ids = golden_ids("input_ids");
  SSM_EXPECT_NEAR_REL(lf.forward(ids).cast<double>(), ld.forward(ids), 1e-4);
}

TEST(MambaLM, HeadIsTiedUnlessTheCheckpointHasOne) {
  auto tensors = golden_tensors();
  const auto ids = golden_ids("input_ids");
  const auto reference = MambaLM<double>::load(kDir);
  EXPECT_FALSE(reference.tied());  // the golden file carries lm_head.weight (equal to the embedding)
  TempDir tied_dir;
  std::vector<io::TensorToWrite> without_head;
  for (const auto& t : tensors)
    if (t.name != "lm_head.weight") without_head.push_back(t);
  write_checkpoint(tied_dir.str(), without_head);
  const auto tied = MambaLM<double>::load(tied_dir.str());
  EXPECT_TRUE(tied.tied());
  SSM_EXPECT_NEAR_REL(tied.forward(ids), reference.forward(ids), 1e-15);
  // A head of its own: logits = RMSNorm_f(...) W^T with that W, i.e. (here) a scaled copy gives
  // scaled logits.
  TempDir own_dir;
  for (auto& t : tensors)
    if (t.name == "lm_head.weight")
      for (float& v : t.values) v *= 2.0f;
  write_checkpoint(own_dir.str(), tensors);
  const auto own = MambaLM<double>::load(own_dir.str());
  EXPECT_FALSE(own.tied());
  SSM_EXPECT_NEAR_REL(own.forward(ids), (2.0 * reference.forward(ids)).eval(), 1e-14);
}

/// Rounds to bfloat16 (nearest even) and returns the 16 bits.
std::uint16_t to_bf16(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return std::uint16_t(b >> 16);
}

float from_bf16(std::uint16_t h) {
  const std::uint32_t b = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

/// Rounds a float of normal half range (or zero) to IEEE half, truncating the mantissa (exactness
/// of the round trip is all the test needs).
std::uint16_t to_f16(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  const std::uint32_t sign = (b >> 16) & 0x8000u;
  const int exponent = int((b >> 23) & 0xff) - 127 + 15;
  if ((b & 0x7fffffffu) == 0 || exponent <= 0) return std::uint16_t(sign);
  return std::uint16_t(sign | (std::uint32_t(exponent) << 10) | ((b >> 13) & 0x3ffu));
}

float from_f16(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  const std::uint32_t b = exponent == 0 ? sign : (sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

/// Writes `tensors` as a 16-bit safetensors file ("F16" or "BF16") and returns the tensors with the
/// values the 16-bit file holds, as F32.
std::vector<io::TensorToWrite> write_16bit(const std::string& path, std::vector<io::TensorToWrite> tensors,
                                           const std::string& dtype) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<unsigned char> data;
  for (auto& t : tensors) {
    const std::size_t begin = data.size();
    for (float& v : t.values) {
      const std::uint16_t h = dtype == "BF16" ? to_bf16(v) : to_f16(v);
      v = dtype == "BF16" ? from_bf16(h) : from_f16(h);
      data.push_back(static_cast<unsigned char>(h & 0xff));
      data.push_back(static_cast<unsigned char>(h >> 8));
    }
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out.write(text.data(), std::streamsize(text.size()));
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  return tensors;
}

TEST(MambaLM, LoadsHalfAndBfloat16Checkpoints) {
  const auto ids = golden_ids("input_ids");
  for (const std::string dtype : {"F16", "BF16"}) {
    TempDir half_dir, f32_dir;
    const auto rounded = write_16bit(half_dir.str() + "/model.safetensors", golden_tensors(), dtype);
    std::ofstream(half_dir.str() + "/config.json") << read_text(kDir + "/config.json");
    write_checkpoint(f32_dir.str(), rounded);  // the same values, stored as F32
    const auto half = MambaLM<float>::load(half_dir.str());
    const auto full = MambaLM<float>::load(f32_dir.str());
    EXPECT_EQ(half.embedding().decode(), full.embedding().decode()) << dtype;
    EXPECT_EQ(std::get<Mamba<float>>(half.layers()[1].mixer).params().x_proj_weight,
              std::get<Mamba<float>>(full.layers()[1].mixer).params().x_proj_weight);
    EXPECT_EQ(half.forward(ids), full.forward(ids)) << dtype;
    // Rounding the weights moved the logits, but not far.
    SSM_EXPECT_NEAR_REL(half.forward(ids), golden("mamba_lm", "logits").matrix<float>(), dtype == "F16" ? 1e-2 : 5e-2);
  }
}

// Compact weights (core/weight_matrix.hpp). A model loaded with bf16 / f16 / q8 weights is the F32 model of
// its decoded weights (`with_weights(full)`), to the order of the sums. Against the golden F32 logits the
// difference is what rounding the weights does: each weight moves by at most 2^-9 of itself (bf16),
// 2^-12 (f16) or 1/254 of its block's largest (q8), and the logits of this model move by 8.3e-3 (bf16),
// 9.3e-4 (f16) and 1.7e-2 (q8) of the largest logit (measured, float and double alike: the error is the
// weights', not the arithmetic's); the bounds below are 3x those. The greedy continuation stays the golden
// one in every format.
TYPED_TEST(MambaLMTest, CompactWeightsComputeTheModelOfTheirDecodedWeights) {
  using T = TypeParam;
  const auto ids = golden_ids("input_ids");
  const auto expected = golden_ids("generated");
  const auto full = MambaLM<T>::load(kDir);
  const MatrixX<T> golden_logits = golden("mamba_lm", "logits").matrix<T>();
  const std::pair<WeightFormat, double> formats[] = {
      {WeightFormat::bf16, 2.5e-2}, {WeightFormat::f16, 3e-3}, {WeightFormat::q8, 5e-2}};
  for (const auto& [format, bound] : formats) {
    const auto lm = MambaLM<T>::load(kDir, format);
    EXPECT_EQ(lm.weight_format(), format);
    EXPECT_LT(double(lm.weight_bytes()), 0.6 * double(full.weight_bytes())) << weight_format_name(format);
    const MatrixX<T> logits = lm.forward(ids);
    const double rounding = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    SSM_EXPECT_NEAR_REL(logits, lm.with_weights(WeightFormat::full).forward(ids), rounding) << weight_format_name(format);
    SSM_EXPECT_NEAR_REL(logits, golden_logits, bound) << weight_format_name(format);
    EXPECT_EQ(lm.generate(ids, Index(expected.size())), expected) << weight_format_name(format);
    // A converted model equals one loaded in the format.
    EXPECT_EQ(full.with_weights(format).forward(ids), logits) << weight_format_name(format);
  }
}

// A bf16 (f16) checkpoint loaded with bf16 (f16) weights keeps every stored value exactly.
TEST(MambaLM, SixteenBitCheckpointsAreKeptAsStored) {
  const auto ids = golden_ids("input_ids");
  for (const auto& [dtype, format] : {std::pair<std::string, WeightFormat>{"BF16", WeightFormat::bf16}, {"F16", WeightFormat::f16}}) {
    TempDir half_dir;
    write_16bit(half_dir.str() + "/model.safetensors", golden_tensors(), dtype);
    std::ofstream(half_dir.str() + "/config.json") << read_text(kDir + "/config.json");
    const auto widened = MambaLM<float>::load(half_dir.str());  // every value as F32
    const auto kept = MambaLM<float>::load(half_dir.str(), format);
    EXPECT_EQ(kept.embedding().decode(), widened.embedding().decode()) << dtype;
    const auto& a = std::get<Mamba<float>>(kept.layers()[1].mixer);
    const auto& b = std::get<Mamba<float>>(widened.layers()[1].mixer);
    EXPECT_EQ(a.params().in_proj_weight, b.params().in_proj_weight) << dtype;
    EXPECT_EQ(a.params().dt_proj_weight, b.params().dt_proj_weight) << dtype;
    EXPECT_EQ(a.weight_bytes() * 2, b.weight_bytes()) << dtype;
    SSM_EXPECT_NEAR_REL(kept.forward(ids), widened.forward(ids), 1e-5) << dtype;
  }
}

TEST(MambaLM, MissingTensorIsNamed) {
  for (const std::string missing :
       {"backbone.layers.1.mixer.D", "backbone.embedding.weight", "backbone.norm_f.weight",
        "backbone.layers.0.norm.weight", "backbone.layers.0.mixer.conv1d.bias"}) {
    std::vector<io::TensorToWrite> tensors;
    for (auto& t : golden_tensors())
      if (t.name != missing) tensors.push_back(t);
    TempDir dir;
    write_checkpoint(dir.str(), tensors);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {missing, "not in the file"});
  }
}

TEST(MambaLM, MisshapedTensorIsNamed) {
  struct Case {
    std::string name;
    std::vector<Index> shape;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{{"backbone.layers.1.mixer.x_proj.weight", {11, 64}, "(10, 64)"},
                                        {"backbone.layers.0.mixer.conv1d.weight", {64, 4}, "(64, 1, 4)"},
                                        {"backbone.layers.0.mixer.A_log", {64, 5}, "(64, 4)"},
                                        {"backbone.embedding.weight", {64, 31}, "(64, 32)"},
                                        {"lm_head.weight", {63, 32}, "(64, 32)"}}) {
    auto tensors = golden_tensors();
    for (auto& t : tensors)
      if (t.name == c.name) {
        Index n = 1;
        for (Index d : c.shape) n *= d;
        t.shape = c.shape;
        t.values.assign(std::size_t(n), 0.5f);
      }
    TempDir dir;
    write_checkpoint(dir.str(), tensors);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {c.name, c.expected});
  }
}

TEST(MambaLM, BadConfigIsNamed) {
  const std::string good = read_text(kDir + "/config.json");
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(good);
    edit(j);
    return j.dump();
  };
  struct Case {
    std::string text;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {with([](auto& j) { j.erase("d_model"); }), {"d_model", "missing"}},
      {with([](auto& j) { j["n_layer"] = "two"; }), {"n_layer", "an integer", "\"two\""}},
      {with([](auto& j) { j["vocab_size"] = 0; }), {"vocab_size", ">= 1"}},
      {with([](auto& j) { j["ssm_cfg"]["d_state"] = 2.5; }), {"ssm_cfg.d_state", "2.5"}},
      {with([](auto& j) { j["ssm_cfg"]["dt_rank"] = "big"; }), {"ssm_cfg.dt_rank", "\"big\""}},
      {with([](auto& j) { j["ssm_cfg"]["layer"] = "Mamba3"; }), {"ssm_cfg.layer", "Mamba3", "\"Mamba1\" or \"Mamba2\""}},
      {with([](auto& j) { j["rms_norm"] = false; }), {"rms_norm"}},
      {with([](auto& j) { j["norm_epsilon"] = -1; }), {"norm_epsilon"}},
      {with([](auto& j) { j["d_intermediate"] = 64; }), {"d_intermediate", "GatedMLP", "64"}},
      {with([](auto& j) { j["d_intermediate"] = 1.5; }), {"d_intermediate", "an integer"}},
      {with([](auto& j) { j["attn_layer_idx"] = {1}; }), {"attn_layer_idx", "attention", "[1]"}},
      {with([](auto& j) { j["attn_cfg"] = {{"num_heads", 4}}; }), {"attn_cfg", "attention"}},
      {with([](auto& j) { j["ssm_cfg"]["bias"] = "yes"; }), {"ssm_cfg.bias", "true or false", "\"yes\""}},
      {with([](auto& j) { j["ssm_cfg"]["conv_bias"] = 0; }), {"ssm_cfg.conv_bias", "true or false"}},
      {with([](auto& j) { j["ssm_cfg"]["expand"] = "two"; }), {"ssm_cfg.expand", "\"two\""}},
      {with([](auto& j) { j["ssm_cfg"]["expand"] = 0.01; }), {"ssm_cfg.expand", "0.01"}},
      {with([](auto& j) { j["ssm_cfg"]["ngroups"] = 2; }), {"ssm_cfg.ngroups", "no such option"}},
      {with([](auto& j) { j["tie_embeddings"] = "no"; }), {"tie_embeddings"}},
      {"{ not json", {"not valid JSON"}},
  };
  for (const auto& c : cases) {
    TempDir dir;
    write_checkpoint(dir.str(), golden_tensors(), c.text);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, c.fragments);
  }
  expect_error([&] { MambaLM<float>::load("/nonexistent/ssm/checkpoint"); }, {"config.json", "cannot open"});
}

TEST(MambaLM, ConfigDefaultsAndPadding) {
  const auto c = MambaLMConfig::parse(R"({"d_model": 40, "n_layer": 3, "vocab_size": 50277,
                                          "pad_vocab_size_multiple": 8, "ssm_cfg": {"dt_rank": "auto"}})");
  EXPECT_EQ(c.padded_vocab_size(), 50280);
  EXPECT_EQ(c.block.d_state, 16);
  EXPECT_EQ(c.block.d_conv, 4);
  EXPECT_EQ(c.block.expand, 2);
  EXPECT_EQ(c.block.rank(), 3);  // ceil(40 / 16)
  EXPECT_EQ(c.norm_epsilon, 1e-5);
  EXPECT_FALSE(c.block.bias);
  EXPECT_TRUE(c.block.conv_bias);
  EXPECT_TRUE(c.tie_embeddings);
  // pad_vocab_size_multiple defaults to 8 as in the reference's MambaConfig; the options that keep the
  // network as it is are accepted: d_intermediate 0, empty attention settings, initialisation options.
  const auto d = MambaLMConfig::parse(R"({"d_model": 40, "n_layer": 1, "vocab_size": 7, "d_intermediate": 0,
                                          "attn_layer_idx": [], "attn_cfg": {}, "tie_embeddings": false,
                                          "ssm_cfg": {"dt_rank": 5, "expand": 1.5, "bias": true, "conv_bias": false,
                                                      "dt_min": 0.001, "dt_init": "random", "layer": "Mamba1"}})");
  EXPECT_EQ(d.block.rank(), 5);
  EXPECT_EQ(d.padded_vocab_size(), 8);
  EXPECT_EQ(d.block.expand, 1.5);
  EXPECT_EQ(d.block.d_inner(), 60);
  EXPECT_TRUE(d.block.bias);
  EXPECT_FALSE(d.block.conv_bias);
  EXPECT_FALSE(d.tie_embeddings);
}

TYPED_TEST(MambaLMTest, BiasesConvBiasAndFractionalExpandLoadAndStepEqualsForward) {
  using T = TypeParam;
  const std::vector<std::int64_t> ids = {3, 17, 5, 60, 2, 9, 9, 41, 0, 33, 12, 7, 58};
  const Index L = Index(ids.size());
  std::uint64_t seed = 300;
  for (const char* ssm_cfg : {R"({"d_state": 4, "expand": 1.5, "bias": true})",
                              R"({"d_state": 4, "expand": 2, "bias": true, "conv_bias": false})",
                              R"({"d_state": 3, "d_conv": 2, "expand": 1.25, "conv_bias": false, "dt_rank": 3})"}) {
    const std::string config_text = ssm::detail::concat(R"({"d_model": 20, "n_layer": 2, "vocab_size": 61, "ssm_cfg": )",
                                                   ssm_cfg, R"(, "rms_norm": true, "pad_vocab_size_multiple": 8})");
    const MambaLMConfig config = MambaLMConfig::parse(config_text);
    const auto tensors = synthetic_tensors(config, seed++);
    TempDir dir;
    write_checkpoint(dir.str(), tensors, config_text);
    const auto lm = MambaLM<T>::load(dir.str());
    const MambaConfig& b = std::get<Mamba<T>>(lm.layers()[1].mixer).config();
    EXPECT_EQ(b.d_inner(), Index(b.expand * 20)) << ssm_cfg;  // int(expand d_model): 30, 40, 25
    EXPECT_EQ(lm.vocab_size(), 64);
    // Every tensor reached the block it belongs to.
    for (const auto& t : tensors) {
      const auto& p = std::get<Mamba<T>>(lm.layers()[1].mixer).params();
      const auto values = [&] { return Eigen::Map<const VectorX<float>>(t.values.data(), Index(t.values.size())); };
      if (t.name == "backbone.layers.1.mixer.in_proj.bias") {
        EXPECT_EQ(p.in_proj_bias, values().template cast<T>());
      }
      if (t.name == "backbone.layers.1.mixer.out_proj.bias") {
        EXPECT_EQ(p.out_proj_bias, values().template cast<T>());
      }
      if (t.name == "backbone.layers.1.mixer.conv1d.bias") {
        EXPECT_EQ(p.conv1d_bias, values().template cast<T>());
      }
    }
    EXPECT_EQ(std::get<Mamba<T>>(lm.layers()[0].mixer).params().in_proj_bias.size(), b.bias ? 2 * b.d_inner() : 0);
    EXPECT_EQ(std::get<Mamba<T>>(lm.layers()[0].mixer).params().conv1d_bias.size(), b.conv_bias ? b.d_inner() : 0);
    const MatrixX<T> whole = lm.forward(ids);
    auto state = lm.initial_state();
    MatrixX<T> stepped(L, lm.vocab_size());
    VectorX<T> logits(lm.vocab_size());
    for (Index t = 0; t < L; ++t) {
      lm.step(ids[std::size_t(t)], state, logits);
      stepped.row(t) = logits.transpose();
    }
    SSM_EXPECT_NEAR_REL(stepped, whole, 20 * double(scalar_traits<T>::epsilon) * L) << ssm_cfg;
  }
}

TEST(MambaLM, BiasesAreUsedAndConvBiasFalseIsZeroBias) {
  const auto ids = golden_ids("input_ids");
  auto config = nlohmann::json::parse(read_text(kDir + "/config.json"));
  const auto reference = MambaLM<double>::load(kDir);
  // bias = true with zero biases: the golden logits; with nonzero ones: different logits.
  config["ssm_cfg"]["bias"] = true;
  for (float value : {0.0f, 0.25f}) {
    auto tensors = golden_tensors();
    for (int i = 0; i < 2; ++i) {
      const std::string mix = ssm::detail::concat("backbone.layers.", i, ".mixer.");
      tensors.push_back({mix + "in_proj.bias", {128}, std::vector<float>(128, value)});
      tensors.push_back({mix + "out_proj.bias", {32}, std::vector<float>(32, value)});
    }
    TempDir dir;
    write_checkpoint(dir.str(), tensors, config.dump());
    const auto lm = MambaLM<double>::load(dir.str());
    if (value == 0.0f) {
      SSM_EXPECT_NEAR_REL(lm.forward(ids), reference.forward(ids), 1e-15);
    } else {
      EXPECT_GT((lm.forward(ids) - reference.forward(ids)).cwiseAbs().maxCoeff(), 1e-3);
    }
  }
  // conv_bias = false without the conv1d.bias tensors equals conv_bias = true with zeros there.
  config = nlohmann::json::parse(read_text(kDir + "/config.json"));
  auto zeroed = golden_tensors();
  std::vector<io::TensorToWrite> without;
  for (auto& t : zeroed) {
    const bool conv_bias = t.name.find("conv1d.bias") != std::string::npos;
    if (conv_bias) std::fill(t.values.begin(), t.values.end(), 0.0f);
    else without.push_back(t);
  }
  TempDir zero_dir, none_dir;
  write_checkpoint(zero_dir.str(), zeroed);
  config["ssm_cfg"]["conv_bias"] = false;
  write_checkpoint(none_dir.str(), without, config.dump());
  EXPECT_EQ(MambaLM<double>::load(none_dir.str()).forward(ids), MambaLM<double>::load(zero_dir.str()).forward(ids));
  // The same config with the conv1d.bias tensors still in the file: refused, naming the first.
  TempDir extra_dir;
  write_checkpoint(extra_dir.str(), golden_tensors(), config.dump());
  expect_error([&] { MambaLM<float>::load(extra_dir.str()); },
               {"backbone.layers.0.mixer.conv1d.bias", "not used", "conv_bias false"});
}

TEST(MambaLM, UnusedTensorIsNamed) {
  struct Case {
    std::vector<io::TensorToWrite> extra;
    std::string config;
    std::string named;
  };
  const std::string good = read_text(kDir + "/config.json");
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(good);
    edit(j);
    return j.dump();
  };
  const std::vector<Case> cases = {
      // A GatedMLP's weights (a d_intermediate model whose config lost the field): the first in name order.
      {{{"backbone.layers.1.mlp.fc2.weight", {32, 8}, std::vector<float>(256, 0.1f)},
        {"backbone.layers.0.mlp.fc1.weight", {16, 32}, std::vector<float>(512, 0.1f)}},
       good,
       "backbone.layers.0.mlp.fc1.weight"},
      // bias = false, but the checkpoint has in_proj biases.
      {{{"backbone.layers.1.mixer.in_proj.bias", {128}, std::vector<float>(128, 0.0f)}},
       good,
       "backbone.layers.1.mixer.in_proj.bias"},
      // Fewer layers in config.json than in the file.
      {{}, with([](auto& j) { j["n_layer"] = 1; }), "backbone.layers.1.mixer.A_log"},
      // Something else entirely.
      {{{"backbone.norm_f.bias", {32}, std::vector<float>(32, 0.0f)}}, good, "backbone.norm_f.bias"},
  };
  for (const auto& c : cases) {
    auto tensors = golden_tensors();
    tensors.insert(tensors.end(), c.extra.begin(), c.extra.end());
    TempDir dir;
    write_checkpoint(dir.str(), tensors, c.config);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {"'" + c.named + "'", "not used"});
  }
}

TEST(MambaLM, VocabSizeMustFitTheEmbedding) {
  const std::string good = read_text(kDir + "/config.json");  // vocab_size 64, no pad_vocab_size_multiple (8)
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(good);
    edit(j);
    return j.dump();
  };
  {  // 61 padded to 64: the embedding fits
    TempDir dir;
    write_checkpoint(dir.str(), golden_tensors(), with([](auto& j) { j["vocab_size"] = 61; }));
    EXPECT_EQ(MambaLM<float>::load(dir.str()).vocab_size(), 64);
  }
  for (const auto& [text, expected] : std::vector<std::pair<std::string, std::string>>{
           {with([](auto& j) { j["vocab_size"] = 70; }), "(72, 32)"},
           {with([](auto& j) {
              j["vocab_size"] = 60;
              j["pad_vocab_size_multiple"] = 1;
            }),
            "(60, 32)"}}) {
    TempDir dir;
    write_checkpoint(dir.str(), golden_tensors(), text);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {"backbone.embedding.weight", expected, "(64, 32)", "vocab_size"});
  }
}

TEST(MambaLM, NormEpsilonDefaultsToTheReferences) {
  // The reference always uses 1e-5; without the key the logits equal the golden (1e-5) ones exactly,
  // and the ssm extension "norm_epsilon" does take effect when given.
  auto config = nlohmann::json::parse(read_text(kDir + "/config.json"));
  config.erase("norm_epsilon");
  EXPECT_EQ(MambaLMConfig::parse(config.dump()).norm_epsilon, 1e-5);
  const auto ids = golden_ids("input_ids");
  const auto reference = MambaLM<double>::load(kDir);
  TempDir plain_dir, eps_dir;
  write_checkpoint(plain_dir.str(), golden_tensors(), config.dump());
  EXPECT_EQ(MambaLM<double>::load(plain_dir.str()).forward(ids), reference.forward(ids));
  config["norm_epsilon"] = 0.5;
  write_checkpoint(eps_dir.str(), golden_tensors(), config.dump());
  EXPECT_GT((MambaLM<double>::load(eps_dir.str()).forward(ids) - reference.forward(ids)).cwiseAbs().maxCoeff(), 1e-3);
}

TEST(MambaLM, UntiedConfigNeedsItsHead) {
  auto config = nlohmann::json::parse(read_text(kDir + "/config.json"));
  config["tie_embeddings"] = false;
  std::vector<io::TensorToWrite> without_head;
  for (const auto& t : golden_tensors())
    if (t.name != "lm_head.weight") without_head.push_back(t);
  TempDir dir, with_dir;
  write_checkpoint(dir.str(), without_head, config.dump());
  expect_error([&] { MambaLM<float>::load(dir.str()); }, {"lm_head.weight", "not in the file"});
  write_checkpoint(with_dir.str(), golden_tensors(), config.dump());
  EXPECT_FALSE(MambaLM<float>::load(with_dir.str()).tied());
}

TYPED_TEST(MambaLMTest, BadTokensAndStatesAreRejected) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  expect_error([&] { lm.forward({1, 2, 64}); }, {"tokens", "[0, 64)", "64 at position 2"});
  auto state = lm.initial_state();
  VectorX<T> logits(lm.vocab_size()), short_logits(lm.vocab_size() - 1);
  expect_error([&] { lm.step(-1, state, logits); }, {"MambaLM::step", "token", "-1"});
  expect_error([&] { lm.step(3, state, short_logits); }, {"MambaLM::step", "logits"});
  expect_error([&] { lm.generate({}, 3); }, {"prompt"});
  typename MambaLM<T>::State empty;
  expect_error([&] { lm.step(3, empty, logits); }, {"state"});
}

}  // namespace
}  // namespace ssm::test
