// The Mamba block: the golden case of the reference block (forward, token-by-token step and the final
// conv and SSM states), a direct double implementation of the block for the options (in_proj / out_proj
// biases, no conv bias, fractional expand), forward against step, chunked prefill, float against double,
// no allocation in step, and bad parameters and inputs.

#include "allocation_guard.hpp"  // first: it configures Eigen (the step test proves no allocation)

#include "test_support.hpp"

#include "ssm/layers/mamba.hpp"

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
  const MatrixX<T> conv_bias = random_normal<T>(di, 1, gen) / T(4);  // drawn either way: same weights otherwise
  if (c.conv_bias) p.conv1d_bias = conv_bias;
  p.x_proj_weight = random_normal<T>(R + 2 * N, di, gen) / T(std::sqrt(double(di)));
  p.dt_proj_weight = random_normal<T>(di, R, gen) / T(std::sqrt(double(R)));
  p.dt_proj_bias = (random_normal<T>(di, 1, gen).array() - T(3)).matrix();
  p.A_log.resize(di, N);
  for (Index d = 0; d < di; ++d)
    for (Index n = 0; n < N; ++n) p.A_log(d, n) = T(std::log(double(n + 1)));
  p.D = VectorX<T>::Ones(di);
  p.out_proj_weight = random_normal<T>(c.d_model, di, gen) / T(std::sqrt(double(di)));
  if (c.bias) {
    p.in_proj_bias = random_normal<T>(2 * di, 1, gen) / T(2);
    p.out_proj_bias = random_normal<T>(c.d_model, 1, gen) / T(2);
  }
  return p;
}

template <class To, class From>
MambaParams<To> cast_params(const MambaParams<From>& q) {
  MambaParams<To> p;
  p.config = q.config;
  p.in_proj_weight = q.in_proj_weight.template cast<To>();
  p.in_proj_bias = q.in_proj_bias.template cast<To>();
  p.conv1d_weight = q.conv1d_weight.template cast<To>();
  p.conv1d_bias = q.conv1d_bias.template cast<To>();
  p.x_proj_weight = q.x_proj_weight.template cast<To>();
  p.dt_proj_weight = q.dt_proj_weight.template cast<To>();
  p.dt_proj_bias = q.dt_proj_bias.template cast<To>();
  p.A_log = q.A_log.template cast<To>();
  p.D = q.D.template cast<To>();
  p.out_proj_weight = q.out_proj_weight.template cast<To>();
  p.out_proj_bias = q.out_proj_bias.template cast<To>();
  return p;
}

/// The block written out as the reference's step() in plain loops, in long double, from zero
/// states: the independent answer for the options (biases, no conv bias, fractional expand).
///   xz = W_in u_t + b_in;  conv window of the last d_conv x;  xc = silu(sum_k w_k x_{t-K+1+k} + b_conv)
///   [r, B, C] = W_x xc;  delta = softplus(W_dt r + b_dt);  h = exp(delta A) h + delta B xc
///   y = (C . h + D xc) silu(z);  out = W_out y + b_out
MatrixX<double> direct_forward(const MambaParams<double>& p, const MatrixX<double>& u) {
  using LD = long double;
  const MambaConfig& c = p.config;
  const Index di = c.d_inner(), N = c.d_state, R = c.rank(), K = c.d_conv, L = u.rows(), dm = c.d_model;
  auto silu = [](LD v) { return v / (1 + std::exp(-v)); };
  auto softplus = [](LD v) { return v > 20 ? v : std::log1p(std::exp(v)); };
  std::vector<std::vector<LD>> window(std::size_t(di), std::vector<LD>(std::size_t(K), 0));
  std::vector<std::vector<LD>> h(std::size_t(di), std::vector<LD>(std::size_t(N), 0));
  MatrixX<double> out(L, dm);
  for (Index t = 0; t < L; ++t) {
    std::vector<LD> xz(static_cast<std::size_t>(2 * di)), xc(static_cast<std::size_t>(di)),
        dbl(static_cast<std::size_t>(R + 2 * N)), y(static_cast<std::size_t>(di));
    for (Index r = 0; r < 2 * di; ++r) {
      LD acc = c.bias ? LD(p.in_proj_bias[r]) : 0;
      for (Index j = 0; j < dm; ++j) acc += LD(p.in_proj_weight(r, j)) * LD(u(t, j));
      xz[std::size_t(r)] = acc;
    }
    for (Index d = 0; d < di; ++d) {
      auto& w = window[std::size_t(d)];
      w.erase(w.begin());
      w.push_back(xz[std::size_t(d)]);
      LD acc = c.conv_bias ? LD(p.conv1d_bias[d]) : 0;
      for (Index k = 0; k < K; ++k) acc += LD(p.conv1d_weight(d, k)) * w[std::size_t(k)];
      xc[std::size_t(d)] = silu(acc);
    }
    for (Index r = 0; r < R + 2 * N; ++r) {
      LD acc = 0;
      for (Index d = 0; d < di; ++d) acc += LD(p.x_proj_weight(r, d)) * xc[std::size_t(d)];
      dbl[std::size_t(r)] = acc;
    }
    for (Index d = 0; d < di; ++d) {
      LD pre = p.dt_proj_bias[d];
      for (Index r = 0; r < R; ++r) pre += LD(p.dt_proj_weight(d, r)) * dbl[std::size_t(r)];
      const LD delta = softplus(pre);
      LD acc = LD(p.D[d]) * xc[std::size_t(d)];
      for (Index n = 0; n < N; ++n) {
        LD& x = h[std::size_t(d)][std::size_t(n)];
        x = std::exp(-delta * std::exp(LD(p.A_log(d, n)))) * x + delta * dbl[std::size_t(R + n)] * xc[std::size_t(d)];
        acc += dbl[std::size_t(R + N + n)] * x;
      }
      y[std::size_t(d)] = acc * silu(xz[std::size_t(di + d)]);
    }
    for (Index m = 0; m < dm; ++m) {
      LD acc = c.bias ? LD(p.out_proj_bias[m]) : 0;
      for (Index d = 0; d < di; ++d) acc += LD(p.out_proj_weight(m, d)) * y[std::size_t(d)];
      out(t, m) = double(acc);
    }
  }
  return out;
}

