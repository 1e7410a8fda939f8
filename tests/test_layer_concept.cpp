// The layer concept (ssm/core/layer.hpp), checked the same way for every layer: the surface exists
// (at compile time), inputs may be expressions, steps may read and write strided rows in place, a
// sequence cut in pieces gives the one-pass result, and for the time-invariant layers the two modes
// agree on the outputs and on the final state from any starting state.
#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4_block.hpp"
#include "ssm/core/batch.hpp"
#include "ssm/io/state_io.hpp"
#include "ssm/layers/s4d.hpp"
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <random>

using namespace ssm;
using namespace ssm::test;

static_assert(is_layer_v<S4<float>> && is_layer_v<S4<double>>, "S4 must satisfy the layer concept");
static_assert(is_layer_v<S4D<float>> && is_layer_v<S4D<double>>, "S4D must satisfy the layer concept");
static_assert(is_layer_v<LinearRecurrentUnit<float>> && is_layer_v<LinearRecurrentUnit<double>>,
              "LinearRecurrentUnit must satisfy the layer concept");
static_assert(is_layer_v<Mamba<float>> && is_layer_v<Mamba<double>>, "Mamba must satisfy the layer concept");
static_assert(is_layer_v<Mamba2<float>> && is_layer_v<Mamba2<double>>, "Mamba2 must satisfy the layer concept");
static_assert(is_layer_v<S4Block<float>> && is_layer_v<S4Block<double>>, "S4Block must satisfy the layer concept");
static_assert(!is_layer_v<int> && !is_layer_v<S4Params<float>>, "the concept check must be able to fail");

namespace {

/// A small layer of each kind with random parameters, and a random nonzero state for it.
template <class X>
struct Maker;

template <class T>
struct Maker<S4<T>> {
  static S4<T> make(std::mt19937_64& gen) { return S4<T>::initialise(3, 16, hippo::Measure::legs, gen, 1e-2, 1e-1); }
  static void randomise(const S4<T>& layer, typename S4<T>::State& s, std::mt19937_64& gen) {
    s.x = random_complex<T>(layer.modes(), layer.channels(), gen);
  }
};

template <class T>
struct Maker<S4D<T>> {
  static S4D<T> make(std::mt19937_64& gen) {
    return S4D<T>::initialise(3, 16, hippo::DiagonalInit::inv, Discretization::bilinear, gen, 1e-2, 1e-1);
  }
  static void randomise(const S4D<T>& layer, typename S4D<T>::State& s, std::mt19937_64& gen) {
    s.x = random_complex<T>(layer.modes(), layer.channels(), gen);
  }
};

template <class T>
struct Maker<LinearRecurrentUnit<T>> {
  static LinearRecurrentUnit<T> make(std::mt19937_64& gen) {
    return LinearRecurrentUnit<T>::initialise(3, 12, gen, 0.6, 0.99);
  }
  static void randomise(const LinearRecurrentUnit<T>& layer, typename LinearRecurrentUnit<T>::State& s,
                        std::mt19937_64& gen) {
    s.x = random_complex<T>(layer.state_size(), 1, gen);
  }
};

template <class T>
struct Maker<Mamba<T>> {
  static Mamba<T> make(std::mt19937_64& gen) {
    MambaConfig c;
    c.d_model = 6;
    c.d_state = 4;
    c.expand = 2;
    return Mamba<T>::initialise(c, gen);
  }
  static void randomise(const Mamba<T>&, typename Mamba<T>::State& s, std::mt19937_64& gen) {
    s.conv = random_normal<T>(s.conv.rows(), s.conv.cols(), gen);
    s.ssm = random_normal<T>(s.ssm.rows(), s.ssm.cols(), gen);
  }
};

template <class T>
struct Maker<Mamba2<T>> {
  static Mamba2<T> make(std::mt19937_64& gen) {
    Mamba2Config c;
    c.d_model = 8;
    c.d_state = 4;
    c.headdim = 4;
    c.ngroups = 2;
    c.chunk_size = 8;  // several chunks in the 40- and 50-step tests
    return Mamba2<T>::initialise(c, gen);
  }
  static void randomise(const Mamba2<T>&, typename Mamba2<T>::State& s, std::mt19937_64& gen) {
    s.conv = random_normal<T>(s.conv.rows(), s.conv.cols(), gen);
    s.ssm = random_normal<T>(s.ssm.rows(), s.ssm.cols(), gen);
  }
};

/// A unidirectional block with two output channels (D (2, H), two C rows on one state), GELU and the
/// output Linear + GLU; l_max 64 covers every convolution of these tests.
template <class T>
struct Maker<S4Block<T>> {
  static S4Block<T> make(std::mt19937_64& gen) {
    S4BlockConfig c;
    c.d_model = 4;
    c.d_state = 8;
    c.l_max = 64;
    c.channels = 2;
    c.mode = S4BlockKernel::diagonal;
    c.init = "diag-inv";
    return S4Block<T>::initialise(c, gen);
  }
  static void randomise(const S4Block<T>&, typename S4Block<T>::State& s, std::mt19937_64& gen) {
    s.diagonal.x = random_complex<T>(s.diagonal.x.rows(), s.diagonal.x.cols(), gen);
  }
};

/// The same layer template over double (declared only, for decltype).
template <template <class> class Layer, class T>
Layer<double> widened(const Layer<T>&);

/// Output tolerance, relative to the largest reference value: a few hundred roundings deep.
template <class T>
double tol() {
  return std::is_same_v<T, double> ? 1e-11 : 2e-5;
}

}  // namespace

