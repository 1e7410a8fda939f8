// example.py's S4Model classifier (state-spaces/s4) run from its state_dict: both golden cases (postnorm and
// prenorm) in double and float, logits and every layer's residual stream; streaming (step + logits) equal to
// the convolution on the goldens and on randomly initialised models of another size, allocation-free;
// checkpoints with a key removed, renamed, reshaped or extra refused naming the key; config errors.
#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/models/s4_model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace ssm::test {
namespace {

template <class T>
class S4ModelTest : public ::testing::Test {};
TYPED_TEST_SUITE(S4ModelTest, Scalars);

const std::vector<std::string> kCases = {"s4model_example", "s4model_example_prenorm"};

/// Relative to the largest reference value: 1e-12 in double, 1e-5 in float.
template <class T>
double golden_tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

/// max |a - b| / max |b|.
template <class A, class B>
double relative_error(const A& a, const B& b) {
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff() /
         b.template cast<double>().cwiseAbs().maxCoeff();
}

template <class T>
S4Model<T> load_case(const std::string& name) {
  return S4Model<T>::load(data_path(name));
}

/// Feeds the rows of x one by one from a fresh state; returns the logits, and the residual stream after the
/// last layer at every step in `last` (L x H).
template <class T>
VectorX<T> stream(const S4Model<T>& model, const MatrixX<T>& x, MatrixX<T>* last = nullptr) {
  auto state = model.initial_state();
  if (last) last->resize(x.rows(), model.config().d_model);
  for (Index t = 0; t < x.rows(); ++t) {
    model.step(x.row(t).transpose(), state);
    if (last) last->row(t) = state.hidden.transpose();
  }
  return model.logits(state);
}

TYPED_TEST(S4ModelTest, GoldenLogitsAndResidualStreams) {
  using T = TypeParam;
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const S4Model<T> model = load_case<T>(name);
    const io::NpyArray x = golden(name, "x");  // (batch, L, d_input)
    const MatrixX<double> logits = golden(name, "logits").matrix<double>();  // batch x d_output
    ASSERT_EQ(x.shape.size(), 3u);
    EXPECT_EQ(model.d_input(), x.shape[2]);
    EXPECT_EQ(model.d_output(), logits.cols());
    double worst_logits = 0, worst_h = 0;
    for (Index b = 0; b < x.shape[0]; ++b) {
      const MatrixX<T> xb = batch_slab<T>(x, b);  // L x d_input
      std::vector<Sequence<T>> h;
      const VectorX<T> out = model.forward(xb, &h);
      const VectorX<double> expected = logits.row(b).transpose();
      SSM_EXPECT_NEAR_REL(out, expected, golden_tolerance<T>());
      worst_logits = std::max(worst_logits, relative_error(out, expected));
      ASSERT_EQ(Index(h.size()), model.config().n_layers);
      for (Index i = 0; i < model.config().n_layers; ++i) {
        const MatrixX<double> hi = batch_as_LxH<double>(golden(name, "h" + std::to_string(i)), b);  // (d_model, L)
        SSM_EXPECT_NEAR_REL(h[std::size_t(i)], hi, golden_tolerance<T>()) << "h" << i << ", batch " << b;
        worst_h = std::max(worst_h, relative_error(h[std::size_t(i)], hi));
      }
    }
    std::cout << "[ measured ] " << name << " (" << (std::is_same_v<T, float> ? "float" : "double")
              << "): logits " << worst_logits << ", h{i} " << worst_h << " (max error / max |reference|)\n";
  }
}

/// Streams x through `model` and expects the logits and the last layer's residual stream of convolution;
/// raises `worst` to the logits' relative difference. Returns the streamed logits.
template <class T>
VectorX<T> expect_streaming_equals_convolution(const S4Model<T>& model, const MatrixX<T>& x, double tol, double& worst) {
  std::vector<Sequence<T>> h;
  const VectorX<T> conv = model.forward(x, &h);
  MatrixX<T> last;
  const VectorX<T> streamed = stream(model, x, &last);
  SSM_EXPECT_NEAR_REL(streamed, conv, tol);
  SSM_EXPECT_NEAR_REL(last, h.back(), tol);
  worst = std::max(worst, relative_error(streamed, conv));
  return streamed;
}

