// The Mamba block: the golden case of the reference block (forward, token-by-token step and the final
// conv and SSM states), a direct double implementation of the block for the options (in_proj / out_proj
// biases, no conv bias, fractional expand), forward against step, chunked prefill, float against double,
// no allocation in step, strided and aliased step vectors, expressions as inputs, the reference's
// initialisation, and bad parameters and inputs.

#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

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
    if (c.dt_bc_norm)  // Falcon-Mamba: r, B and C each divided by sqrt(mean of its squares + eps)
      for (const auto& [begin, count] : {std::pair<Index, Index>{0, R}, {R, N}, {R + N, N}}) {
        LD mean_square = 0;
        for (Index i = begin; i < begin + count; ++i) mean_square += dbl[std::size_t(i)] * dbl[std::size_t(i)];
        mean_square /= LD(count);
        for (Index i = begin; i < begin + count; ++i) dbl[std::size_t(i)] /= std::sqrt(mean_square + LD(c.dt_bc_norm_eps));
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
    for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t), state, out.row(t));
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
    for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t), ss, ys.row(t));
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
    for (; at < L; ++at) block.step(u.row(at), state, joined.row(at));
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
  // Falcon-Mamba's norms of dt, B and C: dt_rank 3 (d_model 40), and dt_rank 1 with every option and a large eps.
  MambaConfig falcon;
  falcon.d_model = 40;
  falcon.d_state = 6;
  falcon.d_conv = 3;
  falcon.dt_bc_norm = true;
  cs.push_back(falcon);
  MambaConfig falcon_options = cs[7];  // expand 1.5, bias, no conv bias
  falcon_options.dt_bc_norm = true;
  falcon_options.dt_bc_norm_eps = 1e-2;
  cs.push_back(falcon_options);
  return cs;
}

TYPED_TEST(MambaBlockTest, OptionsMatchDirectComputation) {
  using T = TypeParam;
  std::uint64_t seed = 70;
  for (const auto& c : option_configs()) {
    const auto pd = random_params<double>(c, seed++);
    const Mamba<T> block(pd.template cast<T>());
    std::mt19937_64 gen(seed++);
    const MatrixX<double> u = random_normal<double>(23, c.d_model, gen);
    // The reference computed from the T-rounded weights and input, so only T's arithmetic differs.
    const MatrixX<double> expected =
        direct_forward(pd.template cast<T>().template cast<double>(), u.cast<T>().template cast<double>());
    const double tol = 20 * double(scalar_traits<T>::epsilon) * double(u.rows());
    const std::string what = ssm::detail::concat("expand ", c.expand, " bias ", c.bias, " conv_bias ", c.conv_bias,
                                                 " dt_bc_norm ", c.dt_bc_norm);
    auto fs = block.initial_state();
    const Sequence<T> y = block.forward(u.cast<T>(), fs);
    SSM_EXPECT_NEAR_REL(y.template cast<double>(), expected, tol) << what;
    auto ss = block.initial_state();
    MatrixX<T> ys = u.cast<T>();
    for (Index t = 0; t < u.rows(); ++t) block.step(ys.row(t), ss, ys.row(t));  // in place
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
  VectorX<T> y(c.d_model);
  block.step(u, state, y);  // first call: one-time initialisation (CPU feature detection)
  std::string why;
  EXPECT_EQ(allocations_during([&] { for (int i = 0; i < 10; ++i) block.step(u, state, y); }, why), 0) << why;
  // A strided row of a sequence, stepped in place (y aliasing u): no copy to the heap either.
  MatrixX<T> x = MatrixX<T>::Ones(5, c.d_model);
  EXPECT_EQ(allocations_during([&] { for (Index t = 0; t < 5; ++t) block.step(x.row(t), state, x.row(t)); }, why), 0)
      << why;
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
  VectorX<T> y(16), y_long(17);
  expect_error([&] { block.step(VectorX<T>::Zero(17), state, y); }, {"Mamba::step", "u", "17"});
  expect_error([&] { block.step(VectorX<T>::Zero(16), state, y_long); }, {"Mamba::step", "y", "17"});
  auto wrong = state;
  wrong.ssm.resize(32, 5);
  expect_error([&] { block.step(VectorX<T>::Zero(16), wrong, y); }, {"state.ssm", "32 x 4", "32 x 5"});
}

TYPED_TEST(MambaBlockTest, ForwardFromZeroEqualsForwardFromInitialStateEqualsSteps) {
  using T = TypeParam;
  std::uint64_t seed = 200;
  for (const auto& c : test_configs()) {
    const Mamba<T> block(random_params<T>(c, seed++));
    std::mt19937_64 gen(seed++);
    const MatrixX<T> u = random_normal<T>(29, c.d_model, gen);
    auto from_initial = block.initial_state();
    const Sequence<T> y0 = block.forward(u);
    EXPECT_EQ(block.forward(u, from_initial), y0) << "d_model " << c.d_model;  // the same computation
    auto stepped = block.initial_state();
    MatrixX<T> ys(u.rows(), c.d_model);
    for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t), stepped, ys.row(t));
    const double tol = 20 * double(scalar_traits<T>::epsilon) * double(u.rows());
    SSM_EXPECT_NEAR_REL(ys, y0, tol) << "d_model " << c.d_model;
    SSM_EXPECT_NEAR_REL(stepped.ssm, from_initial.ssm, tol);
    SSM_EXPECT_NEAR_REL(stepped.conv, from_initial.conv, tol);  // in_proj outputs: GEMV against GEMM
    // reset() is the initial state again.
    stepped.reset();
    EXPECT_EQ(block.forward(u, stepped), y0);
  }
}

