// The Mamba language model: golden logits and greedy continuation of the reference's tiny model,
// step against forward, chunked prefill, tied and untied heads, F16 / BF16 checkpoints, and clear
// errors for missing or misshaped tensors and bad config.json files.
#include "test_support.hpp"

#include "ssm/models/mamba_lm.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>

namespace ssm::test {
namespace {

namespace fs = std::filesystem;

template <class T>
class MambaLMTest : public ::testing::Test {};
TYPED_TEST_SUITE(MambaLMTest, Scalars);

const std::string kDir = data_path("mamba_lm");

std::vector<std::int64_t> golden_ids(const char* array) { return golden("mamba_lm", array).values<std::int64_t>(); }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A fresh directory under the system's temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("ssm_mamba_lm_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

/// The golden checkpoint's tensors, as F32 values, for rewriting with changes.
std::vector<io::TensorToWrite> golden_tensors() {
  const auto file = io::SafetensorsFile::read(kDir + "/model.safetensors");
  std::vector<io::TensorToWrite> out;
  for (const auto& name : file.names()) out.push_back({name, file.info(name).shape, file.values<float>(name)});
  return out;
}

void write_checkpoint(const std::string& dir, const std::vector<io::TensorToWrite>& tensors,
                      const std::string& config = read_text(kDir + "/config.json")) {
  io::write_safetensors(dir + "/model.safetensors", tensors);
  std::ofstream(dir + "/config.json") << config;
}

/// Expects ssm::error whose message contains every fragment.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ssm::error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

TYPED_TEST(MambaLMTest, GoldenLogits) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  EXPECT_EQ(lm.vocab_size(), 64);
  EXPECT_EQ(lm.config().n_layer, 2);
  EXPECT_EQ(lm.config().block.rank(), 2);  // "auto": ceil(32 / 16)
  const MatrixX<T> logits = lm.forward(golden_ids("input_ids"));
  SSM_EXPECT_NEAR_REL(logits, golden("mamba_lm", "logits").matrix<T>(), 1e-4);
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
  {  // token by token
    auto state = lm.make_state();
    MatrixX<T> stepped(L, lm.vocab_size());
    for (Index t = 0; t < L; ++t) stepped.row(t) = lm.step(ids[std::size_t(t)], state).transpose();
    SSM_EXPECT_NEAR_REL(stepped, whole, tol);
  }
  {  // chunks, one shorter than d_conv, then steps
    auto state = lm.make_state();
    MatrixX<T> joined(L, lm.vocab_size());
    Index at = 0;
    for (Index len : {2, 9, 1, 12}) {
      const std::vector<std::int64_t> chunk(ids.begin() + at, ids.begin() + at + len);
      joined.middleRows(at, len) = lm.forward(chunk, state);
      at += len;
    }
    for (; at < L; ++at) joined.row(at) = lm.step(ids[std::size_t(at)], state).transpose();
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
    EXPECT_EQ(half.embedding(), full.embedding()) << dtype;
    EXPECT_EQ(half.layers()[1].mixer.params().x_proj_weight, full.layers()[1].mixer.params().x_proj_weight);
    EXPECT_EQ(half.forward(ids), full.forward(ids)) << dtype;
    // Rounding the weights moved the logits, but not far.
    SSM_EXPECT_NEAR_REL(half.forward(ids), golden("mamba_lm", "logits").matrix<float>(), dtype == "F16" ? 1e-2 : 5e-2);
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
      {with([](auto& j) { j["ssm_cfg"]["layer"] = "Mamba2"; }), {"ssm_cfg.layer", "Mamba2"}},
      {with([](auto& j) { j["rms_norm"] = false; }), {"rms_norm"}},
      {with([](auto& j) { j["norm_epsilon"] = -1; }), {"norm_epsilon"}},
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
  const auto d = MambaLMConfig::parse(R"({"d_model": 40, "n_layer": 1, "vocab_size": 7, "ssm_cfg": {"dt_rank": 5}})");
  EXPECT_EQ(d.block.rank(), 5);
  EXPECT_EQ(d.padded_vocab_size(), 7);
}

TYPED_TEST(MambaLMTest, BadTokensAndStatesAreRejected) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kDir);
  expect_error([&] { lm.forward({1, 2, 64}); }, {"tokens", "[0, 64)", "64 at position 2"});
  auto state = lm.make_state();
  expect_error([&] { lm.step(-1, state); }, {"MambaLM::step", "token", "-1"});
  expect_error([&] { lm.generate({}, 3); }, {"prompt"});
  typename MambaLM<T>::State empty;
  expect_error([&] { lm.step(3, empty); }, {"state"});
}

}  // namespace
}  // namespace ssm::test
