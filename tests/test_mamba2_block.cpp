// The Mamba-2 mixer (ssm/layers/mamba2.hpp): the golden blocks of the official Mamba2 module (forward,
// token-by-token step, prefill then step, the caches), a direct double-precision recomputation for the
// options the golden blocks do not cover (gated-MLP split, no rmsnorm, dt_limit), forward == steps,
// chunked prefill == one pass, expression and strided inputs, allocation-free steps, bad configurations.

#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

#include "test_support.hpp"

#include "ssm/core/layer.hpp"
#include "ssm/layers/mamba2.hpp"

#include <cmath>
#include <random>
#include <string>
#include <type_traits>

namespace {

using ssm::Index;
using ssm::MatrixX;
using ssm::VectorX;

template <class T>
class Mamba2BlockTest : public ::testing::Test {};
TYPED_TEST_SUITE(Mamba2BlockTest, ssm::test::Scalars);

// The layer concept, checked at compile time.
static_assert(ssm::is_layer_v<ssm::Mamba2<float>> && ssm::is_layer_v<ssm::Mamba2<double>>);
static_assert(std::is_same_v<ssm::Mamba2<float>::Params, ssm::Mamba2Params<float>>);
static_assert(std::is_same_v<decltype(std::declval<const ssm::Mamba2Params<float>&>().cast<double>()),
                             ssm::Mamba2Params<double>>);
static_assert(std::is_same_v<decltype(std::declval<const ssm::Mamba2<double>&>().initial_state()),
                             ssm::Mamba2<double>::State>);
static_assert(std::is_same_v<decltype(std::declval<const ssm::Mamba2<double>&>().forward(ssm::Sequence<double>())),
                             ssm::Sequence<double>>);
static_assert(std::is_same_v<decltype(std::declval<const ssm::Mamba2<double>&>().channels()), Index>);

/// The (b, ...) slab of a C-order array (batch, d1, ...) as rows x (rest), row-major within the slab.
template <class T>
MatrixX<T> slab(const ssm::io::NpyArray& a, Index b, Index rows) {
  const auto flat = a.values<T>();
  const Index per = Index(flat.size()) / a.shape[0], cols = per / rows;
  MatrixX<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = flat[std::size_t(b * per + i * cols + j)];
  return m;
}

/// A whole array as rows x (rest).
template <class T>
MatrixX<T> whole(const ssm::io::NpyArray& a, Index rows) {
  const auto flat = a.values<T>();
  const Index cols = Index(flat.size()) / rows;
  MatrixX<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = flat[std::size_t(i * cols + j)];
  return m;
}

template <class T>
VectorX<T> vec(const ssm::io::NpyArray& a) {
  return whole<T>(a, Index(a.values<double>().size()));
}

template <class T>
ssm::Mamba2<T> golden_block(const std::string& name) {
  using ssm::test::golden;
  ssm::Mamba2Params<T> p;
  auto& c = p.config;
  const bool hdim = name == "mamba2_block_D_hdim_gate_bias";
  c.d_model = 32;
  c.d_state = 8;
  c.d_conv = 4;
  c.expand = 2;
  c.headdim = 8;
  c.ngroups = hdim ? 4 : 2;
  c.D_has_hdim = hdim;
  c.rmsnorm = true;
  c.norm_before_gate = hdim;
  c.bias = hdim;
  c.conv_bias = !hdim;
  p.dt_bias = vec<T>(golden(name, "dt_bias"));
  p.A_log = vec<T>(golden(name, "A_log"));
  p.D = vec<T>(golden(name, "D"));
  p.in_proj_weight = whole<T>(golden(name, "in_proj_weight"), c.d_in_proj());
  p.conv1d_weight = whole<T>(golden(name, "conv1d_weight"), c.conv_dim());
  p.norm_weight = vec<T>(golden(name, "norm_weight"));
  p.out_proj_weight = whole<T>(golden(name, "out_proj_weight"), c.d_model);
  if (c.conv_bias) p.conv1d_bias = vec<T>(golden(name, "conv1d_bias"));
  if (c.bias) {
    p.in_proj_bias = vec<T>(golden(name, "in_proj_bias"));
    p.out_proj_bias = vec<T>(golden(name, "out_proj_bias"));
  }
  return ssm::Mamba2<T>(std::move(p));
}

template <class T>
void check_golden_block(const std::string& name) {
  using ssm::test::golden;
  const ssm::Mamba2<T> block = golden_block<T>(name);
  const auto u = golden(name, "u"), y = golden(name, "y"), y_step = golden(name, "y_step");
  const auto y_ps = golden(name, "y_prefill_then_step");
  const Index batch = u.shape[0], L = u.shape[1], L1 = 21;
  const Index HP = block.config().nheads() * block.config().headdim, cd = block.config().conv_dim();
  const double tol = 1e-5;  // float32 reference, relative to the largest value
  for (Index b = 0; b < batch; ++b) {
    SCOPED_TRACE(::testing::Message() << name << " batch " << b);
    const MatrixX<T> ub = slab<T>(u, b, L), yb = slab<T>(y, b, L);
    // Full forward, and its final caches against the reference's after L steps.
    auto s = block.initial_state();
    SSM_EXPECT_NEAR_REL(block.forward(ub, s), yb, tol);
    SSM_EXPECT_NEAR_REL(s.conv, slab<T>(golden(name, "conv_state"), b, cd), tol);
    SSM_EXPECT_NEAR_REL(s.ssm, slab<T>(golden(name, "ssm_state"), b, HP), tol);
    SSM_EXPECT_NEAR_REL(block.forward(ub), yb, tol);
    // Token by token from zero states.
    auto st = block.initial_state();
    MatrixX<T> ys(L, block.channels());
    for (Index t = 0; t < L; ++t) block.step(ub.row(t).transpose(), st, ys.row(t).transpose());
    SSM_EXPECT_NEAR_REL(ys, slab<T>(y_step, b, L), tol);
    SSM_EXPECT_NEAR_REL(st.conv, slab<T>(golden(name, "conv_state"), b, cd), tol);
    SSM_EXPECT_NEAR_REL(st.ssm, slab<T>(golden(name, "ssm_state"), b, HP), tol);
    // Prefill L1 tokens, then step.
    auto sp = block.initial_state();
    MatrixX<T> yp(L, block.channels());
    yp.topRows(L1) = block.forward(ub.topRows(L1), sp);
    SSM_EXPECT_NEAR_REL(sp.conv, slab<T>(golden(name, "prefill_conv_state"), b, cd), tol);
    SSM_EXPECT_NEAR_REL(sp.ssm, slab<T>(golden(name, "prefill_ssm_state"), b, HP), tol);
    for (Index t = L1; t < L; ++t) block.step(ub.row(t).transpose(), sp, yp.row(t).transpose());
    SSM_EXPECT_NEAR_REL(yp, slab<T>(y_ps, b, L), tol);
  }
}

TYPED_TEST(Mamba2BlockTest, GoldenBlock) { check_golden_block<TypeParam>("mamba2_block"); }
TYPED_TEST(Mamba2BlockTest, GoldenPerChannelSkipNormBeforeGateBiases) {
  check_golden_block<TypeParam>("mamba2_block_D_hdim_gate_bias");
}

/// Small random configurations, covering what the golden blocks do not.
ssm::Mamba2Config small_config(int variant) {
  ssm::Mamba2Config c;
  c.d_model = 12;
  c.d_state = 5;
  c.d_conv = 3;
  c.expand = 2;
  c.headdim = 4;
  c.ngroups = 2;
  c.chunk_size = 7;
  switch (variant) {
    case 0:  // gated-MLP part: d_ssm 16 of d_inner 24 (4 heads, 2 groups)
      c.d_ssm = 16;
      break;
    case 1:  // no rmsnorm: the scan gates; per-channel D; biases; a dt clamp
      c.rmsnorm = false;
      c.D_has_hdim = true;
      c.bias = true;
      c.conv_bias = false;
      c.dt_limit_min = 0.02;
      c.dt_limit_max = 0.08;
      break;
    case 2:  // norm before gate, one group, d_conv 1, MLP part
      c.norm_before_gate = true;
      c.ngroups = 1;
      c.d_conv = 1;
      c.d_ssm = 8;
      break;
    case 4:  // Hugging Face's Mamba2: 3 groups of B and C, but one norm over all channels, its own eps
      c.ngroups = 3;
      c.norm_groups = 1;
      c.norm_eps = 1e-3;
      break;
    default:  // defaults otherwise: 6 heads in 3 groups
      c.ngroups = 3;
      break;
  }
  return c;
}

/// A block with random (not initialisation-shaped) parameters, so that every term matters.
template <class T>
ssm::Mamba2<T> random_block(const ssm::Mamba2Config& c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto p = ssm::Mamba2<double>::initialise(c, gen).params();
  using ssm::test::random_normal;
  p.D = random_normal<double>(p.D.size(), 1, gen);
  if (p.norm_weight.size()) p.norm_weight = (random_normal<double>(p.norm_weight.size(), 1, gen).array() + 1).matrix();
  p.dt_bias = (random_normal<double>(p.dt_bias.size(), 1, gen).array() - 2).matrix();
  return ssm::Mamba2<T>(p.template cast<T>());
}

/// The mixer computed directly from its definition in long double, one time step and one channel at a time.
MatrixX<double> direct_forward(const ssm::Mamba2Params<double>& p, const MatrixX<double>& u) {
  using LD = long double;
  const auto& c = p.config;
  const Index L = u.rows(), di = c.d_inner(), ds = c.ssm_channels(), dm = c.d_mlp(), H = c.nheads(), P = c.headdim;
  const Index G = c.ngroups, N = c.d_state, K = c.d_conv, cd = c.conv_dim();
  const Index norm_groups = c.norm_groups > 0 ? c.norm_groups : G, gs = ds / norm_groups;
  auto silu = [](LD v) { return v / (1 + std::exp(-v)); };
  Eigen::Matrix<LD, Eigen::Dynamic, Eigen::Dynamic> zx(L, c.d_in_proj()), xbc(L, cd);
  for (Index t = 0; t < L; ++t)
    for (Index o = 0; o < c.d_in_proj(); ++o) {
      LD a = c.bias ? LD(p.in_proj_bias[o]) : 0;
      for (Index i = 0; i < c.d_model; ++i) a += LD(p.in_proj_weight(o, i)) * LD(u(t, i));
      zx(t, o) = a;
    }
  for (Index t = 0; t < L; ++t)
    for (Index ch = 0; ch < cd; ++ch) {
      LD a = c.conv_bias ? LD(p.conv1d_bias[ch]) : 0;
      for (Index k = 0; k < K; ++k) {
        const Index s = t - (K - 1) + k;
        if (s >= 0) a += LD(p.conv1d_weight(ch, k)) * zx(s, 2 * dm + ds + ch);
      }
      xbc(t, ch) = silu(a);
    }
  MatrixX<double> out(L, c.d_model);
  std::vector<LD> S(std::size_t(H * P * N), 0);
  for (Index t = 0; t < L; ++t) {
    std::vector<LD> y(std::size_t(di), 0);
    for (Index h = 0; h < H; ++h) {
      const Index g = h / (H / G);
      LD d = zx(t, 2 * dm + ds + cd + h) + LD(p.dt_bias[h]);
      d = d > 20 ? d : std::log1p(std::exp(d));
      d = std::min(std::max(d, LD(c.dt_limit_min)), LD(c.dt_limit_max));
      const LD a = std::exp(-d * std::exp(LD(p.A_log[h])));
      for (Index q = 0; q < P; ++q) {
        const Index ch = h * P + q;
        const LD x = xbc(t, ch);
        LD acc = 0;
        for (Index n = 0; n < N; ++n) {
          LD& s = S[std::size_t(ch * N + n)];
          s = a * s + d * x * xbc(t, ds + g * N + n);
          acc += s * xbc(t, ds + G * N + g * N + n);
        }
        acc += LD(c.D_has_hdim ? p.D[ch] : p.D[h]) * x;
        if (!c.rmsnorm) acc *= silu(zx(t, 2 * dm + ch));
        y[std::size_t(dm + ch)] = acc;
      }
    }
    if (c.rmsnorm)
      for (Index g = 0; g < norm_groups; ++g) {
        LD ms = 0;
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          LD v = y[std::size_t(dm + j)];
          if (!c.norm_before_gate) v *= silu(zx(t, 2 * dm + j));
          ms += v * v;
        }
        const LD r = 1 / std::sqrt(ms / gs + LD(c.norm_eps));
        for (Index j = g * gs; j < (g + 1) * gs; ++j) {
          LD v = y[std::size_t(dm + j)];
          if (!c.norm_before_gate) v *= silu(zx(t, 2 * dm + j));
          v *= r * LD(p.norm_weight[j]);
          if (c.norm_before_gate) v *= silu(zx(t, 2 * dm + j));
          y[std::size_t(dm + j)] = v;
        }
      }
    for (Index j = 0; j < dm; ++j) y[std::size_t(j)] = silu(zx(t, j)) * zx(t, dm + j);  // first half gates
    for (Index o = 0; o < c.d_model; ++o) {
      LD a = c.bias ? LD(p.out_proj_bias[o]) : 0;
      for (Index j = 0; j < di; ++j) a += LD(p.out_proj_weight(o, j)) * y[std::size_t(j)];
      out(t, o) = double(a);
    }
  }
  return out;
}

