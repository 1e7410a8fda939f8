// Checkpoints as they are published: the memory-mapped safetensors reader (every dtype of the format,
// in-place views, the header checks: overlaps, misalignment, sizes), sharded checkpoints through
// model.safetensors.index.json (equal to the unsharded one; an index that names a missing shard or
// disagrees with the shards is refused), and the Hugging Face layouts (MambaForCausalLM,
// Mamba2ForCausalLM, FalconMambaForCausalLM): the same weights under their names give the same logits as
// the reference layout with the same semantics, and a config.json that contradicts itself or the tensors
// is refused naming the field or tensor.
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/io/checkpoint.hpp"
#include "ssm/models/mamba_lm.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

namespace ssm::test {
namespace {


void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

TEST(MappedSafetensors, ReadsWhatTheBytesInMemoryRead) {
  TempDir dir("ssm_mapped");
  // One tensor of 2.4 MB whose rows (300000 floats) are larger than the reader's 1 MB window, one that spans
  // several windows of whole rows, and small ones.
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal;
  auto random_values = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(gen);
    return v;
  };
  const std::vector<io::TensorToWrite> tensors = {{"wide", {2, 300000}, random_values(600000)},
                                                  {"tall", {3000, 129}, random_values(3000 * 129)},
                                                  {"conv", {5, 1, 3}, random_values(15)},
                                                  {"scalar", {}, random_values(1)}};
  const std::string path = dir.str() + "/model.safetensors";
  io::write_safetensors(path, tensors);
  const auto mapped = io::SafetensorsFile::read(path);
  EXPECT_TRUE(mapped.is_mapped());
  for (const auto& t : tensors) {
    const Index rows = t.shape.empty() ? 1 : t.shape[0], cols = Index(t.values.size()) / std::max<Index>(rows, 1);
    const MatrixX<float> expected = Eigen::Map<const RowMatrixX<float>>(t.values.data(), rows, cols);
    EXPECT_EQ(mapped.matrix<float>(t.name), expected) << t.name;
    EXPECT_EQ(mapped.matrix<double>(t.name), expected.cast<double>()) << t.name;
    EXPECT_EQ(mapped.values<float>(t.name), t.values) << t.name;
    // The view is the file's bytes themselves, and reading again after the pages were released is unchanged.
    const auto view = mapped.view<float>(t.name);
    EXPECT_EQ(MatrixX<float>(view), expected) << t.name;
    EXPECT_EQ(mapped.matrix<float>(t.name), expected) << t.name;
  }
  EXPECT_EQ(mapped.view<float>("wide").data(), mapped.view<float>("wide").data());
  expect_error([&] { mapped.view<double>("tall"); }, {"'tall'", "F64", "F32"});
  // A copy shares the mapping and outlives the original.
  io::SafetensorsFile copy = mapped;
  { const auto gone = std::move(mapped); }
  EXPECT_EQ(copy.values<float>("conv"), tensors[2].values);
}

TEST(MappedSafetensors, EveryDtypeOfTheFormatIsRecognised) {
  std::vector<unsigned char> data;
  auto put = [&](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) data.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xff));
  };
  put(0xff, 1), put(0x01, 1);                   // U8 [255, 1]          [0, 2)
  put(0x80, 1), put(0x7f, 1);                   // I8 [-128, 127]       [2, 4)
  put(0x8000, 2), put(0x0005, 2);               // I16 [-32768, 5]      [4, 8)
  put(0xffff, 2), put(0, 2);                    // U16 [65535, 0]       [8, 12)
  put(0xffffffff, 4);                           // U32 [4294967295]     [12, 16)
  put(0x7fffffffffffffffull, 8);                // U64 [2^63 - 1]       [16, 24)
  put(0x8000000000000000ull, 8);                // U64 [2^63]           [24, 32)
  put(1, 1), put(0, 1);                         // BOOL [1, 0]          [32, 34)
  put(0x38, 1), put(0x38, 1);                   // F8_E4M3              [34, 36)
  put(0x12, 1);                                 // F4, two elements     [36, 37)
  const std::string header =
      R"({"u8": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
      R"( "i8": {"dtype": "I8", "shape": [2], "data_offsets": [2, 4]},)"
      R"( "i16": {"dtype": "I16", "shape": [2], "data_offsets": [4, 8]},)"
      R"( "u16": {"dtype": "U16", "shape": [1, 2], "data_offsets": [8, 12]},)"
      R"( "u32": {"dtype": "U32", "shape": [1], "data_offsets": [12, 16]},)"
      R"( "u64": {"dtype": "U64", "shape": [1], "data_offsets": [16, 24]},)"
      R"( "u64big": {"dtype": "U64", "shape": [1], "data_offsets": [24, 32]},)"
      R"( "bool": {"dtype": "BOOL", "shape": [2], "data_offsets": [32, 34]},)"
      R"( "f8": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [34, 36]},)"
      R"( "f4": {"dtype": "F4", "shape": [2], "data_offsets": [36, 37]}})";
  const auto f = io::SafetensorsFile::parse(raw_safetensors(header, data));
  EXPECT_EQ(f.integers("u8"), (std::vector<std::int64_t>{255, 1}));
  EXPECT_EQ(f.integers("i8"), (std::vector<std::int64_t>{-128, 127}));
  EXPECT_EQ(f.integers("i16"), (std::vector<std::int64_t>{-32768, 5}));
  EXPECT_EQ(f.integers("u16"), (std::vector<std::int64_t>{65535, 0}));
  EXPECT_EQ(f.integers("u32"), (std::vector<std::int64_t>{4294967295LL}));
  EXPECT_EQ(f.integers("u64"), (std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::max()}));
  EXPECT_EQ(f.integers("bool"), (std::vector<std::int64_t>{1, 0}));
  EXPECT_EQ(f.info("f8").dtype, io::TensorDtype::F8_E4M3);
  EXPECT_EQ(f.info("f4").dtype, io::TensorDtype::F4);
  expect_error([&] { f.integers("u64big"); }, {"'u64big'", "int64"});
  expect_error([&] { f.values<float>("f8"); }, {"'f8'", "F8_E4M3"});
  expect_error([&] { f.matrix<double>("f4"); }, {"'f4'", "F4"});
  expect_error([&] { f.values<float>("u8"); }, {"'u8'", "U8", "integers()"});
  expect_error([&] { f.integers("f8"); }, {"'f8'", "F8_E4M3"});
}

