// The official S4 block (state-spaces/s4 models/s4/s4.py S4Block) run from its state_dict: every s4block_*
// golden case (forward, the shorter input, the official recurrent step and its final state) in double and
// float; step against forward, forward from a state continuing exactly, both modes; a bidirectional block
// refusing the recurrent mode; checkpoints with a key missing, renamed, reshaped, extra or of the wrong dtype
// refused with an error naming the key; a block inside a bigger state_dict (prefix); the initialiser.
#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none
#include "test_support.hpp"

#include "ssm/layers/s4_block.hpp"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

static_assert(ssm::is_layer_v<ssm::S4Block<float>> && ssm::is_layer_v<ssm::S4Block<double>>,
              "S4Block must satisfy the layer concept");

namespace ssm::test {
namespace {

namespace fs = std::filesystem;

template <class T>
class S4BlockTest : public ::testing::Test {};
TYPED_TEST_SUITE(S4BlockTest, Scalars);

const std::vector<std::string> kCases = {"s4block_dplr_legs", "s4block_nplr_s4yaml", "s4block_diag_inv_channels2",
                                         "s4block_diag_lin_bidir", "s4block_dplr_legs_channels2_bidir"};

/// Relative to the largest reference value: the brief's bounds, 1e-12 in double and 1e-5 in float.
template <class T>
double golden_tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T>
S4Block<T> load_case(const std::string& name) {
  return S4Block<T>::load_directory(data_path(name));
}

bool has_array(const std::string& name, const std::string& array) {
  return fs::exists(data_path(name + "/" + array + ".npy"));
}

/// Runs `step` over the rows of u from the zero state, returning the outputs (L x output_width).
template <class T>
MatrixX<T> run_steps(const S4Block<T>& block, const MatrixX<T>& u, typename S4Block<T>::State& state) {
  MatrixX<T> y(u.rows(), block.output_width());
  for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t).transpose(), state, y.row(t).transpose());
  return y;
}

/// The SSM state of a block's State (M x H).
template <class T>
const MatrixXc<T>& ssm_state(const S4Block<T>& block, const typename S4Block<T>::State& s) {
  return block.params().kernel == S4BlockKernel::dplr ? s.dplr.x : s.diagonal.x;
}

