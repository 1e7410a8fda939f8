/// Compact weights (core/number_formats.hpp, core/weight_matrix.hpp, detail/weight_kernels.hpp): the
/// 16-bit encoders are the nearest values with ties to even (checked against the decoded neighbours, and
/// by the round trip of every 16-bit pattern); q8 keeps each weight within half a step of its block;
/// every product of every format, for float and double, with the AVX-512 kernels and the portable ones,
/// equals the long-double product of the decoded weights to a bound on its rounding; and the Mamba and
/// Mamba-2 layers with compact weights compute what the same layers with the decoded weights compute.

#include <gtest/gtest.h>

#include "test_support.hpp"

#include "ssm/core/number_formats.hpp"
#include "ssm/core/weight_matrix.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace ssm::test {
namespace {

using LD = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

const WeightFormat kFormats[] = {WeightFormat::full, WeightFormat::bf16, WeightFormat::f16, WeightFormat::q8};

float from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

/// True when `h` is a nearest 16-bit value to f (decoded by `decode`) and, on a tie, the even one.
template <class Decode>
bool is_nearest_even(float f, std::uint16_t h, const Decode& decode) {
  const double d = std::abs(double(decode(h)) - double(f));
  for (const int step : {-1, 1}) {
    const std::uint16_t other = std::uint16_t(h + step);
    if ((other & 0x7fffu) == 0x7fffu || ((other ^ h) & 0x8000u)) continue;  // wrapped past a sign or off the end
    const float o = decode(other);
    if (std::isnan(o)) continue;
    const double e = std::abs(double(o) - double(f));
    if (e < d || (e == d && (h & 1u))) return false;
  }
  return true;
}

TEST(NumberFormats, EverySixteenBitValueRoundTrips) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float b = bfloat16_to_float(std::uint16_t(h)), f = half_to_float(std::uint16_t(h));
    if (!std::isnan(b)) ASSERT_EQ(float_to_bfloat16(b), h) << h;
    else ASSERT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(b))));
    if (!std::isnan(f)) ASSERT_EQ(float_to_half(f), h) << h;
    else ASSERT_TRUE(std::isnan(half_to_float(float_to_half(f))));
  }
}

TEST(NumberFormats, EncodersRoundToNearestEven) {
  std::mt19937_64 gen(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  // Random floats of every exponent, and of the half's range (subnormals included) more densely.
  for (int i = 0; i < 200000; ++i) {
    float f = from_bits(bits(gen));
    if (i % 2) f = std::ldexp(float(std::uniform_real_distribution<double>(-1, 1)(gen)), int(bits(gen) % 44) - 27);
    if (std::isnan(f)) continue;
    const std::uint16_t b = float_to_bfloat16(f);
    ASSERT_TRUE(is_nearest_even(f, b, bfloat16_to_float) || std::isinf(bfloat16_to_float(b))) << f;
    const std::uint16_t h = float_to_half(f);
    if (std::abs(f) < 65520.0f) ASSERT_TRUE(is_nearest_even(f, h, half_to_float)) << f;
    else ASSERT_TRUE(std::isinf(half_to_float(h)) && std::signbit(half_to_float(h)) == std::signbit(f)) << f;
  }
  // Ties: halfway between two neighbours goes to the even one.
  EXPECT_EQ(float_to_half(1.0f + 0x1p-11f), 0x3c00u);               // 1 + half an ulp: down to 1
  EXPECT_EQ(float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02u);           // 1 + 1.5 ulp: up to 1 + 2 ulp
  EXPECT_EQ(float_to_half(0x1p-25f), 0u);                           // half the smallest subnormal: to 0
  EXPECT_EQ(float_to_half(3 * 0x1p-25f), 2u);                       // 1.5 subnormal units: to 2
  EXPECT_EQ(float_to_half(65504.0f), 0x7bffu);                      // largest finite
  EXPECT_EQ(float_to_half(65519.0f), 0x7bffu);                      // below the midpoint to 65536
  EXPECT_EQ(float_to_half(-65520.0f), 0xfc00u);                     // the midpoint: to -inf
  EXPECT_EQ(float_to_bfloat16(from_bits(0x3f808000u)), 0x3f80u);    // tie, even below
  EXPECT_EQ(float_to_bfloat16(from_bits(0x3f818000u)), 0x3f82u);    // tie, even above
  EXPECT_EQ(float_to_bfloat16(from_bits(0x7f7fffffu)), 0x7f80u);    // largest float rounds to inf
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(from_bits(0x7f800001u)))));  // a NaN whose payload would round away
}

