// The language model with Mamba-2 mixers (config.json ssm_cfg.layer "Mamba2"): the official tiny
// model's logits and greedy continuation, step against the chunked forward, chunked prefill, every
// Mamba-2 option of ssm_cfg loaded from a checkpoint (d_ssm < d_inner, D per channel, norm order, no
// norm, biases, no conv bias, dt_limit), float against double, and clear errors for a bad ssm_cfg,
// missing, misshaped or unused tensors, and a state of another model.
#include "checkpoint_support.hpp"
#include "lm_batch_support.hpp"
#include "test_support.hpp"

#include "ssm/models/mamba_lm.hpp"

#include <nlohmann/json.hpp>

#include <functional>

namespace ssm::test {
namespace {

template <class T>
class Mamba2LMTest : public ::testing::Test {};
TYPED_TEST_SUITE(Mamba2LMTest, Scalars);

const std::string kDir = data_path("mamba2_lm");

std::vector<std::int64_t> golden_ids(const char* array) { return golden("mamba2_lm", array).values<std::int64_t>(); }

std::vector<io::TensorToWrite> golden_tensors() { return read_tensors(kDir + "/model.safetensors"); }

using test::write_checkpoint;
/// A checkpoint directory with the golden config.json.
void write_checkpoint(const std::string& dir, const std::vector<io::TensorToWrite>& tensors) {
  write_checkpoint(dir, tensors, read_text(kDir + "/config.json"));
}

/// Checkpoint tensors for a Mamba-2 config: each mixer from the reference's initialisation
/// (Mamba2::initialise), with D, the norm weights, the biases and dt_bias perturbed so that no
/// parameter is a neutral 1 or 0; embedding and norms random.
std::vector<io::TensorToWrite> synthetic_tensors(const MambaLMConfig& c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<io::TensorToWrite> out;
  auto add = [&](const std::string& name, std::vector<Index> shape, const MatrixX<double>& m) {
    // PyTorch's row-major order: m is rows x cols of the (first dim, rest) view.
    std::vector<float> v;
    v.reserve(std::size_t(m.size()));
    for (Index r = 0; r < m.rows(); ++r)
      for (Index k = 0; k < m.cols(); ++k) v.push_back(float(m(r, k)));
    out.push_back({name, std::move(shape), std::move(v)});
  };
  auto noisy = [&](Index rows, Index cols, double scale, double offset) {
    MatrixX<double> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = offset + scale * normal(gen);
    return m;
  };
  const Mamba2Config& b = c.block2;
  const Index dm = c.d_model, V = c.padded_vocab_size();
  add("backbone.embedding.weight", {V, dm}, noisy(V, dm, 0.5, 0));
  for (Index i = 0; i < c.n_layer; ++i) {
    const std::string pre = ssm::detail::concat("backbone.layers.", i, ".");
    const std::string mix = pre + "mixer.";
    const auto p = Mamba2<double>::initialise(b, gen).params();
    add(pre + "norm.weight", {dm}, noisy(dm, 1, 0.1, 1));
    add(mix + "in_proj.weight", {b.d_in_proj(), dm}, p.in_proj_weight);
    if (b.bias) add(mix + "in_proj.bias", {b.d_in_proj()}, noisy(b.d_in_proj(), 1, 0.3, 0));
    add(mix + "conv1d.weight", {b.conv_dim(), 1, b.d_conv}, p.conv1d_weight);
    if (b.conv_bias) add(mix + "conv1d.bias", {b.conv_dim()}, p.conv1d_bias);
    add(mix + "dt_bias", {b.nheads()}, p.dt_bias + noisy(b.nheads(), 1, 0.5, 0));
    add(mix + "A_log", {b.nheads()}, p.A_log);
    add(mix + "D", {p.D.size()}, noisy(p.D.size(), 1, 0.3, 1));
    if (b.rmsnorm) add(mix + "norm.weight", {b.ssm_channels()}, noisy(b.ssm_channels(), 1, 0.2, 1));
    add(mix + "out_proj.weight", {dm, b.d_inner()}, p.out_proj_weight);
    if (b.bias) add(mix + "out_proj.bias", {dm}, noisy(dm, 1, 0.3, 0));
  }
  add("backbone.norm_f.weight", {dm}, noisy(dm, 1, 0.1, 1));
  return out;
}

/// Logits of every position by steps only (the recurrence), from a fresh state.
template <class T>
MatrixX<T> stepped_logits(const MambaLM<T>& lm, const std::vector<std::int64_t>& ids) {
  auto state = lm.initial_state();
  MatrixX<T> out(Index(ids.size()), lm.vocab_size());
  VectorX<T> logits(lm.vocab_size());
  for (std::size_t t = 0; t < ids.size(); ++t) {
    lm.step(ids[t], state, logits);
    out.row(Index(t)) = logits.transpose();
  }
  return out;
}

TYPED_TEST(Mamba2LMTest, GoldenLogits) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  EXPECT_EQ(lm.config().mixer, MambaMixer::mamba2);
  EXPECT_EQ(lm.vocab_size(), 112);  // 100 padded to a multiple of 16
  const Mamba2Config& b = lm.config().block2;
  EXPECT_EQ(b.d_state, 16);
  EXPECT_EQ(b.headdim, 16);
  EXPECT_EQ(b.ngroups, 2);
  EXPECT_EQ(b.nheads(), 8);  // 2 * 64 / 16
  EXPECT_TRUE(std::holds_alternative<Mamba2<T>>(lm.layers()[1].mixer));
  const MatrixX<T> logits = lm.forward(golden_ids("input_ids"));
  SSM_EXPECT_NEAR_REL(logits, golden("mamba2_lm", "logits").matrix<T>(), 1e-4);
  // Steps only, as the reference's step-only check in case.json.
  SSM_EXPECT_NEAR_REL(stepped_logits(lm, golden_ids("input_ids")), golden("mamba2_lm", "logits").matrix<T>(), 1e-4);
}

// Batched decoding: five streams at different positions stepped together (one matrix product per
// projection) give the logits of separate steps to rounding and the same greedy tokens.
TYPED_TEST(Mamba2LMTest, StepBatchEqualsSeparateStepsToRounding) {
  expect_step_batch_matches_steps(MambaLM<TypeParam>::load(kDir));
}

TYPED_TEST(Mamba2LMTest, GoldenGreedyContinuation) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  const auto prompt = golden_ids("input_ids");
  const auto expected = golden_ids("generated");
  EXPECT_EQ(lm.generate(prompt, Index(expected.size())), expected);
  // The logits each generated token was the argmax of: the prompt's last row, then one step per token.
  const MatrixX<T> expected_logits = golden("mamba2_lm", "generated_logits").matrix<T>();
  auto state = lm.initial_state();
  MatrixX<T> got(Index(expected.size()), lm.vocab_size());
  got.row(0) = lm.forward(prompt, state).row(Index(prompt.size()) - 1);
  VectorX<T> logits(lm.vocab_size());
  for (Index k = 1; k < Index(expected.size()); ++k) {
    lm.step(expected[std::size_t(k - 1)], state, logits);
    got.row(k) = logits.transpose();
  }
  SSM_EXPECT_NEAR_REL(got, expected_logits, 1e-4);
}

