// The pointwise building blocks of ssm/nn: every activation the official S4 block offers, GLU, Linear and
// LayerNorm, each against its formula evaluated directly in long double; the names and aliases the
// official code accepts; and clear errors for bad shapes and unknown names.
#include "test_support.hpp"

#include "ssm/nn/activation.hpp"
#include "ssm/nn/gelu.hpp"
#include "ssm/nn/glu.hpp"
#include "ssm/nn/layer_norm.hpp"
#include "ssm/nn/linear.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

namespace ssm::test {
namespace {

using LongMatrix = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

template <class T>
class NnTest : public ::testing::Test {};
TYPED_TEST_SUITE(NnTest, Scalars);

/// Relative tolerance for results rounded once or a few times in T.
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-6 : 4e-15;
}

/// Inputs spanning the interesting ranges: around 0, both tails, and the softplus threshold.
template <class T>
MatrixX<T> test_inputs() {
  std::mt19937_64 gen(7);
  MatrixX<T> x = T(3) * random_normal<T>(6, 10, gen);
  x(0, 0) = T(0);
  x(1, 0) = T(-30);
  x(2, 0) = T(25);
  x(3, 0) = T(19.5);
  x(4, 0) = T(20.5);
  x(5, 0) = T(-1e-3);
  return x;
}

/// f applied in long double to every entry of x.
template <class T>
LongMatrix reference(const MatrixX<T>& x, const std::function<long double(long double)>& f) {
  LongMatrix y(x.rows(), x.cols());
  for (Index j = 0; j < x.cols(); ++j)
    for (Index i = 0; i < x.rows(); ++i) y(i, j) = f((long double)x(i, j));
  return y;
}

long double sigmoid_l(long double x) { return 1.0L / (1.0L + std::exp(-x)); }

TYPED_TEST(NnTest, GeluIsTheExactErfForm) {
  using T = TypeParam;
  const MatrixX<T> x = test_inputs<T>();
  const LongMatrix expected =
      reference(x, [](long double v) { return 0.5L * v * (1.0L + std::erf(v / std::sqrt(2.0L))); });
  SSM_EXPECT_NEAR_REL(nn::gelu(x), expected, tolerance<T>());
  // Not the tanh approximation: at x = 1 the two differ by about 1.6e-4.
  const long double tanh_form = 0.5L * (1.0L + std::tanh(std::sqrt(2.0L / 3.14159265358979323846L) * (1.0L + 0.044715L)));
  EXPECT_GT(std::abs((long double)nn::gelu(T(1)) - tanh_form), 1e-4L);
  EXPECT_EQ(nn::gelu(T(0)), T(0));
}

TYPED_TEST(NnTest, EveryElementwiseActivationMatchesItsFormula) {
  using T = TypeParam;
  const MatrixX<T> x = test_inputs<T>();
  const std::vector<std::pair<std::string, std::function<long double(long double)>>> cases = {
      {"id", [](long double v) { return v; }},
      {"tanh", [](long double v) { return std::tanh(v); }},
      {"relu", [](long double v) { return v > 0 ? v : 0.0L; }},
      {"gelu", [](long double v) { return 0.5L * v * (1.0L + std::erf(v / std::sqrt(2.0L))); }},
      {"elu", [](long double v) { return v > 0 ? v : std::exp(v) - 1.0L; }},
      {"silu", [](long double v) { return v * sigmoid_l(v); }},
      {"sigmoid", [](long double v) { return sigmoid_l(v); }},
      {"softplus", [](long double v) { return v > 20 ? v : std::log1p(std::exp(v)); }},
  };
  for (const auto& [name, f] : cases) {
    SCOPED_TRACE(name);
    const nn::Activation a = nn::activation_from_name(name);
    EXPECT_EQ(nn::activation_name(a), name);
    const MatrixX<T> y = nn::activate(a, x);
    SSM_EXPECT_NEAR_REL(y, reference(x, f), tolerance<T>());
    // Each entry too, relative to |f(x)| + |x| (the max-relative bound alone would hide errors in small
    // values; |x| because GELU's 1 + erf(x / sqrt 2) cancels for x << 0, in PyTorch's formula as in this one).
    for (Index j = 0; j < x.cols(); ++j)
      for (Index i = 0; i < x.rows(); ++i) {
        const long double e = f((long double)x(i, j));
        EXPECT_LE(std::abs((long double)y(i, j) - e), 4 * tolerance<T>() * (std::abs(e) + std::abs((long double)x(i, j))))
            << "at x = " << x(i, j);
      }
    // In place through activate_into (y may be x itself for elementwise activations).
    MatrixX<T> z = x;
    nn::activate_into(a, z, z);
    EXPECT_EQ(z, y);
  }
}

TYPED_TEST(NnTest, ActivationNamesAndAliasesAreTheOfficialOnes) {
  EXPECT_EQ(nn::activation_from_name("identity"), nn::Activation::identity);
  EXPECT_EQ(nn::activation_from_name("linear"), nn::Activation::identity);
  EXPECT_EQ(nn::activation_from_name("swish"), nn::Activation::silu);
  EXPECT_EQ(nn::activation_from_name("glu"), nn::Activation::glu);
  try {
    nn::activation_from_name("mish", "final_act");
    ADD_FAILURE() << "an unknown activation was accepted";
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find("final_act"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'mish'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nn::activate(nn::Activation::glu, 1.0), ssm::error);  // GLU is not elementwise
}

TYPED_TEST(NnTest, GluIsValueHalfTimesSigmoidOfGateHalf) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  const MatrixX<T> z = T(4) * random_normal<T>(5, 6, gen);
  LongMatrix expected(5, 3);
  for (Index t = 0; t < 5; ++t)
    for (Index j = 0; j < 3; ++j) expected(t, j) = (long double)z(t, j) * sigmoid_l((long double)z(t, 3 + j));
  SSM_EXPECT_NEAR_REL(nn::glu(z), expected, tolerance<T>());
  EXPECT_EQ(nn::activate(nn::Activation::glu, z), nn::glu(z));
  EXPECT_EQ(nn::activation_output_width(nn::Activation::glu, 6), 3);
  EXPECT_THROW(nn::glu(MatrixX<T>::Ones(2, 5)), ssm::error);  // odd feature count
  MatrixX<T> wrong(5, 4);
  EXPECT_THROW(nn::glu_into(z, wrong), ssm::error);
}

TYPED_TEST(NnTest, LinearIsXTimesWTransposePlusBias) {
  using T = TypeParam;
  std::mt19937_64 gen(5);
  const MatrixX<T> W = random_normal<T>(4, 7, gen), x = random_normal<T>(9, 7, gen);
  const VectorX<T> b = random_normal<T>(4, 1, gen);
  const nn::Linear<T> linear(W, b);
  EXPECT_EQ(linear.in_features(), 7);
  EXPECT_EQ(linear.out_features(), 4);
  LongMatrix expected(9, 4);
  for (Index t = 0; t < 9; ++t)
    for (Index o = 0; o < 4; ++o) {
      long double acc = b(o);
      for (Index i = 0; i < 7; ++i) acc += (long double)W(o, i) * (long double)x(t, i);
      expected(t, o) = acc;
    }
  SSM_EXPECT_NEAR_REL(linear.forward(x), expected, 4 * tolerance<T>());
  MatrixX<T> into(9, 4);
  linear.forward_into(x, into);
  SSM_EXPECT_NEAR_REL(into, expected, 4 * tolerance<T>());
  // Without a bias.
  const nn::Linear<T> no_bias(W, VectorX<T>());
  SSM_EXPECT_NEAR_REL(no_bias.forward(x), linear.forward(x) - MatrixX<T>::Ones(9, 1) * b.transpose(), 4 * tolerance<T>());
  // Cast keeps the values (rounded).
  EXPECT_EQ(linear.template cast<double>().weight(), W.template cast<double>());
  // Errors name the argument.
  try {
    linear.forward(MatrixX<T>::Ones(2, 6));
    ADD_FAILURE() << "a wrong input width was accepted";
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find("x: expected L x 7"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nn::Linear<T>(W, VectorX<T>::Ones(3)), ssm::error);
  MatrixX<T> bad = W;
  bad(1, 1) = std::numeric_limits<T>::quiet_NaN();
  EXPECT_THROW(nn::Linear<T>(bad, b), ssm::error);
}

TYPED_TEST(NnTest, LayerNormMatchesTheBiasedVarianceFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(11);
  const Index n = 8;
  MatrixX<T> x = random_normal<T>(6, n, gen);
  x.row(1).array() += T(100);  // a large mean
  x.row(2).setConstant(T(3));  // zero variance: output = bias
  const VectorX<T> w = random_normal<T>(n, 1, gen), b = random_normal<T>(n, 1, gen);
  const nn::LayerNorm<T> norm(w, b);
  EXPECT_EQ(norm.eps(), 1e-5);
  LongMatrix expected(6, n);
  for (Index t = 0; t < 6; ++t) {
    long double mean = 0, var = 0;
    for (Index i = 0; i < n; ++i) mean += (long double)x(t, i);
    mean /= n;
    for (Index i = 0; i < n; ++i) var += ((long double)x(t, i) - mean) * ((long double)x(t, i) - mean);
    var /= n;
    for (Index i = 0; i < n; ++i)
      expected(t, i) = ((long double)x(t, i) - mean) / std::sqrt(var + 1e-5L) * (long double)w(i) + (long double)b(i);
  }
  SSM_EXPECT_NEAR_REL(norm.forward(x), expected, 4 * tolerance<T>());
  SSM_EXPECT_NEAR_REL(norm.forward(x).row(2), b.transpose(), tolerance<T>());
  MatrixX<T> in_place = x;
  norm.forward_into(in_place, in_place);
  EXPECT_EQ(in_place, norm.forward(x));
  EXPECT_THROW(norm.forward(MatrixX<T>::Ones(2, n + 1)), ssm::error);
  EXPECT_THROW(nn::LayerNorm<T>(w, VectorX<T>::Ones(n - 1)), ssm::error);
  EXPECT_THROW(nn::LayerNorm<T>(w, b, 0.0), ssm::error);
}

}  // namespace
}  // namespace ssm::test
