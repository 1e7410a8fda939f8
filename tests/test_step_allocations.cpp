// step() allocates nothing: every layer's per-sample / per-token step is run with heap allocation
// counted (global operator new replaced in allocation_guard.hpp) and forbidden inside Eigen (EIGEN_RUNTIME_NO_MALLOC,
// with eigen_assert made to throw so that a forbidden allocation is a test failure, not an abort).
// Measured from the very first step after making the state: no lazy allocation either.

#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

#include "test_support.hpp"

#include "ssm/layers/lru.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/models/mamba_lm.hpp"

namespace ssm::test {
namespace {

template <class T>
class StepAllocations : public ::testing::Test {};
TYPED_TEST_SUITE(StepAllocations, Scalars);

TEST(StepAllocations, TheCounterSeesAllocations) {
  // The instrument itself: an allocation inside the window is counted, Eigen's is caught.
  std::string why;
  EXPECT_EQ(allocations_during([] { auto* p = new int(3); delete p; }, why), 1);
  EXPECT_EQ(allocations_during([] { Eigen::VectorXd v(100); v.setZero(); }, why), -1);
  EXPECT_NE(why.find("malloc"), std::string::npos) << why;
}

TYPED_TEST(StepAllocations, S4) {
  using T = TypeParam;
  std::mt19937_64 gen(1);
  const S4<T> layer = S4<T>::initialise(3, 16, hippo::Measure::legs, gen, 1e-3, 1e-1);
  auto state = layer.initial_state();
  const VectorX<T> u = VectorX<T>::Ones(3);
  VectorX<T> y(3);
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (int k = 0; k < 50; ++k) layer.step(u, state, y); }, why), 0) << why;
}

TYPED_TEST(StepAllocations, S4D) {
  using T = TypeParam;
  std::mt19937_64 gen(2);
  const auto layer = S4D<T>::initialise(3, 16, hippo::DiagonalInit::lin, Discretization::zoh, gen);
  auto state = layer.initial_state();
  const VectorX<T> u = VectorX<T>::Ones(3);
  VectorX<T> y(3);
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (int k = 0; k < 50; ++k) layer.step(u, state, y); }, why), 0) << why;
}

TYPED_TEST(StepAllocations, LinearRecurrentUnit) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  const auto layer = LinearRecurrentUnit<T>::initialise(3, 8, gen);
  auto state = layer.initial_state();
  const VectorX<T> u = VectorX<T>::Ones(3);
  VectorX<T> y(3);
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (int k = 0; k < 50; ++k) layer.step(u, state, y); }, why), 0) << why;
}

/// A Mamba block with small random weights (A_log = log(n + 1) as the reference initialises it).
template <class T>
MambaParams<T> random_mamba(Index d_model, Index d_state, std::mt19937_64& gen) {
  MambaParams<T> p;
  p.config.d_model = d_model;
  p.config.d_state = d_state;
  const Index di = p.config.d_inner(), R = p.config.rank(), K = p.config.d_conv;
  p.in_proj_weight = T(0.2) * random_normal<T>(2 * di, d_model, gen);
  p.conv1d_weight = T(0.3) * random_normal<T>(di, K, gen);
  p.conv1d_bias = T(0.1) * random_normal<T>(di, 1, gen);
  p.x_proj_weight = T(0.2) * random_normal<T>(R + 2 * d_state, di, gen);
  p.dt_proj_weight = T(0.3) * random_normal<T>(di, R, gen);
  p.dt_proj_bias = T(0.1) * random_normal<T>(di, 1, gen);
  p.A_log.resize(di, d_state);
  for (Index n = 0; n < d_state; ++n) p.A_log.col(n).setConstant(T(std::log(double(n + 1))));
  p.D = VectorX<T>::Ones(di);
  p.out_proj_weight = T(0.2) * random_normal<T>(d_model, di, gen);
  return p;
}

TYPED_TEST(StepAllocations, MambaBlock) {
  using T = TypeParam;
  std::mt19937_64 gen(4);
  const Mamba<T> block(random_mamba<T>(16, 4, gen));
  auto state = block.initial_state();
  const VectorX<T> u = VectorX<T>::Ones(16);
  VectorX<T> y(16);
  MatrixX<T> x = MatrixX<T>::Ones(50, 16);  // rows are strided: stepped in place
  std::string why;
  T sink = 0;
  EXPECT_EQ(allocations_during([&] { for (int k = 0; k < 50; ++k) { block.step(u, state, y); sink += y(0); } }, why), 0)
      << why;
  EXPECT_EQ(allocations_during([&] { for (Index t = 0; t < 50; ++t) block.step(x.row(t), state, x.row(t)); }, why), 0)
      << why;
  EXPECT_TRUE(std::isfinite(double(sink)));
  EXPECT_TRUE(x.allFinite());
}

TYPED_TEST(StepAllocations, MambaLanguageModel) {
  using T = TypeParam;
  // Every weight format: the compact kernels (and their portable fallback's stack buffer) allocate nothing either.
  for (const WeightFormat format : {WeightFormat::full, WeightFormat::bf16, WeightFormat::f16, WeightFormat::q8}) {
    const auto model = MambaLM<T>::load(data_path("mamba_lm"), format);
    auto state = model.initial_state();
    VectorX<T> logits(model.vocab_size());
    std::string why;
    T sink = 0;
    EXPECT_EQ(allocations_during([&] { for (int k = 0; k < 20; ++k) { model.step(k % 7, state, logits); sink += logits(0); } },
                                 why),
              0)
        << why << " (" << weight_format_name(format) << ")";
    EXPECT_TRUE(std::isfinite(double(sink)));
  }
}

}  // namespace
}  // namespace ssm::test