TYPED_TEST(Mamba2BlockTest, MatchesDirectDefinition) {
  using T = TypeParam;
  for (int variant = 0; variant < 5; ++variant) {
    SCOPED_TRACE(::testing::Message() << "variant " << variant);
    const ssm::Mamba2Config c = small_config(variant);
    const ssm::Mamba2<T> block = random_block<T>(c, 100 + variant);
    std::mt19937_64 gen(7);
    const MatrixX<T> u = ssm::test::random_normal<T>(23, c.d_model, gen);
    const MatrixX<double> expected = direct_forward(block.params().template cast<double>(), u.template cast<double>());
    const double tol = std::is_same_v<T, double> ? 1e-11 : 2e-5;
    SSM_EXPECT_NEAR_REL(block.forward(u).template cast<double>(), expected, tol);
  }
}

// forward equals L steps; forward in pieces from a state equals one pass (pieces shorter than d_conv
// included), and so do the states; float and double.
TYPED_TEST(Mamba2BlockTest, ForwardEqualsStepsAndChunkedPrefill) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, double> ? 1e-11 : 2e-5;
  for (int variant = 0; variant < 5; ++variant) {
    SCOPED_TRACE(::testing::Message() << "variant " << variant);
    const ssm::Mamba2Config c = small_config(variant);
    const ssm::Mamba2<T> block = random_block<T>(c, 200 + variant);
    std::mt19937_64 gen(8);
    const Index L = 30;
    const MatrixX<T> u = ssm::test::random_normal<T>(L, c.d_model, gen);
    auto s_ref = block.initial_state();
    const MatrixX<T> y = block.forward(u, s_ref);

    auto s = block.initial_state();
    MatrixX<T> ys(L, c.d_model);
    for (Index t = 0; t < L; ++t) block.step(u.row(t).transpose(), s, ys.row(t).transpose());
    SSM_EXPECT_NEAR_REL(ys, y, tol);
    SSM_EXPECT_NEAR_REL(s.ssm, s_ref.ssm, tol);
    SSM_EXPECT_NEAR_REL(s.conv, s_ref.conv, tol);  // GEMM (forward) and GEMV (step) round differently

    for (Index L1 : {Index(1), Index(2), Index(13)}) {
      auto sc = block.initial_state();
      MatrixX<T> yc(L, c.d_model);
      yc.topRows(L1) = block.forward(u.topRows(L1), sc);
      yc.middleRows(L1, 1) = block.forward(u.middleRows(L1, 1), sc);
      yc.bottomRows(L - L1 - 1) = block.forward(u.bottomRows(L - L1 - 1), sc);
      SSM_EXPECT_NEAR_REL(yc, y, tol);
      SSM_EXPECT_NEAR_REL(sc.ssm, s_ref.ssm, tol);
      SSM_EXPECT_NEAR_REL(sc.conv, s_ref.conv, tol);
    }
    // reset() is the start of a stream again.
    s.reset();
    SSM_EXPECT_NEAR_REL(block.forward(u, s), y, tol);
  }
}