TYPED_TEST(MambaBlockTest, GoldenForward) {
  using T = TypeParam;
  const Mamba<T> block(golden_params<T>());
  const auto x = golden(kCase, "x"), y = golden(kCase, "y");
  for (Index b = 0; b < x.shape[0]; ++b) {
    auto state = block.initial_state();
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
    auto state = block.initial_state();
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
    auto fs = block.initial_state();
    const Sequence<T> y = block.forward(u, fs);
    auto ss = block.initial_state();
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
    auto state = block.initial_state();
    MatrixX<T> joined(L, c.d_model);
    Index at = 0;
    for (Index len : {1, 2, 0, 3, 7, 1, 26}) {
      joined.middleRows(at, len) = block.forward(u.middleRows(at, len), state);
      at += len;
    }
    for (; at < L; ++at) joined.row(at) = block.step(u.row(at).transpose(), state).transpose();
    const double tol = 20 * double(scalar_traits<T>::epsilon) * L;
    SSM_EXPECT_NEAR_REL(joined, whole, tol) << "d_model " << c.d_model;
    auto ws = block.initial_state();
    block.forward(u, ws);
    SSM_EXPECT_NEAR_REL(state.conv, ws.conv, tol);
    SSM_EXPECT_NEAR_REL(state.ssm, ws.ssm, tol);
  }
}

/// Every combination of bias / conv_bias, with an integer and a fractional expand.
std::vector<MambaConfig> option_configs() {
  std::vector<MambaConfig> cs;
  for (double expand : {2.0, 1.5})
    for (bool bias : {false, true})
      for (bool conv_bias : {true, false}) {
        MambaConfig c;
        c.d_model = 5;  // expand 1.5: d_inner = int(7.5) = 7
        c.d_state = 6;
        c.d_conv = 3;
        c.expand = expand;
        c.bias = bias;
        c.conv_bias = conv_bias;
        cs.push_back(c);
      }
  return cs;
}

TYPED_TEST(MambaBlockTest, OptionsMatchDirectComputation) {
  using T = TypeParam;
  std::uint64_t seed = 70;
  for (const auto& c : option_configs()) {
    const auto pd = random_params<double>(c, seed++);
    const Mamba<T> block(cast_params<T>(pd));
    std::mt19937_64 gen(seed++);
    const MatrixX<double> u = random_normal<double>(23, c.d_model, gen);
    // The reference computed from the T-rounded weights and input, so only T's arithmetic differs.
    const MatrixX<double> expected =
        direct_forward(cast_params<double>(cast_params<T>(pd)), u.cast<T>().template cast<double>());
    const double tol = 20 * double(scalar_traits<T>::epsilon) * double(u.rows());
    const std::string what = detail::concat("expand ", c.expand, " bias ", c.bias, " conv_bias ", c.conv_bias);
    auto fs = block.initial_state();
    const Sequence<T> y = block.forward(u.cast<T>(), fs);
    SSM_EXPECT_NEAR_REL(y.template cast<double>(), expected, tol) << what;
    auto ss = block.initial_state();
    MatrixX<T> ys(u.rows(), c.d_model);
    for (Index t = 0; t < u.rows(); ++t) ys.row(t) = block.step(u.row(t).transpose().cast<T>(), ss).transpose();
    SSM_EXPECT_NEAR_REL(ys.template cast<double>(), expected, tol) << what;
    SSM_EXPECT_NEAR_REL(ss.ssm, fs.ssm, tol) << what;
    SSM_EXPECT_NEAR_REL(ss.conv, fs.conv, tol) << what;
  }
}

