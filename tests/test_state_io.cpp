// States as bytes (ssm/io/state_io.hpp) for the models, and everything restore_state refuses: another
// layer, size or scalar, truncated or corrupted bytes. (Every layer's save -> restore -> continue is in
// test_layer_concept.cpp, SavedStateRestoresAndContinuesExactly.)
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/core/snapshots.hpp"
#include "ssm/io/state_io.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/models/mamba_lm.hpp"
#include "ssm/models/s4_model.hpp"

#include <random>
#include <string>

namespace ssm::test {
namespace {

template <class T>
class StateIOTest : public ::testing::Test {};
TYPED_TEST_SUITE(StateIOTest, Scalars);

// A Mamba-1 and a Mamba-2 language model: save after the prompt, restore, decode: the same logits as
// decoding without stopping.
TYPED_TEST(StateIOTest, LanguageModelsContinueExactlyAfterRestore) {
  using T = TypeParam;
  for (const char* name : {"mamba_lm", "mamba2_lm"}) {
    const auto lm = MambaLM<T>::load(data_path(name));
    const std::vector<std::int64_t> prompt = {1, 5, 9, 2, 7, 3};
    auto state = lm.initial_state();
    VectorX<T> logits = lm.prefill(prompt, state);
    const std::string bytes = io::save_state(state);
    auto restored = lm.initial_state();
    io::restore_state(bytes, restored);
    VectorX<T> a = logits, b = logits;
    for (std::int64_t token : {4, 8, 15, 16}) {
      lm.step(token, state, a);
      lm.step(token, restored, b);
      EXPECT_EQ(a, b) << name << ", token " << token;
    }
  }
}

// example.py's S4Model streaming: a state saved after part of a sequence gives, restored, the same logits.
TYPED_TEST(StateIOTest, S4ModelStreamContinuesExactlyAfterRestore) {
  using T = TypeParam;
  const auto model = S4Model<T>::load(data_path("s4model_example"));
  std::mt19937_64 gen(3);
  const MatrixX<T> x = random_normal<T>(30, model.d_input(), gen);
  auto state = model.initial_state();
  for (Index t = 0; t < 20; ++t) model.step(x.row(t).transpose(), state);
  auto restored = model.initial_state();
  io::restore_state(io::save_state(state), restored);
  EXPECT_EQ(restored.steps, 20);
  for (Index t = 20; t < 30; ++t) {
    model.step(x.row(t).transpose(), state);
    model.step(x.row(t).transpose(), restored);
  }
  EXPECT_EQ(model.logits(restored), model.logits(state));
}

TEST(StateIO, AStateOfAnotherLayerSizeOrScalarIsRefused) {
  std::mt19937_64 gen(1);
  const auto s4d = S4D<double>::initialise(3, 16, hippo::DiagonalInit::inv, Discretization::zoh, gen, 1e-2, 1e-1);
  const auto wider = S4D<double>::initialise(4, 16, hippo::DiagonalInit::inv, Discretization::zoh, gen, 1e-2, 1e-1);
  const auto s4d_float = S4D<float>::initialise(3, 16, hippo::DiagonalInit::inv, Discretization::zoh, gen, 1e-2, 1e-1);
  const auto lru = LinearRecurrentUnit<double>::initialise(3, 8, gen, 0.5, 0.9);
  auto state = s4d.initial_state();
  s4d.forward(MatrixX<double>::Ones(5, 3), state);
  const std::string bytes = io::save_state(state);
  auto other_lru = lru.initial_state();
  expect_error([&] { io::restore_state(bytes, other_lru); }, {"restore_state", "kind", "a state of LRU", "a state of S4D"});
  auto other_size = wider.initial_state();
  const auto before = other_size.x;
  expect_error([&] { io::restore_state(bytes, other_size); }, {"restore_state", "'x'", "expected shape 8 x 4", "got 8 x 3"});
  EXPECT_EQ(other_size.x, before);  // untouched on error
  auto other_scalar = s4d_float.initial_state();
  expect_error([&] { io::restore_state(bytes, other_scalar); }, {"restore_state", "scalar", "float (4 bytes)", "8-byte"});
}

TEST(StateIO, TruncatedCorruptedAndForeignBytesAreRefused) {
  std::mt19937_64 gen(2);
  MambaConfig c;
  c.d_model = 6;
  c.d_state = 4;
  const auto mamba = Mamba<float>::initialise(c, gen);
  auto state = mamba.initial_state();
  mamba.forward(MatrixX<float>::Ones(7, 6), state);
  const std::string bytes = io::save_state(state);
  auto target = mamba.initial_state();
  for (std::size_t keep : {std::size_t(0), std::size_t(5), std::size_t(30), bytes.size() - 1}) {
    expect_error([&] { io::restore_state(std::string_view(bytes).substr(0, keep), target); }, {"restore_state", "bytes"});
  }
  for (std::size_t at : {std::size_t(9), std::size_t(20), bytes.size() / 2, bytes.size() - 3}) {
    std::string corrupt = bytes;
    corrupt[at] = char(corrupt[at] ^ 0x20);
    expect_error([&] { io::restore_state(corrupt, target); }, {"restore_state", "bytes", "corrupt"});
  }
  expect_error([&] { io::restore_state(std::string(64, 'x'), target); }, {"restore_state", "SSMSTATE"});
  EXPECT_EQ(target.ssm, mamba.initial_state().ssm);  // every refusal left it alone
  io::restore_state(bytes, target);
  EXPECT_EQ(target.ssm, state.ssm);
  EXPECT_EQ(target.conv, state.conv);
}

// Prefix caching: the snapshots of one pass are the states of passes over the prefixes, the outputs those
// of one pass, and a resumed snapshot continues like the stream that never stopped.
template <class Layer>
void expect_snapshots_are_prefix_states(const Layer& layer, double tol, std::mt19937_64& gen) {
  using T = typename Layer::Scalar;
  const Index L = 40, H = layer.channels();
  const MatrixX<T> u = random_normal<T>(L, H, gen), suffix = random_normal<T>(6, H, gen);
  auto state = layer.initial_state();
  const auto run = forward_with_snapshots(layer, u, state, {0, 1, 17, 17, 40});
  ASSERT_EQ(run.states.size(), 5u);
  SSM_EXPECT_NEAR_REL(run.y.template cast<double>(), layer.forward(u).template cast<double>(), tol);
  EXPECT_EQ(io::save_state(run.states[4]), io::save_state(state));
  for (std::size_t i : {std::size_t(1), std::size_t(2)}) {
    const Index p = i == 1 ? 1 : 17;
    auto prefix_state = layer.initial_state();
    layer.forward(u.topRows(p), prefix_state);  // one pass over the prefix
    auto resumed = run.states[i];
    SSM_EXPECT_NEAR_REL(layer.forward(suffix, resumed).template cast<double>(),
                        layer.forward(suffix, prefix_state).template cast<double>(), tol);
  }
  auto zero = layer.initial_state();
  EXPECT_EQ(io::save_state(run.states[0]), io::save_state(zero));
  auto again = layer.initial_state();
  expect_error([&] { forward_with_snapshots(layer, u, again, {5, 3}); }, {"forward_with_snapshots", "positions"});
  expect_error([&] { forward_with_snapshots(layer, u, again, {41}); }, {"positions", "[0, 40]"});
}

TYPED_TEST(StateIOTest, SnapshotsAreThePrefixStates) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, double> ? 1e-11 : 2e-5;
  std::mt19937_64 gen(9);
  expect_snapshots_are_prefix_states(
      S4D<T>::initialise(3, 16, hippo::DiagonalInit::inv, Discretization::zoh, gen, 1e-2, 1e-1), tol, gen);
  MambaConfig c;
  c.d_model = 6;
  c.d_state = 4;
  expect_snapshots_are_prefix_states(Mamba<T>::initialise(c, gen), tol, gen);
  Mamba2Config c2;
  c2.d_model = 8;
  c2.d_state = 4;
  c2.headdim = 4;
  c2.chunk_size = 8;
  expect_snapshots_are_prefix_states(Mamba2<T>::initialise(c2, gen), tol, gen);
}

}  // namespace
}  // namespace ssm::test