// Expressions (a product, a scaled block, a row-major matrix) are evaluated once; a strided step input
// (a row of a column-major sequence) with the output written over it.
TYPED_TEST(Mamba2BlockTest, ExpressionsAndStridedAliasedStep) {
  using T = TypeParam;
  const ssm::Mamba2Config c = small_config(0);
  const ssm::Mamba2<T> block = random_block<T>(c, 5);
  std::mt19937_64 gen(9);
  const Index L = 19;
  const MatrixX<T> u = ssm::test::random_normal<T>(L, c.d_model, gen);
  const MatrixX<T> y = block.forward(u);
  const MatrixX<T> I = MatrixX<T>::Identity(c.d_model, c.d_model);
  const double tol = ssm::scalar_traits<T>::tolerance;
  SSM_EXPECT_NEAR_REL(block.forward(u * I), y, tol);
  SSM_EXPECT_NEAR_REL(block.forward(T(0.5) * (T(2) * u)), y, tol);
  const ssm::RowMatrixX<T> ur = u;
  SSM_EXPECT_NEAR_REL(block.forward(ur), y, tol);
  const MatrixX<T> wide = [&] {
    MatrixX<T> w(L + 3, c.d_model + 2);
    w.setZero();
    w.block(3, 2, L, c.d_model) = u;
    return w;
  }();
  SSM_EXPECT_NEAR_REL(block.forward(wide.block(3, 2, L, c.d_model)), y, tol);

  MatrixX<T> buf = u;  // each step reads row t (stride L) and overwrites it with the output
  auto s = block.initial_state();
  for (Index t = 0; t < L; ++t) block.step(buf.row(t).transpose(), s, buf.row(t).transpose());
  const double step_tol = std::is_same_v<T, double> ? 1e-11 : 2e-5;
  SSM_EXPECT_NEAR_REL(buf, y, step_tol);
}