TYPED_TEST(MambaBlockTest, StepTakesStridedRowsAndMayWriteOverItsInput) {
  using T = TypeParam;
  MambaConfig c = test_configs()[0];
  const Mamba<T> block(random_params<T>(c, 300));
  std::mt19937_64 gen(301);
  const MatrixX<T> u = random_normal<T>(9, c.d_model, gen);  // column-major: a row is strided
  // Contiguous copies in and out: the baseline.
  auto s0 = block.initial_state();
  MatrixX<T> expected(u.rows(), c.d_model);
  for (Index t = 0; t < u.rows(); ++t) {
    const VectorX<T> ut = u.row(t).transpose();
    VectorX<T> yt(c.d_model);
    block.step(ut, s0, yt);
    expected.row(t) = yt.transpose();
  }
  // Strided rows in and out.
  auto s1 = block.initial_state();
  MatrixX<T> strided(u.rows(), c.d_model);
  for (Index t = 0; t < u.rows(); ++t) block.step(u.row(t), s1, strided.row(t));
  EXPECT_EQ(strided, expected);
  // In place: y is u.
  auto s2 = block.initial_state();
  MatrixX<T> x = u;
  for (Index t = 0; t < x.rows(); ++t) block.step(x.row(t), s2, x.row(t));
  EXPECT_EQ(x, expected);
  // A contiguous vector stepped in place.
  auto s3 = block.initial_state();
  for (Index t = 0; t < u.rows(); ++t) {
    VectorX<T> v = u.row(t).transpose();
    block.step(v, s3, v);
    EXPECT_EQ(v, VectorX<T>(expected.row(t).transpose())) << "t = " << t;
  }
  EXPECT_EQ(s1.ssm, s0.ssm);
  EXPECT_EQ(s2.ssm, s0.ssm);
  EXPECT_EQ(s3.ssm, s0.ssm);
}

TYPED_TEST(MambaBlockTest, ForwardTakesExpressionsBlocksAndMaps) {
  // Inputs are taken as Eigen::Ref: a product is evaluated once, a block and a map bind in place,
  // a row-major map is copied to the column-major layout; all give the evaluated matrix's result.
  using T = TypeParam;
  MambaConfig c = test_configs()[0];
  const Mamba<T> block(random_params<T>(c, 400));
  std::mt19937_64 gen(401);
  const Index L = 21;
  const MatrixX<T> x = random_normal<T>(L, 7, gen), W = random_normal<T>(7, c.d_model, gen);
  const MatrixX<T> u = x * W;
  const Sequence<T> expected = block.forward(u);
  EXPECT_EQ(block.forward(x * W), expected);
  MatrixX<T> big = MatrixX<T>::Zero(L + 4, c.d_model + 3);
  big.block(2, 1, L, c.d_model) = u;
  EXPECT_EQ(block.forward(big.block(2, 1, L, c.d_model)), expected);
  const Eigen::Map<const MatrixX<T>> map(u.data(), L, c.d_model);
  EXPECT_EQ(block.forward(map), expected);
  const RowMatrixX<T> rows = u;
  EXPECT_EQ(block.forward(Eigen::Map<const RowMatrixX<T>>(rows.data(), L, c.d_model)), expected);
  auto s = block.initial_state();
  EXPECT_EQ(block.forward(x * W, s), expected);
  // A step from an expression (a product for one token) equals the step from the evaluated vector.
  auto s1 = block.initial_state(), s2 = block.initial_state();
  VectorX<T> y1(c.d_model), y2(c.d_model);
  const VectorX<T> xt = x.row(0).transpose();
  block.step(W.transpose() * xt, s1, y1);
  block.step(VectorX<T>(W.transpose() * xt), s2, y2);
  EXPECT_EQ(y1, y2);
}