template <class X>
class LayerConcept : public ::testing::Test {};

using Layers = ::testing::Types<S4<float>, S4<double>, S4D<float>, S4D<double>, LinearRecurrentUnit<float>,
                                LinearRecurrentUnit<double>, Mamba<float>, Mamba<double>, Mamba2<float>, Mamba2<double>,
                                S4Block<float>, S4Block<double>>;
TYPED_TEST_SUITE(LayerConcept, Layers);

TYPED_TEST(LayerConcept, ForwardFromZeroEqualsForwardFromInitialStateAndSteps) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(11);
  const X layer = Maker<X>::make(gen);
  const Index L = 40, H = layer.channels();
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  const Sequence<T> y = layer.forward(u);
  auto state = layer.initial_state();
  const Sequence<T> y_state = layer.forward(u, state);
  auto stepped_state = layer.initial_state();
  Sequence<T> y_steps(L, H);
  for (Index t = 0; t < L; ++t) {
    VectorX<T> out(H);
    layer.step(u.row(t).transpose(), stepped_state, out);
    y_steps.row(t) = out.transpose();
  }
  SSM_EXPECT_NEAR_REL(y_state.template cast<double>(), y.template cast<double>(), tol<T>());
  SSM_EXPECT_NEAR_REL(y_steps.template cast<double>(), y.template cast<double>(), tol<T>());
}

TYPED_TEST(LayerConcept, ExpressionsAreEvaluatedOnceAndGiveTheSameResult) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(12);
  const X layer = Maker<X>::make(gen);
  const Index L = 30, H = layer.channels();
  const MatrixX<T> a = random_normal<T>(L, 5, gen), W = random_normal<T>(5, H, gen);
  const MatrixX<T> u = a * W;
  const Sequence<T> expected = layer.forward(u);
  // An un-evaluated product, a block of a larger matrix, and a row-major map of the same values.
  EXPECT_EQ(layer.forward(a * W), expected);
  MatrixX<T> big = random_normal<T>(L + 7, H + 3, gen);
  big.block(4, 2, L, H) = u;
  EXPECT_EQ(layer.forward(big.block(4, 2, L, H)), expected);
  const RowMatrixX<T> row_major = u;
  EXPECT_EQ(layer.forward(Eigen::Map<const RowMatrixX<T>>(row_major.data(), L, H)), expected);
  auto s1 = layer.initial_state(), s2 = layer.initial_state();
  EXPECT_EQ(layer.forward(a * W, s1), layer.forward(u, s2));
}

