// Many threads over shared parameters: each thread runs its own streams (own State) through layers
// it shares with the others, so the per-length kernel-spectrum caches and the FFT plan cache are
// filled concurrently. Every thread must get exactly what one thread alone gets. CI runs this under
// ThreadSanitizer (the tsan preset), which reports any data race.

#include "test_support.hpp"

#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/models/mamba_lm.hpp"

#include <thread>
#include <vector>

namespace ssm::test {
namespace {

constexpr int kThreads = 6;

/// Runs `work(thread_index)` on kThreads threads at once and joins them.
template <class F>
void on_threads(F&& work) {
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([&work, t] { work(t); });
  for (auto& th : threads) th.join();
}

/// For a layer with forward (convolution), forward(u, state, Mode::recurrence) and step: each thread takes its own
/// input of its own length, so the threads fill the layer's spectrum cache for different lengths
/// at the same time, and compares all three modes with results computed beforehand on one thread
/// by a separate copy of the layer (its own cache).
template <class Layer, class T>
void check_layer_threads(const typename Layer::Params& params, Index H, double tol) {
  std::mt19937_64 gen(11);
  std::vector<MatrixX<T>> inputs;
  std::vector<MatrixX<T>> expected;
  const Layer reference(params);
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(random_normal<T>(40 + 37 * t, H, gen));
    expected.push_back(reference.forward(inputs.back()));
  }
  const Layer shared(params);  // fresh caches, filled by the threads below
  std::vector<int> ok(kThreads, 0);
  on_threads([&](int t) {
    const auto& u = inputs[std::size_t(t)];
    const MatrixX<T> conv = shared.forward(u);
    auto state = shared.initial_state();
    const MatrixX<T> rec = shared.forward(u, state, ssm::Mode::recurrence);
    auto stream = shared.initial_state();
    MatrixX<T> stepped(u.rows(), H);
    VectorX<T> y(H);
    for (Index k = 0; k < u.rows(); ++k) {
      shared.step(u.row(k).transpose(), stream, y);
      stepped.row(k) = y.transpose();
    }
    const auto& e = expected[std::size_t(t)];
    ok[std::size_t(t)] = near_relative_to_max(conv, e, tol) && near_relative_to_max(rec, e, tol) &&
                         near_relative_to_max(stepped, rec, tol);
  });
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(ok[std::size_t(t)], 1) << "thread " << t;
}

template <class T>
class Concurrency : public ::testing::Test {};
TYPED_TEST_SUITE(Concurrency, Scalars);

TYPED_TEST(Concurrency, S4SharedAcrossThreads) {
  using T = TypeParam;
  std::mt19937_64 gen(1);
  check_layer_threads<S4<T>, T>(S4<T>::initialise(3, 16, hippo::Measure::legs, gen, 1e-2, 1e-1).params(), 3,
                                100 * scalar_traits<T>::tolerance);
}

TYPED_TEST(Concurrency, S4DSharedAcrossThreads) {
  using T = TypeParam;
  std::mt19937_64 gen(2);
  const auto layer = S4D<T>::initialise(3, 16, hippo::DiagonalInit::inv, Discretization::zoh, gen);
  check_layer_threads<S4D<T>, T>(layer.params(), 3, 100 * scalar_traits<T>::tolerance);
}

TYPED_TEST(Concurrency, LinearRecurrentUnitSharedAcrossThreads) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  const auto layer = LinearRecurrentUnit<T>::initialise(3, 8, gen, 0.4, 0.95);
  check_layer_threads<LinearRecurrentUnit<T>, T>(layer.params(), 3, 100 * scalar_traits<T>::tolerance);
}

TYPED_TEST(Concurrency, MambaLanguageModelSharedAcrossThreads) {
  using T = TypeParam;
  const auto model = MambaLM<T>::load(data_path("mamba_lm"));
  std::vector<std::vector<typename MambaLM<T>::Token>> prompts;
  std::vector<std::vector<typename MambaLM<T>::Token>> expected;
  for (int t = 0; t < kThreads; ++t) {
    std::vector<typename MambaLM<T>::Token> p;
    for (int k = 0; k < 5 + t; ++k) p.push_back((7 * k + 3 * t) % 64);
    prompts.push_back(p);
    expected.push_back(model.generate(p, 6));
  }
  std::vector<int> ok(kThreads, 0);
  on_threads([&](int t) { ok[std::size_t(t)] = model.generate(prompts[std::size_t(t)], 6) == expected[std::size_t(t)]; });
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(ok[std::size_t(t)], 1) << "thread " << t;
}

}  // namespace
}  // namespace ssm::test