TYPED_TEST(MambaBlockTest, ParamsCastEveryField) {
  using T = TypeParam;
  MambaConfig c = option_configs()[2];  // bias and conv_bias: every field present
  ASSERT_TRUE(c.bias);
  const auto p = random_params<T>(c, 500);
  const MambaParams<double> pd = p.template cast<double>();
  const MambaParams<T> back = pd.template cast<T>();  // T -> double -> T is exact
  EXPECT_EQ(back.in_proj_weight, p.in_proj_weight);
  EXPECT_EQ(back.in_proj_bias, p.in_proj_bias);
  EXPECT_EQ(back.conv1d_weight, p.conv1d_weight);
  EXPECT_EQ(back.conv1d_bias, p.conv1d_bias);
  EXPECT_EQ(back.x_proj_weight, p.x_proj_weight);
  EXPECT_EQ(back.dt_proj_weight, p.dt_proj_weight);
  EXPECT_EQ(back.dt_proj_bias, p.dt_proj_bias);
  EXPECT_EQ(back.A_log, p.A_log);
  EXPECT_EQ(back.D, p.D);
  EXPECT_EQ(back.out_proj_weight, p.out_proj_weight);
  EXPECT_EQ(back.out_proj_bias, p.out_proj_bias);
  EXPECT_EQ(pd.config.d_inner(), c.d_inner());
  EXPECT_EQ(Mamba<double>(pd).forward(MatrixX<double>::Ones(3, c.d_model)).rows(), 3);
}

/// Every entry of m within [-bound, bound], and the largest near the bound (the range is used, not
/// just respected: a draw of n values from U(-b, b) has max |w| > b (1 - 10 / n) with probability
/// 1 - e^-10 or so).
template <class T>
void expect_uniform_within(const MatrixX<T>& m, double bound, const char* name) {
  ASSERT_GT(m.size(), 0) << name;
  const double largest = double(m.cwiseAbs().maxCoeff());
  EXPECT_LE(largest, double(T(bound))) << name;
  EXPECT_GE(largest, bound * (1 - 10.0 / double(m.size()))) << name;
  EXPECT_LT(std::abs(double(m.mean())), 4 * bound / std::sqrt(3.0 * double(m.size()))) << name << ": mean";
}