TYPED_TEST(S4BlockTest, GoldenForwardStepAndFinalState) {
  using T = TypeParam;
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const S4Block<T> block = load_case<T>(name);
    const io::NpyArray u = golden(name, "u"), y = golden(name, "y");
    ASSERT_EQ(u.shape.size(), 3u);
    EXPECT_EQ(block.channels(), u.shape[1]);
    EXPECT_EQ(block.output_width(), u.shape[1]);
    double worst = 0, worst_short = -1, worst_step = -1, worst_state = -1;  // -1: the case has no such array
    for (Index b = 0; b < u.shape[0]; ++b) {
      const MatrixX<T> ub = batch_as_LxH<T>(u, b);
      const MatrixX<double> yb = batch_as_LxH<double>(y, b);
      const MatrixX<T> out = block.forward(ub);
      SSM_EXPECT_NEAR_REL(out, yb, golden_tolerance<T>());
      worst = std::max(worst, (out.template cast<double>() - yb).cwiseAbs().maxCoeff() / yb.cwiseAbs().maxCoeff());
      if (has_array(name, "u_short")) {
        const MatrixX<T> us = batch_as_LxH<T>(golden(name, "u_short"), b);
        const MatrixX<double> ys = batch_as_LxH<double>(golden(name, "y_short"), b);
        const MatrixX<T> out_short = block.forward(us);
        SSM_EXPECT_NEAR_REL(out_short, ys, golden_tolerance<T>());
        worst_short = std::max(worst_short, (out_short.template cast<double>() - ys).cwiseAbs().maxCoeff() / ys.cwiseAbs().maxCoeff());
      }
      if (has_array(name, "y_step")) {
        const MatrixX<double> ys = batch_as_LxH<double>(golden(name, "y_step"), b);
        auto state = block.initial_state();
        const MatrixX<T> stepped = run_steps(block, ub, state);
        SSM_EXPECT_NEAR_REL(stepped, ys, golden_tolerance<T>());
        worst_step = std::max(worst_step, (stepped.template cast<double>() - ys).cwiseAbs().maxCoeff() / ys.cwiseAbs().maxCoeff());
        // The official final state: (H, M) complex for the diagonal kernel, (H, N) = [x, conj x] for DPLR.
        const io::NpyArray final_state = golden(name, "state_final");
        const Index H = final_state.shape[1], width = final_state.shape[2], M = block.modes();
        const auto flat = final_state.values<Complex<double>>();
        MatrixXc<double> expected(M, H), conj_half(M, H);
        for (Index h = 0; h < H; ++h)
          for (Index n = 0; n < M; ++n) {
            expected(n, h) = flat[std::size_t((b * H + h) * width + n)];
            if (width == 2 * M) conj_half(n, h) = std::conj(flat[std::size_t((b * H + h) * width + M + n)]);
          }
        if (width == 2 * M) {  // the official DPLR state is [x, conj x]
          SSM_EXPECT_NEAR_REL(conj_half, expected, 1e-14);
        }
        const MatrixXc<double> x = ssm_state(block, state).template cast<Complex<double>>();
        SSM_EXPECT_NEAR_REL(x, expected, golden_tolerance<T>());
        double scale = 0;
        for (Index h = 0; h < H; ++h)
          for (Index n = 0; n < M; ++n) scale = std::max(scale, std::abs(expected(n, h)));
        for (Index h = 0; h < H; ++h)
          for (Index n = 0; n < M; ++n) worst_state = std::max(worst_state, std::abs(x(n, h) - expected(n, h)) / scale);
      }
    }
    auto shown = [](double v) {
      std::ostringstream text;
      if (v < 0) text << "n/a"; else text << v;
      return text.str();
    };
    std::cout << "[ measured ] " << name << " (" << (std::is_same_v<T, float> ? "float" : "double") << "): y "
              << shown(worst) << ", y_short " << shown(worst_short) << ", y_step " << shown(worst_step)
              << ", state_final " << shown(worst_state) << " (max error / max |reference|)\n";
  }
}

TYPED_TEST(S4BlockTest, StepEqualsForwardAndForwardFromAStateContinues) {
  using T = TypeParam;
  // Unidirectional cases: the recurrence equals the convolution for L <= l_max (64 here).
  for (const std::string name : {"s4block_dplr_legs", "s4block_nplr_s4yaml", "s4block_diag_inv_channels2"}) {
    SCOPED_TRACE(name);
    const S4Block<T> block = load_case<T>(name);
    const MatrixX<T> u = batch_as_LxH<T>(golden(name, "u"), 1);
    const MatrixX<T> y = block.forward(u);
    auto state = block.initial_state();
    const MatrixX<T> stepped = run_steps(block, u, state);
    SSM_EXPECT_NEAR_REL(stepped, y, golden_tolerance<T>());
    for (const Mode mode : {Mode::recurrence, Mode::convolution}) {
      SCOPED_TRACE(mode_name(mode));
      auto s = block.initial_state();
      const Index L1 = 23;
      MatrixX<T> pieces(u.rows(), block.output_width());
      pieces.topRows(L1) = block.forward(u.topRows(L1), s, mode);
      pieces.bottomRows(u.rows() - L1) = block.forward(u.bottomRows(u.rows() - L1), s, mode);
      SSM_EXPECT_NEAR_REL(pieces, y, golden_tolerance<T>());
      SSM_EXPECT_NEAR_REL(ssm_state(block, s), ssm_state(block, state), golden_tolerance<T>());
    }
    // State::reset goes back to the zero state.
    state.reset();
    MatrixX<T> again(u.rows(), block.output_width());
    for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t).transpose(), state, again.row(t).transpose());
    EXPECT_EQ(again, stepped);
    // y may alias u (output width H here): step in place on a copy of the input.
    MatrixX<T> in_place = u;
    state.reset();
    for (Index t = 0; t < u.rows(); ++t) block.step(in_place.row(t).transpose(), state, in_place.row(t).transpose());
    EXPECT_EQ(in_place, stepped);
  }
}