TEST(MappedSafetensors, TheHeaderIsCheckedBeforeAnyTensorIsRead) {
  const std::vector<unsigned char> sixteen(16, 0);
  auto refused = [&](const std::string& header, const std::vector<std::string>& fragments) {
    expect_error([&] { io::SafetensorsFile::parse(raw_safetensors(header, sixteen)); }, fragments);
  };
  refused(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
          {"overlap", "'a'", "'b'"});
  refused(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}})", {"'a'", "misaligned", "multiple of 4"});
  refused(R"({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})", {"'a'", "data_offsets", "16"});
  refused(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", {"'a'", "(3)", "F32"});
  refused(R"({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}})", {"'a'", "dtype", "F7"});
  refused(R"({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}})", {"'a'", "F4"});
  // Shared bytes are refused even when one tensor is inside the other; empty tensors share nothing.
  refused(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
          {"overlap"});
  EXPECT_NO_THROW(io::SafetensorsFile::parse(raw_safetensors(
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}})",
      sixteen)));
  // A mapped file that was cut short is refused the same way as bytes in memory.
  TempDir dir("ssm_mapped");
  const auto whole = io::make_safetensors({{"w", {4, 4}, std::vector<float>(16, 1.0f)}});
  for (const std::size_t keep : {std::size_t(0), std::size_t(7), whole.size() / 2, whole.size() - 1}) {
    write_bytes(dir.str() + "/cut.safetensors", std::vector<unsigned char>(whole.begin(), whole.begin() + std::ptrdiff_t(keep)));
    EXPECT_THROW(io::SafetensorsFile::read(dir.str() + "/cut.safetensors"), ssm::error) << keep;
  }
  expect_error([&] { io::SafetensorsFile::read(dir.str()); }, {dir.str(), "regular file"});
}

const std::string kMamba = data_path("mamba_lm");
const std::string kMamba2 = data_path("mamba2_lm");