TYPED_TEST(S4ModelTest, StreamingEqualsConvolutionOnTheGoldens) {
  using T = TypeParam;
  // The S4D kernel spans the whole input, so the recurrence is the same linear map: only rounding differs.
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const S4Model<T> model = load_case<T>(name);
    const io::NpyArray x = golden(name, "x");
    double worst = 0;
    for (Index b = 0; b < x.shape[0]; ++b) {
      const MatrixX<T> xb = batch_slab<T>(x, b);
      const VectorX<T> streamed = expect_streaming_equals_convolution(model, xb, tol, worst);
      // Against the golden logits as well.
      const VectorX<double> expected = golden(name, "logits").matrix<double>().row(b).transpose();
      SSM_EXPECT_NEAR_REL(streamed, expected, golden_tolerance<T>());
    }
    std::cout << "[ measured ] " << name << " (" << (std::is_same_v<T, float> ? "float" : "double")
              << "): streaming vs convolution logits " << worst << "\n";
  }
}

/// A model of d_input 3, d_model 8, 3 layers, d_state 16, 5 classes: S4Block's initialiser for the S4D layers,
/// uniform random encoder, decoder and LayerNorm affine (so the norms are not the identity).
template <class T>
S4Model<T> random_model(bool prenorm, std::mt19937_64& gen) {
  S4ModelConfig c = S4ModelConfig::parse(
      R"({"class": "S4Model", "d_input": 3, "d_output": 5, "d_model": 8, "n_layers": 3, "s4d": {"d_state": 16}})");
  c.prenorm = prenorm;
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  auto random = [&](Index rows, Index cols, double offset) {
    MatrixX<T> m(rows, cols);
    for (Index j = 0; j < cols; ++j)
      for (Index i = 0; i < rows; ++i) m(i, j) = T(offset + 0.5 * uniform(gen));
    return m;
  };
  const Index H = c.d_model;
  nn::Linear<T> encoder(random(H, c.d_input, 0), random(H, 1, 0));
  std::vector<typename S4Model<T>::Layer> layers;
  for (Index i = 0; i < c.n_layers; ++i)
    layers.push_back({S4Block<T>::initialise(c.layer_config(), gen),
                      nn::LayerNorm<T>(random(H, 1, 1.0), random(H, 1, 0), c.layer_norm_eps)});
  nn::Linear<T> decoder(random(c.d_output, H, 0), random(c.d_output, 1, 0));
  return S4Model<T>(c, std::move(encoder), std::move(layers), std::move(decoder));
}

TYPED_TEST(S4ModelTest, StreamingEqualsConvolutionOnRandomModels) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  std::mt19937_64 gen(7);
  for (const bool prenorm : {false, true}) {
    SCOPED_TRACE(prenorm ? "prenorm" : "postnorm");
    const S4Model<T> model = random_model<T>(prenorm, gen);
    double worst = 0;
    for (const Index L : {1, 2, 37, 200}) {
      SCOPED_TRACE(L);
      const MatrixX<T> x = random_normal<T>(L, 3, gen);
      const VectorX<T> streamed = expect_streaming_equals_convolution(model, x, tol, worst);
      // A state reset starts a new sequence: the same logits again.
      auto state = model.initial_state();
      for (Index t = 0; t < L; ++t) model.step(random_normal<T>(1, 3, gen).row(0).transpose(), state);
      state.reset();
      for (Index t = 0; t < L; ++t) model.step(x.row(t).transpose(), state);
      EXPECT_EQ(model.logits(state), streamed);
    }
    std::cout << "[ measured ] random " << (prenorm ? "prenorm" : "postnorm") << " model ("
              << (std::is_same_v<T, float> ? "float" : "double") << "): streaming vs convolution logits " << worst
              << "\n";
  }
}

TYPED_TEST(S4ModelTest, StepAllocatesNothing) {
  using T = TypeParam;
  for (const std::string& name : kCases) {
    SCOPED_TRACE(name);
    const S4Model<T> model = load_case<T>(name);
    const MatrixX<T> x = batch_slab<T>(golden(name, "x"), 0);
    auto state = model.initial_state();
    std::string why;
    const long count = allocations_during(
        [&] {
          for (Index t = 0; t < x.rows(); ++t) model.step(x.row(t).transpose(), state);
        },
        why);
    EXPECT_EQ(count, 0) << why;
    EXPECT_EQ(model.logits(state), stream(model, x));
  }
}

TYPED_TEST(S4ModelTest, BadInputsAndStatesAreRefused) {
  using T = TypeParam;
  const S4Model<T> model = load_case<T>("s4model_example");
  expect_error([&] { model.forward(MatrixX<T>::Zero(10, 2)); }, {"S4Model::forward", "x", "L x 1"});
  expect_error([&] { model.forward(MatrixX<T>::Zero(0, 1)); }, {"S4Model::forward", "L >= 1"});
  auto state = model.initial_state();
  expect_error([&] { model.logits(state); }, {"S4Model::logits", "at least one sample"});
  expect_error([&] { model.step(VectorX<T>::Zero(2), state); }, {"S4Model::step", "sample", "d_input"});
  typename S4Model<T>::State empty;
  expect_error([&] { model.step(VectorX<T>::Zero(1), empty); }, {"S4Model::step", "initial_state()"});
}