TYPED_TEST(S4BlockTest, BidirectionalBlocksHaveNoRecurrentMode) {
  using T = TypeParam;
  for (const std::string name : {"s4block_diag_lin_bidir", "s4block_dplr_legs_channels2_bidir"}) {
    SCOPED_TRACE(name);
    const S4Block<T> block = load_case<T>(name);
    EXPECT_TRUE(block.bidirectional());
    auto state = block.initial_state();
    VectorX<T> u = VectorX<T>::Ones(block.channels()), y(block.output_width());
    try {
      block.step(u, state, y);
      ADD_FAILURE() << "a bidirectional block stepped";
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find("bidirectional"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("future inputs"), std::string::npos) << e.what();
    }
    EXPECT_THROW(block.forward(MatrixX<T>::Ones(5, block.channels()), state), ssm::error);
  }
}

/// The anti-causal half by its definition: the block's convolution against a direct sum with the row layers'
/// kernels, K1[j] multiplying u[t + 1 + j], for an input longer than l_max (the kernels truncated).
TYPED_TEST(S4BlockTest, BidirectionalConvolutionIsTheShiftedTwoSidedSum) {
  using T = double;
  const S4Block<T> block = load_case<T>("s4block_diag_lin_bidir");
  ASSERT_EQ(block.params().activation, nn::Activation::gelu);
  std::mt19937_64 gen(4);
  const Index L = 80, H = block.channels(), Lk = 64;
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  const MatrixX<T> k0 = block.kernel(0, Lk), k1 = block.kernel(1, Lk);
  const VectorX<T> D = block.params().diagonal[0].D;
  MatrixX<T> z(L, H);
  for (Index h = 0; h < H; ++h)
    for (Index t = 0; t < L; ++t) {
      long double acc = (long double)D(h) * u(t, h);
      for (Index j = 0; j < Lk && j <= t; ++j) acc += (long double)k0(j, h) * u(t - j, h);
      for (Index j = 0; j < Lk && t + 1 + j < L; ++j) acc += (long double)k1(j, h) * u(t + 1 + j, h);
      z(t, h) = T(acc);
    }
  const nn::Linear<T>& linear = *block.params().output_linear;
  const MatrixX<T> expected = nn::glu(linear.forward(nn::gelu(z)));
  SSM_EXPECT_NEAR_REL(block.forward(u), expected, 1e-12);
}

TYPED_TEST(S4BlockTest, StepAllocatesNothing) {
  using T = TypeParam;
  for (const std::string name : {"s4block_dplr_legs", "s4block_diag_inv_channels2"}) {
    SCOPED_TRACE(name);
    const S4Block<T> block = load_case<T>(name);
    const MatrixX<T> u = batch_as_LxH<T>(golden(name, "u"), 0);
    MatrixX<T> y(u.rows(), block.output_width());
    auto state = block.initial_state();
    std::string why;
    const long count = allocations_during(
        [&] {
          for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t).transpose(), state, y.row(t).transpose());
        },
        why);
    EXPECT_EQ(count, 0) << why;
    auto fresh = block.initial_state();
    EXPECT_EQ(y, run_steps(block, u, fresh));
  }
}

// --- checkpoints that must be refused -------------------------------------------------------------------

/// A safetensors file as its JSON header and raw data section, to edit and write back.
struct RawCheckpoint {
  nlohmann::json header;
  std::string data;