/// A checkpoint directory's tensors split over `shards` files with an index, round robin in name order.
void write_sharded(const std::string& dir, const std::vector<io::TensorToWrite>& tensors, int shards) {
  std::vector<std::vector<io::TensorToWrite>> parts(static_cast<std::size_t>(shards));
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::size_t k = i % std::size_t(shards);
    parts[k].push_back(tensors[i]);
    index["weight_map"][tensors[i].name] = ssm::detail::concat("model-0000", k + 1, "-of-0000", shards, ".safetensors");
  }
  for (int k = 0; k < shards; ++k)
    io::write_safetensors(ssm::detail::concat(dir, "/model-0000", k + 1, "-of-0000", shards, ".safetensors"), parts[std::size_t(k)]);
  std::ofstream(dir + "/" + io::Checkpoint::index_name) << index.dump(1);
}

template <class T>
class CheckpointLayoutTest : public ::testing::Test {};
TYPED_TEST_SUITE(CheckpointLayoutTest, Scalars);

/// Logits of `lm` for a fixed prompt (also stepping one token on, so that step is covered too).
template <class T>
MatrixX<T> probe_logits(const MambaLM<T>& lm) {
  std::vector<std::int64_t> tokens;
  for (int i = 0; i < 9; ++i) tokens.push_back((7 * i + 3) % 60);
  auto state = lm.initial_state();
  MatrixX<T> logits = lm.forward(tokens, state);
  VectorX<T> next(lm.vocab_size());
  lm.step(5, state, next);
  logits.conservativeResize(logits.rows() + 1, Eigen::NoChange);
  logits.row(logits.rows() - 1) = next.transpose();
  return logits;
}

TYPED_TEST(CheckpointLayoutTest, ShardedEqualsUnsharded) {
  using T = TypeParam;
  for (const std::string& source : {kMamba, kMamba2}) {
    TempDir dir("ssm_sharded");
    write_sharded(dir.str(), read_tensors(source + "/model.safetensors"), 3);
    std::ofstream(dir.str() + "/config.json") << read_text(source + "/config.json");
    const auto checkpoint = io::Checkpoint::open(dir.str());
    EXPECT_EQ(checkpoint.files().size(), 3u);
    EXPECT_EQ(probe_logits(MambaLM<T>::load(dir.str())), probe_logits(MambaLM<T>::load(source))) << source;
    // In every weight format too: the same values give the same encoding, whatever file holds them.
    for (const WeightFormat f : {WeightFormat::bf16, WeightFormat::f16, WeightFormat::q8})
      EXPECT_EQ(probe_logits(MambaLM<T>::load(dir.str(), f)), probe_logits(MambaLM<T>::load(source, f)))
          << source << " " << weight_format_name(f);
  }
}

TEST(ShardedCheckpoint, AnIndexThatDisagreesWithTheShardsIsRefused) {
  const auto tensors = read_tensors(kMamba + "/model.safetensors");
  auto with_index = [&](const std::function<void(nlohmann::json&)>& edit, const std::vector<std::string>& fragments) {
    TempDir dir("ssm_sharded");
    write_sharded(dir.str(), tensors, 2);
    nlohmann::json index = nlohmann::json::parse(read_text(dir.str() + "/" + io::Checkpoint::index_name));
    edit(index);
    std::ofstream(dir.str() + "/" + io::Checkpoint::index_name) << index.dump();
    expect_error([&] { io::Checkpoint::open(dir.str()); }, fragments);
  };
  const std::string norm_f = "backbone.norm_f.weight";
  with_index([&](nlohmann::json& j) { j["weight_map"][norm_f] = "model-00009-of-00009.safetensors"; },
             {"model-00009-of-00009.safetensors", "cannot open"});
  with_index([&](nlohmann::json& j) { j["weight_map"]["backbone.extra"] = "model-00001-of-00002.safetensors"; },
             {"weight_map.backbone.extra", "no such tensor"});
  with_index([&](nlohmann::json& j) { j["weight_map"].erase(norm_f); }, {norm_f, "does not list"});
  with_index([&](nlohmann::json& j) {
    const std::string other = j["weight_map"][norm_f] == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors"
                                                                                             : "model-00001-of-00002.safetensors";
    j["weight_map"][norm_f] = other;
  }, {norm_f});
  with_index([&](nlohmann::json& j) { j["weight_map"][norm_f] = "../model-00001-of-00002.safetensors"; },
             {"weight_map." + norm_f, "file name"});
  with_index([&](nlohmann::json& j) { j["weight_map"][norm_f] = 3; }, {"weight_map." + norm_f});
  with_index([&](nlohmann::json& j) { j.erase("weight_map"); }, {"weight_map"});
  expect_error([] { io::Checkpoint::parse_index("not json", "index"); }, {"index", "JSON"});
}