TYPED_TEST(MambaBlockTest, InitialiseFollowsTheReferenceRecipe) {
  using T = TypeParam;
  const double eps = double(scalar_traits<T>::epsilon);
  for (bool bias : {false, true}) {
    MambaConfig c;
    c.d_model = 48;
    c.d_state = 12;
    c.d_conv = 4;
    c.expand = 2;
    c.bias = bias;
    c.conv_bias = !bias;
    std::mt19937_64 gen(7);
    const double dt_min = 2e-3, dt_max = 0.2, floor = 1e-4;
    const auto block = Mamba<T>::initialise(c, gen, dt_min, dt_max, floor);
    const auto& p = block.params();
    const Index di = c.d_inner(), N = c.d_state, R = c.rank(), K = c.d_conv;
    EXPECT_EQ(block.channels(), c.d_model);
    ASSERT_EQ(p.in_proj_weight.rows(), 2 * di);
    ASSERT_EQ(p.in_proj_weight.cols(), c.d_model);
    EXPECT_EQ(p.in_proj_bias.size(), bias ? 2 * di : 0);
    EXPECT_EQ(p.out_proj_bias.size(), bias ? c.d_model : 0);
    EXPECT_EQ(p.conv1d_bias.size(), bias ? 0 : di);
    // A_log rows are log(1 .. N), D = 1.
    for (Index d = 0; d < di; ++d)
      for (Index n = 0; n < N; ++n) ASSERT_EQ(p.A_log(d, n), T(std::log(double(n + 1)))) << d << " " << n;
    EXPECT_EQ(p.D, VectorX<T>::Ones(di));
    // nn.Linear / nn.Conv1d defaults: U(+-1/sqrt(fan_in)); dt_proj weight U(+-dt_rank^-1/2).
    expect_uniform_within<T>(p.in_proj_weight, 1 / std::sqrt(double(c.d_model)), "in_proj_weight");
    expect_uniform_within<T>(p.x_proj_weight, 1 / std::sqrt(double(di)), "x_proj_weight");
    expect_uniform_within<T>(p.out_proj_weight, 1 / std::sqrt(double(di)), "out_proj_weight");
    expect_uniform_within<T>(p.conv1d_weight, 1 / std::sqrt(double(K)), "conv1d_weight");
    expect_uniform_within<T>(p.dt_proj_weight, 1 / std::sqrt(double(R)), "dt_proj_weight");
    if (bias) {
      expect_uniform_within<T>(p.in_proj_bias, 1 / std::sqrt(double(c.d_model)), "in_proj_bias");
      expect_uniform_within<T>(p.out_proj_bias, 1 / std::sqrt(double(di)), "out_proj_bias");
    } else {
      expect_uniform_within<T>(p.conv1d_bias, 1 / std::sqrt(double(K)), "conv1d_bias");
    }
    // softplus(dt_proj.bias) = dt, log-uniform in [dt_min, dt_max]: within the range (to the
    // rounding of the bias to T), and spread over it (log dt has mean and range of U(log dt_min, log dt_max)).
    double lo = 1e300, hi = 0, mean_log = 0;
    for (Index d = 0; d < di; ++d) {
      const double dt = std::log1p(std::exp(double(p.dt_proj_bias[d])));
      lo = std::min(lo, dt);
      hi = std::max(hi, dt);
      mean_log += std::log(dt) / double(di);
    }
    EXPECT_GE(lo, dt_min * (1 - 64 * eps));
    EXPECT_LE(hi, dt_max * (1 + 64 * eps));
    EXPECT_LT(lo, dt_min * 1.5);
    EXPECT_GT(hi, dt_max / 1.5);
    const double mid = 0.5 * (std::log(dt_min) + std::log(dt_max)), half = 0.5 * (std::log(dt_max) - std::log(dt_min));
    EXPECT_LT(std::abs(mean_log - mid), 4 * half / std::sqrt(3.0 * double(di)));
    // The block runs.
    EXPECT_TRUE(block.forward(MatrixX<T>::Ones(5, c.d_model)).allFinite());
  }
}

TYPED_TEST(MambaBlockTest, InitialiseClampsDtAtTheFloorAndChecksItsArguments) {
  using T = TypeParam;
  MambaConfig c;
  c.d_model = 16;
  std::mt19937_64 gen(9);
  // Every dt drawn in [1e-6, 1e-5] is raised to the floor 1e-4.
  const auto block = Mamba<T>::initialise(c, gen, 1e-6, 1e-5, 1e-4);
  for (Index d = 0; d < c.d_inner(); ++d)
    EXPECT_NEAR(std::log1p(std::exp(double(block.params().dt_proj_bias[d]))), 1e-4, 1e-4 * 64 * double(scalar_traits<T>::epsilon));
  // dt_scale scales the dt_proj weight's bound.
  std::mt19937_64 gen2(9);
  const auto scaled = Mamba<T>::initialise(c, gen2, 1e-3, 0.1, 1e-4, 0.25);
  EXPECT_LE(double(scaled.params().dt_proj_weight.cwiseAbs().maxCoeff()), double(T(0.25 / std::sqrt(double(c.rank())))));
  // The same generator state gives the same block.
  std::mt19937_64 a(5), b(5);
  EXPECT_EQ(Mamba<T>::initialise(c, a).params().in_proj_weight, Mamba<T>::initialise(c, b).params().in_proj_weight);
  expect_error([&] { Mamba<T>::initialise(c, gen, 0.0, 0.1); }, {"Mamba::initialise", "dt_min"});
  expect_error([&] { Mamba<T>::initialise(c, gen, 0.1, 0.01); }, {"dt_max"});
  expect_error([&] { Mamba<T>::initialise(c, gen, 1e-3, 0.1, -1.0); }, {"dt_init_floor"});
  expect_error([&] { Mamba<T>::initialise(c, gen, 1e-3, 0.1, 1e-4, 0.0); }, {"dt_scale"});
  MambaConfig bad = c;
  bad.d_state = 0;
  expect_error([&] { Mamba<T>::initialise(bad, gen); }, {"Mamba::initialise", "config.d_state"});
}

}  // namespace
}  // namespace ssm::test