  static RawCheckpoint read(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[std::size_t(i)]);
    return {nlohmann::json::parse(bytes.substr(8, std::size_t(n))), bytes.substr(8 + std::size_t(n))};
  }

  /// Adds tensor `key` holding a copy of tensor `source`, its bytes appended to the data (the reader refuses
  /// tensors that share bytes), at an offset aligned for any dtype.
  void add_copy(const std::string& key, const std::string& source) {
    nlohmann::json entry = header[source];
    const std::size_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    data.append((8 - data.size() % 8) % 8, '\0');
    const std::size_t at = data.size();
    data += data.substr(begin, end - begin);
    entry["data_offsets"] = {at, at + (end - begin)};
    header[key] = entry;
  }

  /// Writes dir/model.safetensors and dir/config.json (the case's own config).
  void write(const std::string& dir, const std::string& config_case) const {
    fs::create_directories(dir);
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::ofstream file(dir + "/model.safetensors", std::ios::binary);
    const std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) file.put(static_cast<char>((n >> (8 * i)) & 0xff));
    file << text << data;
    file.close();
    fs::copy_file(data_path(config_case + "/config.json"), dir + "/config.json", fs::copy_options::overwrite_existing);
  }
};

std::string scratch_dir(const std::string& name) {
  return (fs::temp_directory_path() / ("ssm_s4_block_" + std::to_string(::getpid()) + "_" + name)).string();
}

/// Loading the edited checkpoint throws an ssm::error whose message contains every one of `needles`.
void expect_refused(const RawCheckpoint& edited, const std::string& case_name, const std::string& tag,
                    const std::vector<std::string>& needles) {
  const std::string dir = scratch_dir(tag);
  edited.write(dir, case_name);
  try {
    S4Block<double>::load_directory(dir);
    ADD_FAILURE() << tag << ": the edited checkpoint was accepted";
  } catch (const ssm::error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << tag << ": " << e.what();
  }
  fs::remove_all(dir);
}

TYPED_TEST(S4BlockTest, CheckpointsWithABadKeyAreRefusedNamingIt) {
  if (!std::is_same_v<TypeParam, double>) GTEST_SKIP() << "the loader is scalar-independent (it runs in double)";
  const std::string name = "s4block_dplr_legs";
  const RawCheckpoint original = RawCheckpoint::read(data_path(name + "/model.safetensors"));
  {  // The unedited copy loads (so the refusals below are about the edits).
    const std::string dir = scratch_dir("unedited");
    original.write(dir, name);
    EXPECT_NO_THROW(S4Block<double>::load_directory(dir));
    fs::remove_all(dir);
  }
  for (const std::string key : {"layer.D", "layer.kernel.inv_dt", "layer.kernel.C", "layer.kernel.B",
                                "layer.kernel.A_real", "layer.kernel.A_imag", "layer.kernel.P",
                                "layer.kernel.l_kernel", "output_linear.0.weight", "output_linear.0.bias"}) {
    SCOPED_TRACE(key);
    RawCheckpoint removed = original;
    removed.header.erase(key);
    expect_refused(removed, name, "removed", {"'" + key + "'", "missing"});

    RawCheckpoint renamed = original;
    renamed.header["renamed." + key] = renamed.header[key];
    renamed.header.erase(key);
    expect_refused(renamed, name, "renamed", {"'" + key + "'", "missing"});

    // Reshaped with the same number of elements (so the file itself stays valid).
    RawCheckpoint reshaped = original;
    auto& shape = reshaped.header[key]["shape"];
    std::int64_t numel = 1;
    for (const auto& d : shape) numel *= d.get<std::int64_t>();
    if (shape.empty())
      shape = nlohmann::json::array({1});  // the 0-d l_kernel as (1)
    else if (shape.size() == 1)
      shape = nlohmann::json::array({1, numel});
    else
      shape = nlohmann::json::array({numel});
    expect_refused(reshaped, name, "reshaped", {"'" + key + "'", "expected shape"});
  }
  // A key the block does not have.
  RawCheckpoint extra = original;
  extra.add_copy("layer.kernel.log_dt", "layer.kernel.inv_dt");
  expect_refused(extra, name, "extra", {"'layer.kernel.log_dt'", "not a parameter"});
  // l_kernel stored as a float, a float parameter stored as an integer.
  RawCheckpoint float_l_kernel = original;
  float_l_kernel.header["layer.kernel.l_kernel"]["dtype"] = "F64";
  expect_refused(float_l_kernel, name, "float_l_kernel", {"'layer.kernel.l_kernel'", "integer"});
  RawCheckpoint integer_D = original;
  integer_D.header["layer.D"]["dtype"] = "I32";
  expect_refused(integer_D, name, "integer_D", {"'layer.D'", "floating-point"});
}