/// The golden reference checkpoint's tensors under Hugging Face's names (only the embedding is renamed).
std::vector<io::TensorToWrite> hugging_face_tensors(const std::string& source) {
  auto tensors = read_tensors(source + "/model.safetensors");
  for (auto& t : tensors)
    if (t.name == "backbone.embedding.weight") t.name = "backbone.embeddings.weight";
  return tensors;
}

/// mamba_lm's sizes as a transformers MambaConfig / FalconMambaConfig would write them, with keys of theirs
/// that do not change the network.
nlohmann::json hugging_face_mamba_config(const char* model_type) {
  return {{"model_type", model_type},       {"architectures", {"MambaForCausalLM"}},
          {"hidden_size", 32},              {"num_hidden_layers", 2},
          {"vocab_size", 64},               {"state_size", 4},
          {"conv_kernel", 4},               {"expand", 2},
          {"intermediate_size", 64},        {"time_step_rank", "auto"},
          {"layer_norm_epsilon", 1e-5},     {"use_bias", false},
          {"use_conv_bias", true},          {"hidden_act", "silu"},
          {"tie_word_embeddings", true},    {"residual_in_fp32", true},
          {"bos_token_id", 0},              {"torch_dtype", "float32"},
          {"time_step_init_scheme", "random"}, {"use_cache", true}};
}

TYPED_TEST(CheckpointLayoutTest, HuggingFaceMambaIsTheReferenceModelUnderOtherNames) {
  using T = TypeParam;
  TempDir dir("ssm_hf");
  write_checkpoint(dir.str(), hugging_face_tensors(kMamba), hugging_face_mamba_config("mamba").dump());
  const auto hf = MambaLM<T>::load(dir.str());
  EXPECT_EQ(hf.config().layout, CheckpointLayout::hf_mamba);
  EXPECT_TRUE(hf.tied());
  EXPECT_EQ(probe_logits(hf), probe_logits(MambaLM<T>::load(kMamba)));
  EXPECT_EQ(probe_logits(MambaLM<T>::load(dir.str(), WeightFormat::q8)), probe_logits(MambaLM<T>::load(kMamba, WeightFormat::q8)));
  // The golden continuation, from the Hugging Face layout.
  const auto prompt = golden("mamba_lm", "input_ids").values<std::int64_t>();
  const auto expected = golden("mamba_lm", "generated").values<std::int64_t>();
  EXPECT_EQ(hf.generate(prompt, Index(expected.size())), expected);
}

TYPED_TEST(CheckpointLayoutTest, FalconMambaIsMambaWithTheNormsOfDtBAndC) {
  using T = TypeParam;
  TempDir dir("ssm_falcon");
  nlohmann::json config = hugging_face_mamba_config("falcon_mamba");
  config["architectures"] = {"FalconMambaForCausalLM"};
  config["mixer_rms_eps"] = 1e-3;
  write_checkpoint(dir.str(), hugging_face_tensors(kMamba), config.dump());
  const auto falcon = MambaLM<T>::load(dir.str());
  EXPECT_EQ(falcon.config().layout, CheckpointLayout::hf_falcon_mamba);
  EXPECT_TRUE(falcon.config().block.dt_bc_norm);
  EXPECT_EQ(falcon.config().block.dt_bc_norm_eps, 1e-3);
  // The same weights in the reference layout with the norms switched on: the same model (the norms
  // themselves are checked against a long-double recomputation in test_mamba_block).
  MambaLMConfig reference = MambaLMConfig::parse(read_text(kMamba + "/config.json"));
  reference.block.dt_bc_norm = true;
  reference.block.dt_bc_norm_eps = 1e-3;
  const auto file = io::SafetensorsFile::read(kMamba + "/model.safetensors");
  EXPECT_EQ(probe_logits(falcon), probe_logits(MambaLM<T>::from_safetensors(reference, file)));
  // And the norms change the result: without them it is plain Mamba.
  EXPECT_GT((probe_logits(falcon) - probe_logits(MambaLM<T>::load(kMamba))).cwiseAbs().maxCoeff(), T(1e-3));
  config.erase("mixer_rms_eps");
  EXPECT_EQ(MambaLMConfig::parse(config.dump()).block.dt_bc_norm_eps, 1e-6);  // transformers' default
}