TYPED_TEST(Mamba2LMTest, StepEqualsForwardAndChunkedPrefillContinues) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  std::vector<std::int64_t> ids = golden_ids("input_ids");
  for (std::int64_t k = 0; k < 40; ++k) ids.push_back((k * 37 + 5) % 100);
  const Index L = Index(ids.size());
  const MatrixX<T> whole = lm.forward(ids);
  const double tol = 20 * double(scalar_traits<T>::epsilon) * L;
  SSM_EXPECT_NEAR_REL(stepped_logits(lm, ids), whole, tol);
  // Chunks that do not line up with the SSD chunk (64) or d_conv (4), then steps.
  auto state = lm.initial_state();
  MatrixX<T> joined(L, lm.vocab_size());
  Index at = 0;
  for (Index len : {3, 17, 1, 22}) {
    const std::vector<std::int64_t> chunk(ids.begin() + at, ids.begin() + at + len);
    joined.middleRows(at, len) = lm.forward(chunk, state);
    at += len;
  }
  VectorX<T> logits(lm.vocab_size());
  for (; at < L; ++at) {
    lm.step(ids[std::size_t(at)], state, logits);
    joined.row(at) = logits.transpose();
  }
  SSM_EXPECT_NEAR_REL(joined, whole, tol);
  state.reset();
  EXPECT_EQ(lm.forward(ids, state), whole);
}