template <class T>
class WeightMatrixTest : public ::testing::Test {};
TYPED_TEST_SUITE(WeightMatrixTest, Scalars);

/// The stored value of each weight: the 16-bit formats round to nearest even; q8 is checked apart.
template <class T>
MatrixX<T> rounded(const MatrixX<T>& W, WeightFormat f) {
  MatrixX<T> out = W;
  for (Index i = 0; i < W.size(); ++i) {
    if (f == WeightFormat::bf16) out(i) = T(bfloat16_to_float(float_to_bfloat16(float(W(i)))));
    if (f == WeightFormat::f16) out(i) = T(half_to_float(float_to_half(float(W(i)))));
  }
  return out;
}

TYPED_TEST(WeightMatrixTest, EncodingKeepsEachWeightAsTheFormatSays) {
  using T = TypeParam;
  std::mt19937_64 gen(11);
  for (const Index K : {Index(1), Index(31), Index(32), Index(33), Index(100)}) {
    MatrixX<T> W = random_normal<T>(5, K, gen);
    W.row(2).setZero();  // an all-zero block has scale 0
    for (const WeightFormat f : {WeightFormat::full, WeightFormat::bf16, WeightFormat::f16}) {
      const auto m = WeightMatrix<T>::encode(W, f);
      EXPECT_EQ(m.format(), f);
      EXPECT_EQ(m.decode(), rounded(W, f)) << weight_format_name(f);
    }
    const MatrixX<T> q = WeightMatrix<T>::encode(W, WeightFormat::q8).decode();
    for (Index r = 0; r < W.rows(); ++r)
      for (Index k0 = 0; k0 < K; k0 += 32) {
        const Index n = std::min<Index>(32, K - k0);
        const double amax = double(W.row(r).segment(k0, n).cwiseAbs().maxCoeff());
        const double step = double(float(amax / 127));
        for (Index k = k0; k < k0 + n; ++k) {
          // Half a step, plus the rounding of q step to T.
          EXPECT_LE(std::abs(double(q(r, k)) - double(W(r, k))), step / 2 + amax * double(std::numeric_limits<T>::epsilon()))
              << r << ", " << k;
          if (step > 0) EXPECT_NEAR(double(q(r, k)) / step, std::round(double(q(r, k)) / step), 1e-3);  // a multiple of the step
        }
      }
    EXPECT_TRUE(q.row(2).isZero());
  }
}