nlohmann::json hugging_face_mamba2_config() {
  // mamba2_lm's sizes: d_model 64, expand 2, headdim 16 (8 heads), 2 groups, d_state 16, vocab 100 padded to 112.
  return {{"model_type", "mamba2"},        {"architectures", {"Mamba2ForCausalLM"}},
          {"hidden_size", 64},             {"num_hidden_layers", 2},
          {"vocab_size", 112},             {"state_size", 16},
          {"conv_kernel", 4},              {"expand", 2},
          {"head_dim", 16},                {"num_heads", 8},
          {"n_groups", 2},                 {"layer_norm_epsilon", 1e-5},
          {"use_bias", false},             {"use_conv_bias", true},
          {"hidden_act", "silu"},          {"tie_word_embeddings", true},
          {"rms_norm", true},              {"chunk_size", 256},
          {"time_step_rank", 4},           {"time_step_min", 0.001}};
}

TYPED_TEST(CheckpointLayoutTest, HuggingFaceMamba2NormalisesOverAllChannels) {
  using T = TypeParam;
  TempDir dir("ssm_hf2");
  // Python's json.dump writes the default time_step_limit (0.0, inf) with a bare Infinity.
  std::string text = hugging_face_mamba2_config().dump();
  text.insert(text.size() - 1, R"(, "time_step_limit": [0.0, Infinity])");
  write_checkpoint(dir.str(), hugging_face_tensors(kMamba2), text);
  const auto hf = MambaLM<T>::load(dir.str());
  EXPECT_EQ(hf.config().layout, CheckpointLayout::hf_mamba2);
  EXPECT_EQ(hf.config().block2.norm_groups, 1);
  EXPECT_EQ(hf.config().block2.dt_limit_max, std::numeric_limits<double>::infinity());
  // transformers' gated norm runs over all d_ssm channels, not per group as the reference's: the reference
  // model with norm_groups 1 is the same model (norm_groups itself is checked in test_mamba2_block) ...
  MambaLMConfig reference = MambaLMConfig::parse(read_text(kMamba2 + "/config.json"));
  const auto file = io::SafetensorsFile::read(kMamba2 + "/model.safetensors");
  const MatrixX<T> grouped = probe_logits(MambaLM<T>::from_safetensors(reference, file));
  reference.block2.norm_groups = 1;
  EXPECT_EQ(probe_logits(hf), probe_logits(MambaLM<T>::from_safetensors(reference, file)));
  // ... and with 2 groups the two differ.
  EXPECT_GT((probe_logits(hf) - grouped).cwiseAbs().maxCoeff(), T(1e-4));
}

TEST(HuggingFaceLayouts, HeadsFollowTieWordEmbeddings) {
  auto tensors = hugging_face_tensors(kMamba);
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [](const auto& t) { return t.name == "lm_head.weight"; }),
                tensors.end());  // the golden file stores the tied head's copy
  io::TensorToWrite head{"lm_head.weight", {64, 32}, std::vector<float>(64 * 32)};
  for (std::size_t i = 0; i < head.values.size(); ++i) head.values[i] = float(i % 13) / 13.0f;
  nlohmann::json config = hugging_face_mamba_config("mamba");
  {  // tied: a stored lm_head.weight is not used (transformers ties it to the embedding on load)
    TempDir dir("ssm_hf");
    auto with_head = tensors;
    with_head.push_back(head);
    write_checkpoint(dir.str(), with_head, config.dump());
    const auto lm = MambaLM<float>::load(dir.str());
    EXPECT_TRUE(lm.tied());
  }
  config["tie_word_embeddings"] = false;
  {  // untied: lm_head.weight is the head, and required
    TempDir dir("ssm_hf");
    auto with_head = tensors;
    with_head.push_back(head);
    write_checkpoint(dir.str(), with_head, config.dump());
    const auto lm = MambaLM<float>::load(dir.str());
    EXPECT_FALSE(lm.tied());
    EXPECT_EQ(lm.lm_head().decode(), (Eigen::Map<const RowMatrixX<float>>(head.values.data(), 64, 32)).eval());
    TempDir bare("ssm_hf");
    write_checkpoint(bare.str(), tensors, config.dump());
    expect_error([&] { MambaLM<float>::load(bare.str()); }, {"lm_head.weight"});
  }
}