TYPED_TEST(Mamba2LMTest, PrefillIsTheLastRowOfForwardAndLeavesTheSameState) {
  // prefill is model code shared by both mixers; the Mamba-1 model reaches it through generate.
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  std::vector<std::int64_t> ids = golden_ids("input_ids");
  for (std::int64_t k = 0; k < 70; ++k) ids.push_back((k * 29 + 3) % 100);  // longer than one SSD chunk
  auto by_prefill = lm.initial_state(), by_forward = lm.initial_state();
  const VectorX<T> last = lm.prefill(ids, by_prefill);
  const MatrixX<T> all = lm.forward(ids, by_forward);
  // The same hidden row times the head, as a matrix-vector instead of a matrix-matrix product.
  SSM_EXPECT_NEAR_REL(last, all.row(all.rows() - 1).transpose(), 8 * double(scalar_traits<T>::epsilon));
  // Identical layer computations, so identical states: the next step's logits are bit-equal.
  VectorX<T> next_a(lm.vocab_size()), next_b(lm.vocab_size());
  lm.step(7, by_prefill, next_a);
  lm.step(7, by_forward, next_b);
  EXPECT_EQ(next_a, next_b);
  auto s = lm.initial_state();
  expect_error([&] { lm.prefill({}, s); }, {"MambaLM::prefill", "tokens", "at least one token"});
  expect_error([&] { lm.prefill({lm.vocab_size()}, s); }, {"MambaLM::prefill"});
}

TEST(Mamba2LM, FloatAgreesWithDouble) {
  // Same bound as the Mamba-1 model: float logits within 1e-4 of max |logit| of the double model.
  const auto ids = golden_ids("input_ids");
  SSM_EXPECT_NEAR_REL(MambaLM<float>::load(kDir).forward(ids).cast<double>(),
                      MambaLM<double>::load(kDir).forward(ids), 1e-4);
}

TYPED_TEST(Mamba2LMTest, EveryMixerOptionLoadsAndStepEqualsForward) {
  using T = TypeParam;
  // Each ssm_cfg exercises options the golden model does not: the gated-MLP split (d_ssm < d_inner),
  // D per channel, the other norm order, no norm (the scan gates), biases, no conv bias, dt_limit,
  // several groups, a d_conv other than 4. Checked: the tensors reach the mixer, and the chunked
  // forward equals the recurrence (steps) on a prompt longer than one SSD chunk.
  const std::vector<std::string> cfgs = {
      R"({"layer": "Mamba2", "d_state": 8, "headdim": 8, "d_ssm": 32, "D_has_hdim": true})",
      R"({"layer": "Mamba2", "d_state": 12, "headdim": 4, "ngroups": 4, "norm_before_gate": true, "bias": true})",
      R"({"layer": "Mamba2", "d_state": 8, "headdim": 16, "rmsnorm": false, "conv_bias": false, "d_conv": 3})",
      R"({"layer": "Mamba2", "d_state": 4, "headdim": 8, "expand": 3, "dt_limit": [0.05, 0.3], "chunk_size": 16,
          "A_init_range": [1, 4], "use_mem_eff_path": false, "conv_init": null})",
  };
  std::uint64_t seed = 11;
  std::vector<std::int64_t> ids;
  for (std::int64_t k = 0; k < 150; ++k) ids.push_back((k * 29 + 3) % 61);
  for (const std::string& ssm_cfg : cfgs) {
    SCOPED_TRACE(ssm_cfg);
    const std::string config_text = ssm::detail::concat(R"({"d_model": 24, "n_layer": 2, "vocab_size": 61, "ssm_cfg": )",
                                                        ssm_cfg, R"(, "pad_vocab_size_multiple": 8})");
    const MambaLMConfig config = MambaLMConfig::parse(config_text);
    ASSERT_EQ(config.mixer, MambaMixer::mamba2);
    const auto tensors = synthetic_tensors(config, seed++);
    TempDir dir;
    write_checkpoint(dir.str(), tensors, config_text);
    const auto lm = MambaLM<T>::load(dir.str());
    const auto& mixer = std::get<Mamba2<T>>(lm.layers()[1].mixer);
    const Mamba2Config& b = mixer.config();
    for (const auto& t : tensors) {
      const Eigen::Map<const VectorX<float>> v(t.values.data(), Index(t.values.size()));
      const auto& p = mixer.params();
      if (t.name == "backbone.layers.1.mixer.D") {
        EXPECT_EQ(p.D, v.template cast<T>());
      } else if (t.name == "backbone.layers.1.mixer.dt_bias") {
        EXPECT_EQ(p.dt_bias, v.template cast<T>());
      } else if (t.name == "backbone.layers.1.mixer.in_proj.bias") {
        EXPECT_EQ(p.in_proj_bias, v.template cast<T>());
      } else if (t.name == "backbone.layers.1.mixer.norm.weight") {
        EXPECT_EQ(p.norm_weight, v.template cast<T>());
      } else if (t.name == "backbone.layers.1.mixer.out_proj.weight") {  // (d_model, d_inner), row-major
        EXPECT_EQ(p.out_proj_weight(1, 2), T(v[b.d_inner() + 2]));
      }
    }
    EXPECT_EQ(b.d_model, 24);
    const MatrixX<T> whole = lm.forward(ids);
    ASSERT_TRUE(whole.allFinite());
    EXPECT_GT(whole.cwiseAbs().maxCoeff(), T(0.1));
    const double tol = std::is_same_v<T, double> ? 1e-11 : 2e-4;
    SSM_EXPECT_NEAR_REL(stepped_logits(lm, ids), whole, tol);
  }
}