TYPED_TEST(LayerConcept, StepReadsAndWritesStridedRowsInPlace) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(13);
  const X layer = Maker<X>::make(gen);
  const Index L = 12, H = layer.channels();
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  auto s_contiguous = layer.initial_state(), s_in_place = layer.initial_state();
  Maker<X>::randomise(layer, s_contiguous, gen);
  s_in_place = s_contiguous;
  MatrixX<T> in_place = u;  // each row is overwritten by its output: y aliases u, both strided
  for (Index t = 0; t < L; ++t) {
    VectorX<T> in = u.row(t).transpose(), out(H);
    layer.step(in, s_contiguous, out);
    layer.step(in_place.row(t).transpose(), s_in_place, in_place.row(t).transpose());
    EXPECT_EQ(in_place.row(t), out.transpose()) << "t = " << t;
  }
}

TYPED_TEST(LayerConcept, ChunkedForwardEqualsOnePassAndResetRestarts) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(14);
  const X layer = Maker<X>::make(gen);
  const Index L = 50, H = layer.channels();
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  auto start = layer.initial_state();
  Maker<X>::randomise(layer, start, gen);
  auto one = start;
  const Sequence<T> y = layer.forward(u, one);
  auto chunked = start;
  Sequence<T> y_chunks(L, H);
  for (Index t0 : {Index(0), Index(1), Index(17), Index(40)}) {
    const Index end = t0 == 0 ? 1 : (t0 == 1 ? 17 : (t0 == 17 ? 40 : L));
    y_chunks.middleRows(t0, end - t0) = layer.forward(u.middleRows(t0, end - t0), chunked);
  }
  SSM_EXPECT_NEAR_REL(y_chunks.template cast<double>(), y.template cast<double>(), tol<T>());
  // The two final states lead to the same continuation.
  const MatrixX<T> more = random_normal<T>(5, H, gen);
  SSM_EXPECT_NEAR_REL(layer.forward(more, chunked).template cast<double>(),
                      layer.forward(more, one).template cast<double>(), tol<T>());
  one.reset();
  auto fresh = layer.initial_state();
  EXPECT_EQ(layer.forward(u, one), layer.forward(u, fresh));
}

// States are data (io/state_io.hpp): saved mid-stream, restored into a fresh state of the same layer, the
// stream continues bit-exactly as if it had never stopped; a copy forks the stream.
TYPED_TEST(LayerConcept, SavedStateRestoresAndContinuesExactly) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(16);
  const X layer = Maker<X>::make(gen);
  const Index H = layer.channels();
  const MatrixX<T> first = random_normal<T>(23, H, gen), then = random_normal<T>(9, H, gen);
  auto state = layer.initial_state();
  layer.forward(first, state);
  const std::string bytes = io::save_state(state);
  auto fork = state;  // a plain copy is a second stream from here
  auto restored = layer.initial_state();
  io::restore_state(bytes, restored);
  EXPECT_EQ(io::save_state(restored), bytes);
  const Sequence<T> expected = layer.forward(then, state);
  EXPECT_EQ(layer.forward(then, restored), expected);
  EXPECT_EQ(layer.forward(then, fork), expected);
  // Stepping from a restored state too (the step's arithmetic differs from the forward's: to tolerance).
  auto stepped = layer.initial_state();
  io::restore_state(bytes, stepped);
  VectorX<T> out(H);
  layer.step(then.row(0).transpose(), stepped, out);
  SSM_EXPECT_NEAR_REL(out.template cast<double>(), expected.row(0).transpose().template cast<double>(), tol<T>());
}