TYPED_TEST(WeightMatrixTest, BadArgumentsAreNamed) {
  using T = TypeParam;
  MatrixX<T> W = MatrixX<T>::Ones(2, 40);
  W(1, 35) = std::numeric_limits<T>::infinity();
  EXPECT_THROW(WeightMatrix<T>::encode(W, WeightFormat::q8), ssm::error);
  WeightMatrix<T> m(3, 4, WeightFormat::bf16);
  const std::vector<T> values(8, T(1));
  EXPECT_THROW(m.set_rows(2, 2, values.data()), ssm::error);
  try {
    parse_weight_format("int4", "example", "--weights");
    ADD_FAILURE() << "no exception";
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find("--weights"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("int4"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_weight_format("f32", "example", "--weights"), WeightFormat::full);
  EXPECT_EQ(parse_weight_format("q8", "example", "--weights"), WeightFormat::q8);
}

/// |Y - (W X + bias)| <= c (sum_k |w| |x| + |bias|) eps (per entry), the bound of a sum of K products in T,
/// against the long-double product of the decoded weights (bias: one value per row of W, or empty).
template <class T>
void expect_product(const MatrixX<T>& Y, const MatrixX<T>& Wd, const MatrixX<T>& X, const char* what,
                    const VectorX<T>& bias = VectorX<T>()) {
  LD exact = Wd.template cast<long double>() * X.template cast<long double>();
  LD scale = Wd.template cast<long double>().cwiseAbs() * X.template cast<long double>().cwiseAbs();
  if (bias.size()) {
    exact.colwise() += bias.template cast<long double>();
    scale.colwise() += bias.template cast<long double>().cwiseAbs();
  }
  const long double eps = std::numeric_limits<T>::epsilon();
  ASSERT_EQ(Y.rows(), exact.rows());
  ASSERT_EQ(Y.cols(), exact.cols());
  for (Index j = 0; j < Y.cols(); ++j)
    for (Index i = 0; i < Y.rows(); ++i)
      ASSERT_LE(std::abs((long double)Y(i, j) - exact(i, j)), 2 * (Wd.cols() + 2) * eps * scale(i, j) + 1e-30L)
          << what << " at (" << i << ", " << j << ")";
}

TYPED_TEST(WeightMatrixTest, ProductsEqualTheDecodedWeightsProducts) {
  using T = TypeParam;
  std::mt19937_64 gen(13);
  for (const int cap : {-1, 0}) {  // the AVX-512 kernels (float, where the CPU has them), then the portable ones
#ifdef SSM_WEIGHT_DISPATCH
    ssm::detail::weight_isa_cap = cap;
#endif
    for (const Index M : {Index(1), Index(3), Index(4), Index(9), Index(70)})
      for (const Index K : {Index(1), Index(15), Index(16), Index(17), Index(32), Index(48), Index(77), Index(300)})
        for (const WeightFormat f : kFormats) {
          const MatrixX<T> W = random_normal<T>(M, K, gen);
          const auto m = WeightMatrix<T>::encode(W, f);
          const MatrixX<T> Wd = m.decode();
          const VectorX<T> x = random_normal<T>(K, 1, gen);
          VectorX<T> y(M);
          m.multiply(x, y);
          expect_product<T>(y, Wd, x, weight_format_name(f));
          for (const Index L : {Index(1), Index(6), Index(40)}) {
            const MatrixX<T> X = random_normal<T>(L, K, gen);
            MatrixX<T> Y;
            m.multiply_rows(X, Y);
            expect_product<T>(MatrixX<T>(Y.transpose()), Wd, MatrixX<T>(X.transpose()), "multiply_rows");
            m.multiply_columns(X.transpose(), Y);
            expect_product<T>(Y, Wd, MatrixX<T>(X.transpose()), "multiply_columns");
            const VectorX<T> bias = random_normal<T>(M, 1, gen);
            RowMatrixX<T> Ys(L, M);
            m.multiply_streams(X, Ys, bias);
            expect_product<T>(MatrixX<T>(Ys.transpose()), Wd, MatrixX<T>(X.transpose()), "multiply_streams", bias);
          }
          VectorX<T> row(K);
          m.decode_row(M - 1, row);
          EXPECT_EQ(row, Wd.row(M - 1).transpose());
        }
  }
#ifdef SSM_WEIGHT_DISPATCH
  ssm::detail::weight_isa_cap = -1;
#endif
}

TYPED_TEST(WeightMatrixTest, LargeProductsSpreadOverThreadsGiveTheSameAnswer) {
  using T = TypeParam;
  std::mt19937_64 gen(17);
  const MatrixX<T> W = random_normal<T>(600, 200, gen), X = random_normal<T>(64, 200, gen);  // above the thread threshold
  for (const WeightFormat f : {WeightFormat::bf16, WeightFormat::q8}) {
    const auto m = WeightMatrix<T>::encode(W, f);
    MatrixX<T> Y;
    m.multiply_rows(X, Y);
    expect_product<T>(MatrixX<T>(Y.transpose()), m.decode(), MatrixX<T>(X.transpose()), "threads");
  }
}

template <class T>
class CompactLayerTest : public ::testing::Test {};
TYPED_TEST_SUITE(CompactLayerTest, Scalars);

/// A layer with compact weights against the same layer built from its decoded weights (`params()`),
/// forward, step and batched step: the same computation up to the order of the sums.
template <class Layer, class T>
void expect_same_as_decoded(const Layer& compact, double tol) {
  const Layer decoded(compact.params());
  std::mt19937_64 gen(19);
  const Index L = 9, H = compact.channels();
  const Sequence<T> u = random_normal<T>(L, H, gen);
  SSM_EXPECT_NEAR_REL(compact.forward(u), decoded.forward(u), tol);
  auto s = compact.initial_state();
  auto s2 = decoded.initial_state();
  VectorX<T> y(H), y2(H);
  for (Index t = 0; t < L; ++t) {
    compact.step(u.row(t).transpose(), s, y);
    decoded.step(u.row(t).transpose(), s2, y2);
    SSM_EXPECT_NEAR_REL(y, y2, tol);
  }
  std::vector<typename Layer::State> states(3, compact.initial_state());
  std::vector<typename Layer::State*> pointers{&states[0], &states[1], &states[2]};
  Sequence<T> yb(3, H);
  compact.step_batch(u.topRows(3), pointers.data(), yb);
  for (Index b = 0; b < 3; ++b) {
    auto one = decoded.initial_state();
    decoded.step(u.row(b).transpose(), one, y2);
    SSM_EXPECT_NEAR_REL(yb.row(b).transpose(), y2, tol);
  }
}

TYPED_TEST(CompactLayerTest, MambaWithCompactWeightsIsTheMambaOfItsDecodedWeights) {
  using T = TypeParam;
  MambaConfig c;
  c.d_model = 24;
  c.d_state = 5;
  c.expand = 1.5;
  c.dt_rank = 3;
  c.bias = true;
  std::mt19937_64 gen(23);
  const auto dense = Mamba<T>::initialise(c, gen);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (const WeightFormat f : {WeightFormat::bf16, WeightFormat::f16, WeightFormat::q8}) {
    const Mamba<T> compact(dense.params(), f);
    EXPECT_EQ(compact.weight_format(), f);
    EXPECT_LT(compact.weight_bytes(), dense.weight_bytes() / (std::is_same_v<T, float> ? 1.7 : 3.4));
    EXPECT_EQ(compact.params().in_proj_weight, WeightMatrix<T>::encode(dense.params().in_proj_weight, f).decode());
    EXPECT_EQ(compact.params().D, dense.params().D);  // the rest stays T
    expect_same_as_decoded<Mamba<T>, T>(compact, tol);
    EXPECT_EQ(dense.with_weights(f).params().out_proj_weight, compact.params().out_proj_weight);
  }
  // full keeps the weights as given.
  EXPECT_EQ(Mamba<T>(dense.params(), WeightFormat::full).params().x_proj_weight, dense.params().x_proj_weight);
}

TYPED_TEST(CompactLayerTest, Mamba2WithCompactWeightsIsTheMamba2OfItsDecodedWeights) {
  using T = TypeParam;
  Mamba2Config c;
  c.d_model = 32;
  c.d_state = 8;
  c.headdim = 8;
  c.ngroups = 2;
  c.chunk_size = 4;
  std::mt19937_64 gen(29);
  const auto dense = Mamba2<T>::initialise(c, gen);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (const WeightFormat f : {WeightFormat::bf16, WeightFormat::f16, WeightFormat::q8}) {
    const Mamba2<T> compact(dense.params(), f);
    EXPECT_EQ(compact.weight_format(), f);
    EXPECT_EQ(compact.params().out_proj_weight, WeightMatrix<T>::encode(dense.params().out_proj_weight, f).decode());
    expect_same_as_decoded<Mamba2<T>, T>(compact, tol);
  }
}

}  // namespace
}  // namespace ssm::test