TYPED_TEST(Mamba2BlockTest, StepAllocatesNothing) {
  using T = TypeParam;
  for (int variant = 0; variant < 5; ++variant) {
    const ssm::Mamba2Config c = small_config(variant);
    const ssm::Mamba2<T> block = random_block<T>(c, 6);
    std::mt19937_64 gen(10);
    MatrixX<T> u = ssm::test::random_normal<T>(5, c.d_model, gen);
    auto s = block.initial_state();
    std::string why;
    EXPECT_EQ(ssm::test::allocations_during(
                  [&] {
                    for (Index t = 0; t < 5; ++t) block.step(u.row(t).transpose(), s, u.row(t).transpose());
                  },
                  why),
              0)
        << "variant " << variant << ": " << why;
  }
}

TYPED_TEST(Mamba2BlockTest, InitialiseFollowsTheReferenceRecipe) {
  using T = TypeParam;
  ssm::Mamba2Config c;
  c.d_model = 64;
  c.d_state = 16;
  c.headdim = 16;
  c.ngroups = 2;
  std::mt19937_64 gen(1), gen2(1);
  const auto block = ssm::Mamba2<T>::initialise(c, gen);
  const auto again = ssm::Mamba2<T>::initialise(c, gen2);
  const auto& p = block.params();
  EXPECT_EQ(p.in_proj_weight, again.params().in_proj_weight);  // deterministic per seed
  EXPECT_EQ(p.A_log.size(), 8);
  for (Index h = 0; h < 8; ++h) {
    EXPECT_GE(double(p.A_log[h]), std::log(1.0) - 1e-6);
    EXPECT_LE(double(p.A_log[h]), std::log(16.0) + 1e-6);
    const double dt = std::log1p(std::exp(double(p.dt_bias[h])));  // softplus(dt_bias) = dt
    EXPECT_GE(dt, 0.001 * (1 - 1e-5));
    EXPECT_LE(dt, 0.1 * (1 + 1e-5));
  }
  EXPECT_TRUE((p.D.array() == T(1)).all());
  EXPECT_TRUE((p.norm_weight.array() == T(1)).all());
  EXPECT_LE(double(p.in_proj_weight.cwiseAbs().maxCoeff()), 1 / std::sqrt(64.0));
  EXPECT_LE(double(p.conv1d_weight.cwiseAbs().maxCoeff()), 1 / std::sqrt(4.0));
  EXPECT_LE(double(p.out_proj_weight.cwiseAbs().maxCoeff()), 1 / std::sqrt(128.0));
  EXPECT_EQ(p.conv1d_bias.size(), c.conv_dim());
  EXPECT_EQ(p.in_proj_bias.size(), 0);
  std::mt19937_64 g3(3);
  const MatrixX<T> u = ssm::test::random_normal<T>(20, 64, g3);
  EXPECT_TRUE(block.forward(u).allFinite());
  // The floor: dt_min below it gives dt = floor exactly.
  ssm::Mamba2Init init;
  init.dt_min = 1e-6;
  init.dt_max = 2e-6;
  const auto floored = ssm::Mamba2<double>::initialise(c, gen, init);
  for (Index h = 0; h < 8; ++h) EXPECT_NEAR(std::log1p(std::exp(floored.params().dt_bias[h])), 1e-4, 1e-12);
}