TEST(HuggingFaceLayouts, ConfigsThatContradictThemselvesOrTheTensorsAreRefused) {
  auto refused = [](const nlohmann::json& config, const std::vector<std::string>& fragments) {
    expect_error([&] { MambaLMConfig::parse(config.dump(), "config.json"); }, fragments);
  };
  auto v1 = hugging_face_mamba_config("mamba");
  auto edit = [](nlohmann::json j, const char* key, const nlohmann::json& value) {
    j[key] = value;
    return j;
  };
  refused(edit(v1, "intermediate_size", 0), {"intermediate_size", ">= 1"});
  // intermediate_size, when given, is d_inner whatever expand says (tiiuae/falcon-mamba-7b: expand 16,
  // intermediate_size 2 hidden_size), as transformers sets it after deriving it from expand.
  EXPECT_EQ(MambaLMConfig::parse(edit(v1, "intermediate_size", 48).dump()).block.d_inner(), 48);
  EXPECT_EQ(MambaLMConfig::parse(edit(edit(v1, "expand", 16), "intermediate_size", 64).dump()).block.d_inner(), 64);
  for (const Index width : {Index(7), Index(33), Index(95), Index(1000)})
    EXPECT_EQ(MambaLMConfig::parse(edit(edit(v1, "hidden_size", 5 + width % 3), "intermediate_size", width).dump()).block.d_inner(),
              width);
  auto no_expand = v1;
  no_expand.erase("expand");
  no_expand.erase("intermediate_size");
  EXPECT_EQ(MambaLMConfig::parse(no_expand.dump()).block.d_inner(), 64);  // transformers' default expand 2
  refused(edit(v1, "hidden_act", "gelu"), {"hidden_act", "silu"});
  refused(edit(v1, "model_type", "llama"), {"model_type", "llama"});
  refused(edit(v1, "state_size", -1), {"state_size"});
  refused(edit(v1, "time_step_rank", "big"), {"time_step_rank"});
  refused(edit(v1, "layer_norm_epsilon", 0), {"layer_norm_epsilon"});
  auto v2 = hugging_face_mamba2_config();
  refused(edit(v2, "num_heads", 6), {"num_heads", "128 / 16"});
  refused(edit(v2, "n_groups", 3), {"n_groups", "8"});
  refused(edit(v2, "expand", 1.5), {"expand"});
  refused(edit(v2, "time_step_limit", nlohmann::json::array({0.5, 0.1})), {"time_step_limit"});
  // The architectures entry alone identifies the layout.
  auto by_class = v1;
  by_class.erase("model_type");
  EXPECT_EQ(MambaLMConfig::parse(by_class.dump()).layout, CheckpointLayout::hf_mamba);
  // A config whose sizes do not fit the tensors names the tensor.
  TempDir dir("ssm_hf");
  write_checkpoint(dir.str(), hugging_face_tensors(kMamba), edit(v1, "state_size", 8).dump());
  expect_error([&] { MambaLM<float>::load(dir.str()); }, {"x_proj.weight", "(18, 64)", "(10, 64)"});
  // Reference names under a Hugging Face config are refused by the embedding's name.
  TempDir wrong("ssm_hf");
  write_checkpoint(wrong.str(), read_tensors(kMamba + "/model.safetensors"), v1.dump());
  expect_error([&] { MambaLM<float>::load(wrong.str()); }, {"backbone.embeddings.weight"});
}

}  // namespace
}  // namespace ssm::test