// Batches (core/batch.hpp): B streams of ragged lengths from different states in one forward call, then one
// step of all B streams (each at its own position) in one call: bit-identical to separate calls, states too.
TYPED_TEST(LayerConcept, BatchedForwardAndStepEqualSeparateCalls) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(17);
  const X layer = Maker<X>::make(gen);
  const Index H = layer.channels();
  const std::vector<Index> lengths = {23, 1, 40, 7, 2};
  std::vector<Sequence<T>> inputs;
  std::vector<typename X::State> starts;
  for (Index L : lengths) {
    inputs.push_back(random_normal<T>(L, H, gen));
    starts.push_back(layer.initial_state());
    Maker<X>::randomise(layer, starts.back(), gen);
  }
  auto batch_states = starts;
  const std::vector<Sequence<T>> batch_outputs = forward_batch(layer, inputs, batch_states);
  ASSERT_EQ(batch_outputs.size(), inputs.size());
  auto separate_states = starts;
  for (std::size_t b = 0; b < inputs.size(); ++b) {
    EXPECT_EQ(batch_outputs[b], layer.forward(inputs[b], separate_states[b])) << "stream " << b;
    EXPECT_EQ(io::save_state(batch_states[b]), io::save_state(separate_states[b])) << "stream " << b;
  }
  // One step of every stream, each after its own number of samples.
  const Index B = Index(lengths.size());
  const MatrixX<T> u = random_normal<T>(B, H, gen);
  Sequence<T> y;
  step_batch(layer, u, batch_states, y);
  ASSERT_EQ(y.rows(), B);
  for (Index b = 0; b < B; ++b) {
    VectorX<T> out(H);
    layer.step(u.row(b).transpose(), separate_states[std::size_t(b)], out);
    EXPECT_EQ(y.row(b), out.transpose()) << "stream " << b;
    EXPECT_EQ(io::save_state(batch_states[std::size_t(b)]), io::save_state(separate_states[std::size_t(b)]));
  }
  // Counts that do not match are refused, naming the argument.
  std::vector<typename X::State> too_few(2, layer.initial_state());
  expect_error([&] { forward_batch(layer, inputs, too_few); }, {"forward_batch", "states"});
  expect_error([&] { step_batch(layer, u, too_few, y); }, {"step_batch", "u"});
}

TYPED_TEST(LayerConcept, ParamsCastRoundTripsAndWidens) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(15);
  const X layer = Maker<X>::make(gen);
  const auto wide = layer.params().template cast<double>();
  // T -> double -> T is exact: the same layer, bit for bit.
  const MatrixX<T> u = random_normal<T>(20, layer.channels(), gen);
  const X again(wide.template cast<T>());
  EXPECT_EQ(again.forward(u), layer.forward(u));
  // The widened parameters make the double layer, which agrees to T's precision.
  const decltype(widened(layer)) wide_layer(wide);
  const double widen_tol = std::is_same_v<T, double> ? 0.0 : 1e-4;
  SSM_EXPECT_NEAR_REL(layer.forward(u).template cast<double>(), wide_layer.forward(u.template cast<double>()), widen_tol);
}

/// The two modes of the time-invariant layers from a random state: outputs and final state.
template <class X>
class ModesAgree : public ::testing::Test {};

using TimeInvariant = ::testing::Types<S4<float>, S4<double>, S4D<float>, S4D<double>, LinearRecurrentUnit<float>,
                                       LinearRecurrentUnit<double>>;
TYPED_TEST_SUITE(ModesAgree, TimeInvariant);