TEST(Mamba2LM, DtLimitIsAppliedInTheModel) {
  // The same weights with and without a dt_limit give different logits (the clamp is not dropped
  // between config.json and the scan), and the limited model's steps still equal its forward.
  const auto base = R"({"d_model": 24, "n_layer": 1, "vocab_size": 40, "ssm_cfg": {"layer": "Mamba2",
      "d_state": 8, "headdim": 8%s}})";
  auto text = [&](const std::string& extra) {
    std::string s = base;
    return s.replace(s.find("%s"), 2, extra);
  };
  const auto tensors = synthetic_tensors(MambaLMConfig::parse(text("")), 5);
  TempDir free_dir, limited_dir;
  write_checkpoint(free_dir.str(), tensors, text(""));
  write_checkpoint(limited_dir.str(), tensors, text(R"(, "dt_limit": [0.2, 0.25])"));
  const auto free_lm = MambaLM<double>::load(free_dir.str());
  const auto limited = MambaLM<double>::load(limited_dir.str());
  EXPECT_EQ(std::get<Mamba2<double>>(limited.layers()[0].mixer).config().dt_limit_min, 0.2);
  std::vector<std::int64_t> ids;
  for (std::int64_t k = 0; k < 30; ++k) ids.push_back((k * 7 + 1) % 40);
  const MatrixX<double> a = free_lm.forward(ids), b = limited.forward(ids);
  EXPECT_GT((a - b).cwiseAbs().maxCoeff(), 1e-3 * a.cwiseAbs().maxCoeff());
  SSM_EXPECT_NEAR_REL(stepped_logits(limited, ids), b, 1e-11);
}