// --- checkpoints that must be refused -------------------------------------------------------------------

/// Writes `tensors` with the golden case's config.json into a fresh directory and expects loading it to fail
/// with every fragment in the message.
void expect_refused(const std::vector<io::TensorToWrite>& tensors, const std::string& case_name,
                    const std::vector<std::string>& fragments) {
  TempDir dir("s4model");
  write_checkpoint(dir.str(), tensors, read_text(data_path(case_name + "/config.json")));
  expect_error([&] { S4Model<double>::load(dir.str()); }, fragments);
}

TYPED_TEST(S4ModelTest, CheckpointsWithABadKeyAreRefusedNamingIt) {
  if (!std::is_same_v<TypeParam, double>) GTEST_SKIP() << "the loader's checks do not depend on the scalar";
  const std::string name = "s4model_example";
  const std::vector<io::TensorToWrite> original = read_tensors(data_path(name + "/model.safetensors"));
  ASSERT_EQ(original.size(), 22u);
  {  // The unedited rewrite loads and gives the golden logits (so the refusals are about the edits).
    TempDir dir("s4model");
    write_checkpoint(dir.str(), original, read_text(data_path(name + "/config.json")));
    const MatrixX<double> x = batch_slab<double>(golden(name, "x"), 0);
    EXPECT_EQ(S4Model<double>::load(dir.str()).forward(x), load_case<double>(name).forward(x));
  }
  for (std::size_t k = 0; k < original.size(); ++k) {
    const std::string key = original[k].name;
    SCOPED_TRACE(key);
    std::vector<io::TensorToWrite> removed = original;
    removed.erase(removed.begin() + std::ptrdiff_t(k));
    expect_refused(removed, name, {"'" + key + "'", "missing"});

    std::vector<io::TensorToWrite> renamed = original;
    renamed[k].name = "renamed." + key;
    expect_refused(renamed, name, {"'" + key + "'", "missing"});

    // Reshaped with the same number of elements.
    std::vector<io::TensorToWrite> reshaped = original;
    std::vector<Index>& shape = reshaped[k].shape;
    Index numel = 1;
    for (Index d : shape) numel *= d;
    shape = shape.size() == 1 ? std::vector<Index>{1, numel} : std::vector<Index>{numel};
    expect_refused(reshaped, name, {"'" + key + "'", "expected shape"});
  }
  // Keys the model does not have: a third layer's, a norm's, another module's.
  for (const std::string extra : {"s4_layers.2.D", "norms.0.running_mean", "classifier.weight"}) {
    SCOPED_TRACE(extra);
    std::vector<io::TensorToWrite> more = original;
    more.push_back({extra, {16}, std::vector<float>(16, 0.5f)});
    expect_refused(more, name, {"'" + extra + "'", "not a parameter"});
  }
}

TYPED_TEST(S4ModelTest, ConfigErrorsNameTheField) {
  auto refused = [](const std::string& text, const std::string& field) {
    SCOPED_TRACE(text);
    expect_error([&] { S4ModelConfig::parse(text); }, {"S4ModelConfig", field});
  };
  refused(R"({"d_input": 1, "d_output": 10, "n_layers": 2})", "d_model");
  refused(R"({"d_input": 1, "d_output": 10, "d_model": 0, "n_layers": 2})", "d_model");
  refused(R"({"class": "S4Block", "d_input": 1, "d_output": 10, "d_model": 4, "n_layers": 2})", "class");
  refused(R"({"d_input": 1, "d_output": 10, "d_model": 4, "n_layers": 2, "prenorm": 1})", "prenorm");
  refused(R"({"d_input": 1, "d_output": 10, "d_model": 4, "n_layers": 2, "s4d": {"d_state": 7}})", "s4d.d_state");
  refused(R"({"d_input": 1, "d_output": 10, "d_model": 4, "n_layers": 2, "s4d": {"transposed": false}})",
          "s4d.transposed");
  refused("[1, 2]", "config");
  const S4ModelConfig c = S4ModelConfig::read(data_path("s4model_example_prenorm/config.json"));
  EXPECT_EQ(c.d_input, 1);
  EXPECT_EQ(c.d_output, 10);
  EXPECT_EQ(c.d_model, 16);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.d_state, 64);
  EXPECT_TRUE(c.prenorm);
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
}

}  // namespace
}  // namespace ssm::test