TYPED_TEST(ModesAgree, ConvolutionAndRecurrenceFromAnyStateGiveTheSameOutputsAndFinalState) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(16);
  const X layer = Maker<X>::make(gen);
  // Lengths around the state sums' block of 64, a prime, and a long one.
  for (Index L : {Index(1), Index(2), Index(63), Index(64), Index(65), Index(257), Index(3001)}) {
    const MatrixX<T> u = random_normal<T>(L, layer.channels(), gen);
    for (bool zero_start : {true, false}) {
      auto rec = layer.initial_state();
      if (!zero_start) Maker<X>::randomise(layer, rec, gen);
      auto conv = rec;
      const Sequence<T> y_rec = layer.forward(u, rec, Mode::recurrence);
      const Sequence<T> y_conv = layer.forward(u, conv, Mode::convolution);
      SSM_EXPECT_NEAR_REL(y_conv.template cast<double>(), y_rec.template cast<double>(), tol<T>())
          << "L = " << L << (zero_start ? ", zero start" : ", random start");
      SSM_EXPECT_NEAR_REL(conv.x.template cast<std::complex<double>>(), rec.x.template cast<std::complex<double>>(),
                          tol<T>())
          << "L = " << L << (zero_start ? ", zero start" : ", random start");
    }
  }
}

template <class T>
class S4DConvolutionState : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(S4DConvolutionState, Scalars);

TYPED_TEST(S4DConvolutionState, MatchesALongDoubleRecurrence) {
  // An independent answer for the convolution mode's final state: the diagonal recurrence in long double.
  using T = TypeParam;
  std::mt19937_64 gen(17);
  const S4D<T> layer = Maker<S4D<T>>::make(gen);
  const Index L = 5000, H = layer.channels(), M = layer.modes();
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  auto s = layer.initial_state();
  Maker<S4D<T>>::randomise(layer, s, gen);
  const MatrixXc<T> x0 = s.x;
  layer.forward(u, s, Mode::convolution);
  MatrixXc<double> exact(M, H);
  for (Index h = 0; h < H; ++h)
    for (Index m = 0; m < M; ++m) {
      const std::complex<long double> a(layer.A_bar()(m, h)), b(layer.B_bar()(m, h));
      std::complex<long double> x(x0(m, h));
      for (Index t = 0; t < L; ++t) x = a * x + b * static_cast<long double>(u(t, h));
      exact(m, h) = std::complex<double>(x);
    }
  SSM_EXPECT_NEAR_REL(s.x.template cast<std::complex<double>>(), exact, tol<T>());
}

TYPED_TEST(ModesAgree, AutomaticModeFollowsPreferredMode) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(18);
  const X layer = Maker<X>::make(gen);
  const Index L = 5000;
  const MatrixX<T> u = random_normal<T>(L, layer.channels(), gen);
  auto a = layer.initial_state(), b = layer.initial_state();
  const Mode preferred = layer.preferred_mode(L);
  ASSERT_NE(preferred, Mode::automatic);
  EXPECT_EQ(layer.forward(u, a), layer.forward(u, b, preferred)) << mode_name(preferred);
  EXPECT_EQ(a.x, b.x);
}

TYPED_TEST(ModesAgree, SpectrumCacheHoldsAtMostItsBudget) {
  using X = TypeParam;
  using T = typename X::Scalar;
  std::mt19937_64 gen(19);
  const X layer = Maker<X>::make(gen);
  const MatrixX<T> u100 = random_normal<T>(100, layer.channels(), gen), u101 = random_normal<T>(101, layer.channels(), gen);
  const Sequence<T> y100 = layer.forward(u100);
  ASSERT_EQ(layer.spectrum_cache().size(), 1u);
  const std::size_t one = layer.spectrum_cache().bytes();
  EXPECT_GE(one, std::size_t(layer.kernel_spectrum(100)->spectrum.size()) * sizeof(std::complex<T>));
  // Room for one spectrum of this size only: the least recently used length goes.
  layer.spectrum_cache().set_budget(one + one / 2);
  layer.forward(u101);
  EXPECT_EQ(layer.spectrum_cache().size(), 1u);
  EXPECT_TRUE(layer.spectrum_cache().contains(101));
  EXPECT_LE(layer.spectrum_cache().bytes(), layer.spectrum_cache().budget());
  layer.spectrum_cache().clear();
  EXPECT_EQ(layer.spectrum_cache().size(), 0u);
  EXPECT_EQ(layer.spectrum_cache().bytes(), 0u);
  EXPECT_EQ(layer.forward(u100), y100);  // remade on demand, the same result
}