TEST(Mamba2LM, BadSsmCfgIsNamed) {
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
      {with([](auto& j) { j["ssm_cfg"]["dt_rank"] = 4; }), {"ssm_cfg.dt_rank", "no such option", "Mamba2"}},
      {with([](auto& j) { j["ssm_cfg"]["ngroups"] = 3; }), {"ssm_cfg.ngroups", "divisor of nheads", "8", "3"}},
      {with([](auto& j) { j["ssm_cfg"]["headdim"] = 24; }), {"ssm_cfg.headdim", "divisor of d_ssm = 128", "24"}},
      {with([](auto& j) { j["ssm_cfg"]["d_ssm"] = 256; }), {"ssm_cfg.d_ssm", "at most d_inner", "128", "256"}},
      {with([](auto& j) { j["ssm_cfg"]["d_ssm"] = 0; }), {"ssm_cfg.d_ssm", ">= 1", "0"}},
      {with([](auto& j) { j["ssm_cfg"]["expand"] = 1.5; }), {"ssm_cfg.expand", "an integer", "1.5"}},
      {with([](auto& j) { j["ssm_cfg"]["dt_limit"] = {0.3, 0.1}; }), {"ssm_cfg.dt_limit", "min <= max"}},
      {with([](auto& j) { j["ssm_cfg"]["dt_limit"] = 0.1; }), {"ssm_cfg.dt_limit", "two numbers"}},
      {with([](auto& j) { j["ssm_cfg"]["rmsnorm"] = "yes"; }), {"ssm_cfg.rmsnorm", "true or false"}},
      {with([](auto& j) { j["ssm_cfg"]["d_state"] = 0; }), {"ssm_cfg.d_state", ">= 1"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    TempDir dir;
    write_checkpoint(dir.str(), golden_tensors(), c.text);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, c.fragments);
  }
}

TEST(Mamba2LM, MissingMisshapedAndUnusedTensorsAreNamed) {
  // Missing: a Mamba-2-only tensor.
  {
    auto tensors = golden_tensors();
    tensors.erase(std::find_if(tensors.begin(), tensors.end(),
                               [](const auto& t) { return t.name == "backbone.layers.1.mixer.dt_bias"; }));
    TempDir dir;
    write_checkpoint(dir.str(), tensors);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {"backbone.layers.1.mixer.dt_bias"});
  }
  // Misshaped: D per channel where the config says per head.
  {
    auto tensors = golden_tensors();
    for (auto& t : tensors)
      if (t.name == "backbone.layers.0.mixer.D") {
        t.shape = {128};
        t.values.assign(128, 1.0f);
      }
    TempDir dir;
    write_checkpoint(dir.str(), tensors);
    expect_error([&] { MambaLM<float>::load(dir.str()); }, {"backbone.layers.0.mixer.D", "(8)", "(128)"});
  }
  // Unused: the gated norm's weight of a model configured without the norm.
  {
    auto j = nlohmann::json::parse(read_text(kDir + "/config.json"));
    j["ssm_cfg"]["rmsnorm"] = false;
    TempDir dir;
    write_checkpoint(dir.str(), golden_tensors(), j.dump());
    expect_error([&] { MambaLM<float>::load(dir.str()); },
                 {"backbone.layers.0.mixer.norm.weight", "not used", "Mamba2", "rmsnorm false"});
  }
}

TEST(Mamba2LM, StateOfAnotherModelIsRejected) {
  const auto lm2 = MambaLM<float>::load(kDir);
  const auto lm1 = MambaLM<float>::load(data_path("mamba_lm"));
  auto state1 = lm1.initial_state();  // two layers too, but Mamba-1 states
  ASSERT_EQ(state1.layers.size(), lm2.initial_state().layers.size());
  VectorX<float> logits(lm2.vocab_size());
  expect_error([&] { lm2.step(1, state1, logits); }, {"MambaLM::step", "state", "initial_state()"});
  expect_error([&] { lm2.forward({1, 2}, state1); }, {"MambaLM::forward", "state"});
  auto state2 = lm2.initial_state();
  expect_error([&] { lm2.step(112, state2, logits); }, {"token", "[0, 112)"});
}

TEST(Mamba2LM, LayersOfTheOtherMixerThanTheConfigSaysAreRefused) {
  const auto lm2 = MambaLM<float>::load(kDir);
  MambaLMConfig says_mamba1 = lm2.config();
  says_mamba1.mixer = MambaMixer::mamba1;
  expect_error([&] { MambaLM<float>(says_mamba1, lm2.embedding(), lm2.layers(), lm2.norm_f()); },
               {"MambaLM", "layers[i].mixer", "config.mixer is mamba1", "Mamba2"});
  // The same pieces under their own config build the same model.
  const MambaLM<float> rebuilt(lm2.config(), lm2.embedding(), lm2.layers(), lm2.norm_f());
  const std::vector<std::int64_t> ids = {1, 2, 3};
  EXPECT_EQ(rebuilt.forward(ids), lm2.forward(ids));
}

}  // namespace
}  // namespace ssm::test