TYPED_TEST(S4BlockTest, ABlockInsideABiggerStateDictLoadsByPrefix) {
  using T = TypeParam;
  const std::string name = "s4block_nplr_s4yaml";
  const RawCheckpoint original = RawCheckpoint::read(data_path(name + "/model.safetensors"));
  RawCheckpoint nested;
  nested.data = original.data;
  for (const auto& [key, value] : original.header.items())
    nested.header[key == "__metadata__" ? key : "backbone.layers.2." + key] = value;
  nested.add_copy("backbone.norm.weight", "backbone.layers.2.layer.D");  // another module's tensor
  const std::string dir = scratch_dir("nested");
  nested.write(dir, name);
  const S4BlockConfig config = S4BlockConfig::read(data_path(name + "/config.json"));
  const S4Block<T> block = S4Block<T>::load(dir + "/model.safetensors", config, "backbone.layers.2.");
  const MatrixX<T> u = batch_as_LxH<T>(golden(name, "u"), 0);
  EXPECT_EQ(block.forward(u), load_case<T>(name).forward(u));
  // Under the empty prefix every key is the block's: the others are refused.
  EXPECT_THROW(S4Block<T>::load(dir + "/model.safetensors", config), ssm::error);
  fs::remove_all(dir);
}

/// The safetensors reader's integer dtypes (added for l_kernel): I64 and I32 read as int64, bounds checked
/// like the float dtypes, and kept apart from the float accessors.
TYPED_TEST(S4BlockTest, SafetensorsReadsIntegerTensors) {
  auto file_with = [](const std::string& header, const std::vector<unsigned char>& data) {
    std::string text = header;
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<unsigned char> bytes(8);
    for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = static_cast<unsigned char>((std::uint64_t(text.size()) >> (8 * i)) & 0xff);
    bytes.insert(bytes.end(), text.begin(), text.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    return bytes;
  };
  std::vector<unsigned char> data(32);
  const std::int64_t a[2] = {64, -3};
  const std::int32_t b[2] = {7, -2147483647 - 1};
  std::memcpy(data.data(), a, 16);
  std::memcpy(data.data() + 16, b, 8);
  std::memcpy(data.data() + 24, a, 8);
  const auto file = io::SafetensorsFile::parse(file_with(
      R"({"n": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}, "m": {"dtype": "I32", "shape": [1, 2], "data_offsets": [16, 24]}, "s": {"dtype": "I64", "shape": [], "data_offsets": [24, 32]}})",
      data));
  EXPECT_EQ(file.integers("n"), (std::vector<std::int64_t>{64, -3}));
  EXPECT_EQ(file.integers("m"), (std::vector<std::int64_t>{7, -2147483647 - 1}));
  EXPECT_EQ(file.integers("s"), (std::vector<std::int64_t>{64}));
  EXPECT_EQ(file.info("n").dtype, io::TensorDtype::I64);
  EXPECT_THROW(file.template values<double>("n"), ssm::error);  // an integer tensor is not read as floats
  const auto floats = io::SafetensorsFile::parse(
      file_with(R"({"f": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", std::vector<unsigned char>(8)));
  EXPECT_THROW(floats.integers("f"), ssm::error);
  // Byte counts are checked against the dtype's size, as for the float dtypes.
  EXPECT_THROW(io::SafetensorsFile::parse(file_with(R"({"n": {"dtype": "I64", "shape": [3], "data_offsets": [0, 16]}})", data)),
               ssm::error);
  EXPECT_THROW(io::SafetensorsFile::parse(file_with(R"({"n": {"dtype": "I32", "shape": [2], "data_offsets": [16, 32]}})", data)),
               ssm::error);
  EXPECT_THROW(io::SafetensorsFile::parse(file_with(R"({"n": {"dtype": "U4", "shape": [2], "data_offsets": [0, 2]}})", data)),
               ssm::error);
}

/// models/s4/s4d.py's S4D (example.py's layer) from its own keys: against its definition summed directly,
/// A = -exp(log_A_real) + i A_imag (the opposite imaginary sign to s4.py), B = 1, ZOH, GELU, Conv1d + GLU.
TYPED_TEST(S4BlockTest, TheMinimalS4DModuleLoadsWithItsOwnKeysAndSign) {
  if (!std::is_same_v<TypeParam, double>) GTEST_SKIP() << "checked in double against a long double sum";
  const Index H = 3, M = 4, L = 30;
  std::mt19937_64 gen(21);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto rounded = [](double v) { return double(float(v)); };  // the file holds F32
  std::vector<float> D(H), C(H * M * 2), log_dt(H), log_A_real(H * M), A_imag(H * M), W(2 * H * H), b(2 * H);
  for (auto& v : D) v = float(2 * unit(gen) - 1);
  for (auto& v : C) v = float(2 * unit(gen) - 1);
  for (auto& v : log_dt) v = float(std::log(0.01) + unit(gen) * std::log(10.0));
  for (Index i = 0; i < H * M; ++i) {
    log_A_real[std::size_t(i)] = float(std::log(0.5) + 0.3 * unit(gen));
    A_imag[std::size_t(i)] = float(3.14159265358979 * double(i % M) + unit(gen));
  }
  for (auto& v : W) v = float(2 * unit(gen) - 1);
  for (auto& v : b) v = float(2 * unit(gen) - 1);
  const std::string dir = scratch_dir("s4d");
  fs::create_directories(dir);
  io::write_safetensors(dir + "/model.safetensors", {{"s4_layers.0.D", {H}, D},
                                                     {"s4_layers.0.kernel.C", {H, M, 2}, C},
                                                     {"s4_layers.0.kernel.log_dt", {H}, log_dt},
                                                     {"s4_layers.0.kernel.log_A_real", {H, M}, log_A_real},
                                                     {"s4_layers.0.kernel.A_imag", {H, M}, A_imag},
                                                     {"s4_layers.0.output_linear.0.weight", {2 * H, H, 1}, W},
                                                     {"s4_layers.0.output_linear.0.bias", {2 * H}, b}});
  const S4BlockConfig config = S4BlockConfig::parse(R"({"class": "S4D", "d_model": 3, "d_state": 8, "lr": 0.001})");
  EXPECT_EQ(config.module, S4BlockModule::s4d);
  const S4Block<double> block = S4Block<double>::load(dir + "/model.safetensors", config, "s4_layers.0.");
  const MatrixX<double> u = random_normal<double>(L, H, gen);
  // The definition: K[l, h] = 2 Re sum_n C (exp(dt A) - 1) / A exp(dt A l), y = K * u + D u, GELU, Conv1d, GLU.
  using LC = std::complex<long double>;
  MatrixX<double> z(L, H);
  for (Index h = 0; h < H; ++h) {
    std::vector<long double> K(std::size_t(L), 0.0L);
    const long double dt = std::exp((long double)log_dt[std::size_t(h)]);
    for (Index n = 0; n < M; ++n) {
      const std::size_t i = std::size_t(h * M + n);
      const LC A(-std::exp((long double)log_A_real[i]), (long double)A_imag[i]);
      const LC Cn((long double)C[2 * i], (long double)C[2 * i + 1]);
      const LC w = Cn * (std::exp(dt * A) - 1.0L) / A;
      for (Index l = 0; l < L; ++l) K[std::size_t(l)] += 2 * (w * std::exp(dt * A * (long double)l)).real();
    }
    for (Index t = 0; t < L; ++t) {
      long double acc = (long double)D[std::size_t(h)] * u(t, h);
      for (Index j = 0; j <= t; ++j) acc += K[std::size_t(j)] * u(t - j, h);
      z(t, h) = double(acc);
    }
  }
  MatrixX<double> Wm(2 * H, H);
  for (Index o = 0; o < 2 * H; ++o)
    for (Index i = 0; i < H; ++i) Wm(o, i) = rounded(W[std::size_t(o * H + i)]);
  MatrixX<double> pre = nn::gelu(z) * Wm.transpose();
  for (Index o = 0; o < 2 * H; ++o) pre.col(o).array() += double(b[std::size_t(o)]);
  SSM_EXPECT_NEAR_REL(block.forward(u), nn::glu(pre), 1e-12);
  // Its step equals its forward (the module itself has none; the block gives it the recurrent mode).
  auto state = block.initial_state();
  SSM_EXPECT_NEAR_REL(run_steps(block, u, state), block.forward(u), 1e-12);
  // s4.py keys in an s4d.py config are refused, naming the first one the block does not have.
  EXPECT_THROW(S4Block<double>::load(data_path("s4block_diag_inv_channels2/model.safetensors"), config), ssm::error);
  fs::remove_all(dir);
}

TYPED_TEST(S4BlockTest, ConfigErrorsNameTheField) {
  auto refused = [](const std::string& text, const std::string& field) {
    try {
      S4BlockConfig::parse(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  refused(R"({"d_state": 16})", "d_model");
  refused(R"({"d_model": 4, "mode": "dense"})", "mode");
  refused(R"({"d_model": 4, "activation": "mish"})", "activation");
  refused(R"({"d_model": 4, "n_ssm": 3})", "n_ssm");
  refused(R"({"d_model": 4, "gate": 2})", "gate");
  refused(R"({"d_model": 4, "mode": "diag", "disc": "dss"})", "disc");
  refused(R"({"class": "S4D", "d_model": 4, "channels": 2})", "channels");
  const S4BlockConfig c = S4BlockConfig::parse(R"({"d_model": 4, "final_act": null, "l_max": null})");
  EXPECT_FALSE(c.final_act.has_value());
  EXPECT_EQ(c.l_max, 0);
}

TYPED_TEST(S4BlockTest, InitialisedBlocksStepAsTheyConvolve) {
  using T = TypeParam;
  for (const std::string kernel : {"dplr", "diag"}) {
    SCOPED_TRACE(kernel);
    S4BlockConfig config = S4BlockConfig::parse(
        R"({"d_model": 3, "d_state": 8, "channels": 2, "l_max": 32, "final_act": "glu", "dt_min": 0.01, "dt_max": 0.1})");
    if (kernel == "diag") {
      config.mode = S4BlockKernel::diagonal;
      config.init = "diag-inv";
    }
    std::mt19937_64 gen(9);
    const S4Block<T> block = S4Block<T>::initialise(config, gen);
    EXPECT_EQ(block.conv_channels(), 2);
    const MatrixX<T> u = random_normal<T>(20, 3, gen);
    auto state = block.initial_state();
    SSM_EXPECT_NEAR_REL(run_steps(block, u, state), block.forward(u), golden_tolerance<T>());
    // Other activations: GLU after the convolution (Cc = 2 channels halved back), "id" or no output layer.
    for (const char* heads : {R"({"activation": "glu", "final_act": "id"})", R"({"activation": "tanh", "final_act": null})"}) {
      SCOPED_TRACE(heads);
      nlohmann::json j = nlohmann::json::parse(heads);
      j["d_model"] = 3;
      j["d_state"] = 8;
      j["channels"] = 2;
      j["mode"] = kernel;
      j["init"] = kernel == "diag" ? "diag-lin" : "legs";
      const S4Block<T> other = S4Block<T>::initialise(S4BlockConfig::parse(j.dump()), gen);
      EXPECT_EQ(other.output_width(), j["final_act"].is_null() ? 6 : 3);
      EXPECT_EQ(other.conv_channels(), j["activation"] == "glu" ? 4 : 2);
      auto s = other.initial_state();
      SSM_EXPECT_NEAR_REL(run_steps(other, u, s), other.forward(u), golden_tolerance<T>());
    }
    // Params round trip: a block made from its own params (cast to the other scalar and back) agrees.
    using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
    const S4Block<T> again(block.params().template cast<U>().template cast<T>());
    // One of the two casts rounds to float: agreement to float precision.
    SSM_EXPECT_NEAR_REL(again.forward(u), block.forward(u), 1e-5);
  }
}

}  // namespace
}  // namespace ssm::test