TYPED_TEST(Mamba2BlockTest, CastGivesTheSameBlock) {
  using T = TypeParam;
  const ssm::Mamba2<double> b64 = random_block<double>(small_config(1), 4);
  const ssm::Mamba2<T> bt(b64.params().template cast<T>());
  std::mt19937_64 gen(2);
  const MatrixX<double> u = ssm::test::random_normal<double>(9, 12, gen);
  const double tol = std::is_same_v<T, double> ? 1e-14 : 2e-5;
  SSM_EXPECT_NEAR_REL(bt.forward(u.template cast<T>()).template cast<double>(), b64.forward(u), tol);
}

template <class F>
void expect_error_naming(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no ssm::error; expected one naming " << needle;
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TYPED_TEST(Mamba2BlockTest, BadConfigurationsAndShapesNameTheField) {
  using T = TypeParam;
  const ssm::Mamba2Config c0 = small_config(0);
  const ssm::Mamba2Params<T> good = random_block<T>(c0, 3).params();
  auto with = [&](auto change) {
    auto p = good;
    change(p);
    return p;
  };
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.ngroups = 3; })); }, "config.ngroups");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.d_ssm = 10; })); }, "config.d_ssm");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.d_ssm = 28; })); }, "config.d_ssm");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.headdim = 0; })); }, "config.headdim");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.d_model = 0; })); }, "config.d_model");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.d_conv = 0; })); }, "config.d_conv");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.chunk_size = 0; })); }, "config.chunk_size");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.norm_eps = 0; })); }, "config.norm_eps");
  expect_error_naming(
      [&] {
        (void)ssm::Mamba2<T>(with([](auto& p) {
          p.config.dt_limit_min = 0.5;
          p.config.dt_limit_max = 0.1;
        }));
      },
      "config.dt_limit");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.D_has_hdim = true; })); }, "D");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.bias = true; })); }, "in_proj_bias");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.conv_bias = false; })); }, "conv1d_bias");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.config.rmsnorm = false; })); }, "norm_weight");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.dt_bias.resize(3); })); }, "dt_bias");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.A_log.resize(5); })); }, "A_log");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.A_log[0] = NAN; })); }, "A_log");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.in_proj_weight.resize(10, 12); })); },
                      "in_proj_weight");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.conv1d_weight.resize(44, 4); })); }, "conv1d_weight");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.out_proj_weight.resize(12, 16); })); },
                      "out_proj_weight");
  expect_error_naming([&] { (void)ssm::Mamba2<T>(with([](auto& p) { p.out_proj_bias.resize(12); })); }, "out_proj_bias");

  const ssm::Mamba2<T> block(good);
  expect_error_naming([&] { block.forward(MatrixX<T>(5, 11)); }, "u: expected L x 12");
  auto s = block.initial_state();
  s.ssm.resize(3, 3);
  expect_error_naming([&] { block.forward(MatrixX<T>(5, 12), s); }, "state.ssm");
  auto s2 = block.initial_state();
  s2.conv.resize(1, 1);
  VectorX<T> u(12), y(12), bad(11);
  u.setZero();
  expect_error_naming([&] { block.step(u, s2, y); }, "state.conv");
  auto s3 = block.initial_state();
  expect_error_naming([&] { block.step(bad, s3, y); }, "u: expected a vector of 12");
  expect_error_naming([&] { block.step(u, s3, bad); }, "y: expected a vector of 12");
  ssm::Mamba2Init init;
  init.A_init_min = -1;
  std::mt19937_64 gen(0);
  expect_error_naming([&] { ssm::Mamba2<T>::initialise(c0, gen, init); }, "init.A_init_range");
}

}  // namespace