TEST(MambaBlock, BiasesAndConvBiasChangeTheOutputAsTheyShould) {
  // in_proj with bias b equals no bias on an input whose projection is shifted by b (here: the bias
  // only on the z half, b = W_in v for a chosen v, so in_proj(u) + b = in_proj(u + v)); out_proj's
  // bias adds a constant row; conv_bias false equals conv_bias true with a zero bias.
  MambaConfig c;
  c.d_model = 6;
  c.d_state = 4;
  c.expand = 2;
  std::mt19937_64 gen(5);
  const auto plain = random_params<double>(c, 90);
  const MatrixX<double> u = random_normal<double>(17, c.d_model, gen);
  const VectorX<double> v = random_normal<double>(c.d_model, 1, gen);
  MambaParams<double> biased = plain;
  biased.config.bias = true;
  biased.in_proj_bias = plain.in_proj_weight * v;
  biased.out_proj_bias = VectorX<double>::LinSpaced(c.d_model, -1, 1);
  const Sequence<double> shifted = Mamba<double>(plain).forward((u.rowwise() + v.transpose()).eval());
  const Sequence<double> with_bias = Mamba<double>(biased).forward(u);
  SSM_EXPECT_NEAR_REL(with_bias, (shifted.rowwise() + biased.out_proj_bias.transpose()).eval(), 1e-13);
  MambaParams<double> zero_bias = plain, no_bias = plain;
  zero_bias.conv1d_bias.setZero();
  no_bias.config.conv_bias = false;
  no_bias.conv1d_bias.resize(0);
  EXPECT_EQ(Mamba<double>(no_bias).forward(u), Mamba<double>(zero_bias).forward(u));
}

TEST(MambaBlock, DirectComputationReproducesTheGoldenCase) {
  // The direct implementation above is itself checked against the reference's output.
  const auto x = golden(kCase, "x");
  for (Index b = 0; b < x.shape[0]; ++b)
    SSM_EXPECT_NEAR_REL(direct_forward(golden_params<double>(), batch_slab<double>(x, b)),
                        batch_slab<double>(golden(kCase, "y"), b), 1e-5);
}

TEST(MambaBlock, FractionalExpand) {
  MambaConfig c;
  c.d_model = 5;
  c.expand = 1.5;
  EXPECT_EQ(c.d_inner(), 7);  // int(1.5 * 5)
  c.d_model = 10;
  c.expand = 2.25;
  EXPECT_EQ(c.d_inner(), 22);
  c.expand = 2;
  EXPECT_EQ(c.d_inner(), 20);
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
  c.bias = true;  // the bias adds must not allocate either
  const Mamba<T> block(random_params<T>(c, 3));
  auto state = block.initial_state();
  const VectorX<T> u = VectorX<T>::Ones(c.d_model);
  block.step(u, state);  // first call: one-time initialisation (CPU feature detection)
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (int i = 0; i < 10; ++i) block.step(u, state); }, why), 0) << why;
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
    auto p = good;  // biases present without config.bias, absent with it, conv bias against conv_bias
    p.in_proj_bias = VectorX<T>::Zero(64);
    expect_error([&] { Mamba<T> m(p); }, {"in_proj_bias", "config.bias is false"});
    p = good;
    p.out_proj_bias = VectorX<T>::Zero(16);
    expect_error([&] { Mamba<T> m(p); }, {"out_proj_bias", "config.bias is false"});
    p = good;
    p.config.bias = true;
    expect_error([&] { Mamba<T> m(p); }, {"in_proj_bias", "64", "config.bias is true"});
    p.in_proj_bias = VectorX<T>::Zero(64);
    expect_error([&] { Mamba<T> m(p); }, {"out_proj_bias", "16", "config.bias is true"});
    p.out_proj_bias = VectorX<T>::Zero(16);
    EXPECT_NO_THROW(Mamba<T> m(p));
    p = good;
    p.config.conv_bias = false;
    expect_error([&] { Mamba<T> m(p); }, {"conv1d_bias", "config.conv_bias is false"});
  }
  {
    auto p = good;
    p.config.expand = 0.03;  // d_inner = int(0.48) = 0
    expect_error([&] { Mamba<T> m(p); }, {"config.expand", "0.03"});
    p.config.expand = std::numeric_limits<double>::quiet_NaN();
    expect_error([&] { Mamba<T> m(p); }, {"config.expand"});
  }
  {
    auto p = good;
    p.A_log(3, 1) = std::numeric_limits<T>::quiet_NaN();
    expect_error([&] { Mamba<T> m(p); }, {"A_log", "finite"});
  }
  const Mamba<T> block(good);
  expect_error([&] { block.forward(MatrixX<T>::Zero(5, 15)); }, {"Mamba::forward", "u", "5 x 15"});
  auto state = block.initial_state();
  expect_error([&] { block.step(VectorX<T>::Zero(17), state); }, {"Mamba::step", "u", "17"});
  auto wrong = state;
  wrong.ssm.resize(32, 5);
  expect_error([&] { block.step(VectorX<T>::Zero(16), wrong); }, {"state.ssm", "32 x 4", "32 x 5"});
}

}  // namespace
}  // namespace ssm::test
