// The Mamba block: the golden case of the reference block (forward, token-by-token step and the final
// conv and SSM states), forward against step, chunked prefill, float against double, no allocation in
// step, and bad parameters and inputs.

// Make Eigen report any heap allocation while it is forbidden (checked in the step test): its check
// is an eigen_assert, which Release builds compile out, so this file turns it into an exception.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // the counting operator new below is malloc-based
#endif
#define EIGEN_RUNTIME_NO_MALLOC
#include <stdexcept>
#define eigen_assert(x) \
  do {                  \
    if (!(x)) throw std::runtime_error("Eigen assertion failed: " #x); \
  } while (false)

#include "test_support.hpp"

#include "ssm/layers/mamba.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

// Counts every operator new, for the allocation-free step test.
static std::atomic<long> g_news{0};
void* operator new(std::size_t n) {
  ++g_news;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace ssm::test {
namespace {

template <class T>
class MambaBlockTest : public ::testing::Test {};
TYPED_TEST_SUITE(MambaBlockTest, Scalars);

const char* kCase = "mamba_block";

MambaConfig golden_config() {
  MambaConfig c;
  c.d_model = 16;
  c.d_state = 4;
  c.d_conv = 4;
  c.expand = 2;
  c.dt_rank = 1;
  return c;
}

template <class T>
MambaParams<T> golden_params() {
  MambaParams<T> p;
  p.config = golden_config();
  p.in_proj_weight = golden(kCase, "in_proj_weight").matrix<T>();
  const auto conv = golden(kCase, "conv1d_weight");  // (d_inner, 1, d_conv)
  const auto w = conv.values<T>();
  p.conv1d_weight.resize(conv.shape[0], conv.shape[2]);
  for (Index d = 0; d < conv.shape[0]; ++d)
    for (Index k = 0; k < conv.shape[2]; ++k) p.conv1d_weight(d, k) = w[std::size_t(d * conv.shape[2] + k)];
  p.conv1d_bias = golden(kCase, "conv1d_bias").matrix<T>();
  p.x_proj_weight = golden(kCase, "x_proj_weight").matrix<T>();
  p.dt_proj_weight = golden(kCase, "dt_proj_weight").matrix<T>();
  p.dt_proj_bias = golden(kCase, "dt_proj_bias").matrix<T>();
  p.A_log = golden(kCase, "A_log").matrix<T>();
  p.D = golden(kCase, "D").matrix<T>();
  p.out_proj_weight = golden(kCase, "out_proj_weight").matrix<T>();
  return p;
}

/// Random parameters of the reference's initialisation kind: A_log = log(1..N), small weights.
template <class T>
MambaParams<T> random_params(const MambaConfig& c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index di = c.d_inner(), N = c.d_state, R = c.rank();
  MambaParams<T> p;
  p.config = c;
  p.in_proj_weight = random_normal<T>(2 * di, c.d_model, gen) / T(std::sqrt(double(c.d_model)));
  p.conv1d_weight = random_normal<T>(di, c.d_conv, gen) / T(2);
  p.conv1d_bias = random_normal<T>(di, 1, gen) / T(4);
  p.x_proj_weight = random_normal<T>(R + 2 * N, di, gen) / T(std::sqrt(double(di)));
  p.dt_proj_weight = random_normal<T>(di, R, gen) / T(std::sqrt(double(R)));
  p.dt_proj_bias = (random_normal<T>(di, 1, gen).array() - T(3)).matrix();
  p.A_log.resize(di, N);
  for (Index d = 0; d < di; ++d)
    for (Index n = 0; n < N; ++n) p.A_log(d, n) = T(std::log(double(n + 1)));
  p.D = VectorX<T>::Ones(di);
  p.out_proj_weight = random_normal<T>(c.d_model, di, gen) / T(std::sqrt(double(di)));
  return p;
}

TYPED_TEST(MambaBlockTest, GoldenForward) {
  using T = TypeParam;
  const Mamba<T> block(golden_params<T>());
  const auto x = golden(kCase, "x"), y = golden(kCase, "y");
  for (Index b = 0; b < x.shape[0]; ++b) {
    auto state = block.make_state();
    const Sequence<T> out = block.forward(batch_slab<T>(x, b), state);
    SSM_EXPECT_NEAR_REL(out, batch_slab<T>(y, b), 1e-5) << "batch " << b;
    SSM_EXPECT_NEAR_REL(state.conv, batch_slab<T>(golden(kCase, "conv_state"), b), 1e-5) << "batch " << b;
    SSM_EXPECT_NEAR_REL(state.ssm, batch_slab<T>(golden(kCase, "ssm_state"), b), 1e-5) << "batch " << b;
  }
}

TYPED_TEST(MambaBlockTest, GoldenStep) {
  using T = TypeParam;
  const Mamba<T> block(golden_params<T>());
  const auto x = golden(kCase, "x"), y_step = golden(kCase, "y_step");
  for (Index b = 0; b < x.shape[0]; ++b) {
    const MatrixX<T> u = batch_slab<T>(x, b);
    auto state = block.make_state();
    MatrixX<T> out(u.rows(), u.cols());
    for (Index t = 0; t < u.rows(); ++t) out.row(t) = block.step(u.row(t).transpose(), state).transpose();
    SSM_EXPECT_NEAR_REL(out, batch_slab<T>(y_step, b), 1e-5) << "batch " << b;
    SSM_EXPECT_NEAR_REL(state.conv, batch_slab<T>(golden(kCase, "conv_state"), b), 1e-5) << "batch " << b;
    SSM_EXPECT_NEAR_REL(state.ssm, batch_slab<T>(golden(kCase, "ssm_state"), b), 1e-5) << "batch " << b;
  }
}

/// Configurations covering auto dt_rank, d_conv of 1 and 2, state sizes with and without an unrolled
/// kernel, and d_inner spanning several lane groups.
std::vector<MambaConfig> test_configs() {
  std::vector<MambaConfig> cs;
  MambaConfig a;
  a.d_model = 24;
  a.d_state = 16;
  a.d_conv = 4;
  a.expand = 2;  // dt_rank auto = 2
  cs.push_back(a);
  MambaConfig b;
  b.d_model = 8;
  b.d_state = 3;
  b.d_conv = 1;
  b.expand = 3;
  b.dt_rank = 3;
  cs.push_back(b);
  MambaConfig c;
  c.d_model = 5;
  c.d_state = 8;
  c.d_conv = 2;
  c.expand = 1;
  cs.push_back(c);
  return cs;
}

TYPED_TEST(MambaBlockTest, ForwardEqualsStep) {
  using T = TypeParam;
  std::uint64_t seed = 10;
  for (const auto& c : test_configs()) {
    const Mamba<T> block(random_params<T>(c, seed++));
    std::mt19937_64 gen(seed++);
    const MatrixX<T> u = random_normal<T>(37, c.d_model, gen);
    auto fs = block.make_state();
    const Sequence<T> y = block.forward(u, fs);
    auto ss = block.make_state();
    MatrixX<T> ys(u.rows(), c.d_model);
    for (Index t = 0; t < u.rows(); ++t) ys.row(t) = block.step(u.row(t).transpose(), ss).transpose();
    const double tol = 20 * double(scalar_traits<T>::epsilon) * 37;
    SSM_EXPECT_NEAR_REL(ys, y, tol) << "d_model " << c.d_model;
    SSM_EXPECT_NEAR_REL(ss.conv, fs.conv, tol);
    SSM_EXPECT_NEAR_REL(ss.ssm, fs.ssm, tol);
  }
}

TYPED_TEST(MambaBlockTest, ChunkedPrefillEqualsOnePassAndStepContinues) {
  using T = TypeParam;
  std::uint64_t seed = 40;
  for (const auto& c : test_configs()) {
    const Mamba<T> block(random_params<T>(c, seed++));
    std::mt19937_64 gen(seed++);
    const Index L = 45;
    const MatrixX<T> u = random_normal<T>(L, c.d_model, gen);
    const Sequence<T> whole = block.forward(u);
    // Chunks shorter than d_conv (1, 2), an empty one, and longer ones; then the last 5 tokens by step.
    auto state = block.make_state();
    MatrixX<T> joined(L, c.d_model);
    Index at = 0;
    for (Index len : {1, 2, 0, 3, 7, 1, 26}) {
      joined.middleRows(at, len) = block.forward(u.middleRows(at, len), state);
      at += len;
    }
    for (; at < L; ++at) joined.row(at) = block.step(u.row(at).transpose(), state).transpose();
    const double tol = 20 * double(scalar_traits<T>::epsilon) * L;
    SSM_EXPECT_NEAR_REL(joined, whole, tol) << "d_model " << c.d_model;
    auto ws = block.make_state();
    block.forward(u, ws);
    SSM_EXPECT_NEAR_REL(state.conv, ws.conv, tol);
    SSM_EXPECT_NEAR_REL(state.ssm, ws.ssm, tol);
  }
}

TEST(MambaBlock, FloatAgreesWithDouble) {
  // The same golden weights in float and double over the golden inputs: float keeps a few roundings
  // per layer and step of the recurrence; documented bound 2e-5 of max |y| (scalar_traits<float>).
  const Mamba<float> bf(golden_params<float>());
  const Mamba<double> bd(golden_params<double>());
  const auto x = golden(kCase, "x");
  for (Index b = 0; b < x.shape[0]; ++b) {
    const Sequence<float> yf = bf.forward(batch_slab<float>(x, b));
    const Sequence<double> yd = bd.forward(batch_slab<double>(x, b));
    SSM_EXPECT_NEAR_REL(yf.cast<double>(), yd, scalar_traits<float>::tolerance);
  }
}

TYPED_TEST(MambaBlockTest, StepAllocatesNothing) {
  using T = TypeParam;
  MambaConfig c;
  c.d_model = 32;
  c.d_state = 16;
  const Mamba<T> block(random_params<T>(c, 3));
  auto state = block.make_state();
  const VectorX<T> u = VectorX<T>::Ones(c.d_model);
  block.step(u, state);  // first call: one-time initialisation (CPU feature detection)
  const long before = g_news.load();
  Eigen::internal::set_is_malloc_allowed(false);
  try {
    for (int i = 0; i < 10; ++i) block.step(u, state);
  } catch (...) {
    Eigen::internal::set_is_malloc_allowed(true);
    throw;
  }
  Eigen::internal::set_is_malloc_allowed(true);
  EXPECT_EQ(g_news.load(), before);
  // And the check does fire: an Eigen temporary is refused while forbidden.
  Eigen::internal::set_is_malloc_allowed(false);
  EXPECT_THROW((void)VectorX<T>(VectorX<T>::Ones(100)), std::runtime_error);
  Eigen::internal::set_is_malloc_allowed(true);
}

/// Expects ssm::error whose message contains every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ssm::error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

TYPED_TEST(MambaBlockTest, BadParametersAndInputsAreRejected) {
  using T = TypeParam;
  const auto good = golden_params<T>();
  {
    auto p = good;
    p.x_proj_weight = MatrixX<T>::Zero(10, 32);
    expect_error([&] { Mamba<T> m(p); }, {"x_proj_weight", "9 x 32", "10 x 32"});
  }
  {
    auto p = good;
    p.conv1d_bias = VectorX<T>::Zero(31);
    expect_error([&] { Mamba<T> m(p); }, {"conv1d_bias", "32"});
  }
  {
    auto p = good;
    p.config.dt_rank = 0;  // auto = ceil(16 / 16) = 1: the golden weights still fit
    EXPECT_NO_THROW(Mamba<T> m(p));
    p.config.d_state = 0;
    expect_error([&] { Mamba<T> m(p); }, {"config.d_state"});
  }
  {
    auto p = good;
    p.A_log(3, 1) = std::numeric_limits<T>::quiet_NaN();
    expect_error([&] { Mamba<T> m(p); }, {"A_log", "finite"});
  }
  const Mamba<T> block(good);
  expect_error([&] { block.forward(MatrixX<T>::Zero(5, 15)); }, {"Mamba::forward", "u", "5 x 15"});
  auto state = block.make_state();
  expect_error([&] { block.step(VectorX<T>::Zero(17), state); }, {"Mamba::step", "u", "17"});
  auto wrong = state;
  wrong.ssm.resize(32, 5);
  expect_error([&] { block.step(VectorX<T>::Zero(16), wrong); }, {"state.ssm", "32 x 4", "32 x 5"});
}

}  // namespace
}  // namespace ssm::test
