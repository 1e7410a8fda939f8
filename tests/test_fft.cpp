// FFT plans and causal convolution, checked against the direct O(L^2) sum in long double.
#include "test_support.hpp"

#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/fft.hpp"

#include <thread>
#include <vector>

namespace ssm::test {
namespace {

template <class T>
class FFTTest : public ::testing::Test {};
TYPED_TEST_SUITE(FFTTest, Scalars);

// The backend's fast sizes: FFTW's are even with prime factors 2, 3, 5, 7; kissfft's multiples of 4 with 2, 3, 5.
bool is_fast_size(Index n) {
  if (n % fft::backend::fast_multiple != 0) return false;
  for (int p : fft::backend::fast_primes)
    while (n % p == 0) n /= p;
  return n == 1;
}

TEST(FastSize, IsSmoothAMultipleAndMinimal) {
  for (Index m : {1, 2, 3, 4, 5, 17, 127, 1999, 8191, 131073}) {
    const Index n = fft::fast_size(m);
    EXPECT_GE(n, m);
    EXPECT_TRUE(is_fast_size(n)) << n;
    for (Index c = 1; c < n; ++c)  // nothing smaller qualifies
      EXPECT_FALSE(c >= m && is_fast_size(c)) << "smaller fast size " << c << " for " << m;
  }
  EXPECT_EQ(fft::fast_size(Index(1) << 30), Index(1) << 30);
  EXPECT_THROW(fft::fast_size(0), ssm::error);
}

TEST(FastSize, NamesTheBackend) {
#if defined(SSM_FFT_BACKEND_EIGEN) && SSM_FFT_BACKEND_EIGEN
  EXPECT_STREQ(fft::backend::name, "Eigen FFT (kissfft)");
  EXPECT_FALSE(fft::backend::gpl);
  EXPECT_EQ(fft::backend::fast_multiple, 4);
#else
  EXPECT_STREQ(fft::backend::name, "FFTW 3");
  EXPECT_TRUE(fft::backend::gpl);
  EXPECT_EQ(fft::backend::fast_multiple, 2);
#endif
}

TYPED_TEST(FFTTest, ForwardMatchesDirectDFT) {
  using T = TypeParam;
  std::mt19937_64 gen(7);
  for (Index n : {1, 2, 3, 5, 6, 7, 16, 63, 100, 240}) {
    const auto plan = fft::real_fft<T>(n);
    fft::Buffer<T> x(n);
    fft::Buffer<std::complex<T>> X(n / 2 + 1);
    const MatrixX<T> v = random_normal<T>(n, 1, gen);
    for (Index j = 0; j < n; ++j) x[j] = v(j);
    plan->forward(x, X);
    for (Index k = 0; k <= n / 2; ++k) {
      std::complex<long double> acc = 0;
      for (Index j = 0; j < n; ++j) {
        const long double angle = -2.0L * 3.14159265358979323846264338327950288L * (long double)(j * k % n) / n;
        acc += (long double)v(j) * std::complex<long double>(std::cos(angle), std::sin(angle));
      }
      EXPECT_NEAR(X[k].real(), (double)acc.real(), 10 * scalar_traits<T>::tolerance * n);
      EXPECT_NEAR(X[k].imag(), (double)acc.imag(), 10 * scalar_traits<T>::tolerance * n);
    }
    plan->inverse(X, x);  // unnormalised round trip
    for (Index j = 0; j < n; ++j) EXPECT_NEAR(x[j] / n, v(j), 10 * scalar_traits<T>::tolerance);
  }
}

TYPED_TEST(FFTTest, PlansAreCachedPerSize) {
  using T = TypeParam;
  EXPECT_EQ(fft::real_fft<T>(48).get(), fft::real_fft<T>(48).get());
  EXPECT_NE(fft::real_fft<T>(48).get(), fft::real_fft<T>(50).get());
  EXPECT_THROW(fft::real_fft<T>(0), ssm::error);
}

TYPED_TEST(FFTTest, PlanCacheHasABudgetEvictsAndClears) {
  using T = TypeParam;
  const std::size_t saved = fft::plan_cache_budget();
  fft::clear_plan_cache();
  EXPECT_EQ(fft::plan_cache_size(), 0u);
  EXPECT_EQ(fft::plan_cache_bytes(), 0u);
  const auto p100 = fft::real_fft<T>(100);
  // A plan's estimate: 2 n complex values (FFTW's twiddles for both directions and work buffers).
  EXPECT_GE(p100->bytes(), 200 * sizeof(std::complex<T>));
  EXPECT_EQ(fft::plan_cache_bytes(), p100->bytes());
  EXPECT_EQ(fft::plan_cache_size(), 1u);
  // A budget of about three such plans: planning more evicts the least recently used.
  fft::set_plan_cache_budget(3 * p100->bytes() + p100->bytes() / 2);
  for (Index n : {98, 96, 100, 94, 92}) fft::real_fft<T>(n);  // 100 is re-used before 94 and 92 arrive
  EXPECT_LE(fft::plan_cache_bytes(), fft::plan_cache_budget());
  EXPECT_LE(fft::plan_cache_size(), 3u);
  EXPECT_EQ(fft::real_fft<T>(100).get(), p100.get());  // still cached: it was used recently
  // The evicted plan held by a caller still works, and clearing does not invalidate it either.
  const auto p98 = fft::real_fft<T>(98);
  fft::clear_plan_cache();
  EXPECT_EQ(fft::plan_cache_size(), 0u);
  fft::Buffer<T> x(98), back(98);
  fft::Buffer<std::complex<T>> X(50);
  for (Index j = 0; j < 98; ++j) x[j] = T(j % 5);
  p98->forward(x, X);
  p98->inverse(X, back);
  for (Index j = 0; j < 98; ++j) EXPECT_NEAR(back[j] / 98, x[j], 100 * scalar_traits<T>::tolerance);
  EXPECT_NE(fft::real_fft<T>(100).get(), nullptr);  // planned anew after clear()
  fft::set_plan_cache_budget(saved);
  EXPECT_EQ(fft::plan_cache_budget(), std::size_t(64) << 20);
}

TYPED_TEST(FFTTest, MismatchedBuffersAreRejected) {
  using T = TypeParam;
  const auto plan = fft::real_fft<T>(32);
  fft::Buffer<T> small(16);
  fft::Buffer<std::complex<T>> X(17);
  EXPECT_THROW(plan->forward(small, X), ssm::error);
}

/// Relative error bound of an FFT convolution: it grows like eps * log2(n) * (sum |k| |u|).
template <class T>
double conv_bound(Index n) {
  return 20.0 * double(scalar_traits<T>::epsilon) * std::log2(double(n) + 2.0);
}

TYPED_TEST(FFTTest, CausalConvolutionMatchesDirectSum) {
  using T = TypeParam;
  std::mt19937_64 gen(1234);
  for (Index L : {1, 2, 3, 17, 64, 1000, 4096, 65537}) {
    const Index H = L > 5000 ? 1 : 3;
    const MatrixX<T> u = random_normal<T>(L, H, gen);
    // Decaying kernels, as SSM kernels are, plus one of full length without decay.
    MatrixX<T> k = random_normal<T>(L, H, gen);
    for (Index j = 0; j < L; ++j) k.row(j) *= T(std::exp(-double(j) / std::max<double>(1.0, L / 4.0)));
    const Sequence<T> y = causal_convolution(u, k);
    ASSERT_EQ(y.rows(), L);
    ASSERT_EQ(y.cols(), H);
    Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> expected;
    if (L <= 4096) {
      expected = direct_causal_convolution<T>(u, k);
    } else {  // the O(L^2) sum at L = 65537 is checked on a strided subset of outputs
      expected = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>::Zero(L, H);
    }
    // Scale: sum_j |k_j| |u_{t-j}| bounds every output's rounding.
    const long double scale = (long double)(k.cwiseAbs().colwise().sum().maxCoeff() * u.cwiseAbs().maxCoeff());
    const double tol = conv_bound<T>(fft::fast_size(2 * L - 1));
    if (L <= 4096) {
      for (Index h = 0; h < H; ++h)
        for (Index t = 0; t < L; ++t)
          ASSERT_LE(std::abs((long double)y(t, h) - expected(t, h)), tol * scale) << "L=" << L << " t=" << t;
    } else {
      for (Index t = 0; t < L; t += 997) {
        long double acc = 0;
        for (Index j = 0; j <= t; ++j) acc += (long double)k(j, 0) * (long double)u(t - j, 0);
        ASSERT_LE(std::abs((long double)y(t, 0) - acc), tol * scale) << "L=" << L << " t=" << t;
      }
      long double last = 0;
      for (Index j = 0; j < L; ++j) last += (long double)k(j, 0) * (long double)u(L - 1 - j, 0);
      ASSERT_LE(std::abs((long double)y(L - 1, 0) - last), tol * scale);
    }
  }
}

TYPED_TEST(FFTTest, ShortKernelAndCachedSpectrumAgree) {
  using T = TypeParam;
  std::mt19937_64 gen(99);
  const Index L = 300, H = 4;
  const MatrixX<T> u = random_normal<T>(L, H, gen);
  const MatrixX<T> k = random_normal<T>(5, H, gen);  // a 5-tap FIR per channel
  const auto spectrum = make_kernel_spectrum<T>(k, L);
  EXPECT_EQ(spectrum.kernel_length, 5);
  EXPECT_GE(spectrum.fft_size, L + 4);
  const Sequence<T> a = causal_convolution(u, spectrum);
  const Sequence<T> b = causal_convolution(u, k);
  const auto expected = direct_causal_convolution<T>(u, k);
  const MatrixX<double> e = expected.template cast<double>();
  SSM_EXPECT_NEAR_REL(a.template cast<double>(), e, 10 * scalar_traits<T>::tolerance);
  SSM_EXPECT_NEAR_REL(b.template cast<double>(), e, 10 * scalar_traits<T>::tolerance);
  // A second input reuses the spectrum.
  const MatrixX<T> u2 = random_normal<T>(L, H, gen);
  const MatrixX<double> e2 = direct_causal_convolution<T>(u2, k).template cast<double>();
  SSM_EXPECT_NEAR_REL(causal_convolution(u2, spectrum).template cast<double>(), e2, 10 * scalar_traits<T>::tolerance);
}

TYPED_TEST(FFTTest, BadShapesAreClearErrors) {
  using T = TypeParam;
  const MatrixX<T> u = MatrixX<T>::Ones(10, 3);
  const MatrixX<T> k2 = MatrixX<T>::Ones(10, 2);
  try {
    causal_convolution(u, k2);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find("k"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3"), std::string::npos);
  }
  const auto spectrum = make_kernel_spectrum<T>(MatrixX<T>::Ones(4, 3), 10);
  EXPECT_THROW(causal_convolution(MatrixX<T>::Ones(11, 3), spectrum), ssm::error);
  EXPECT_THROW(causal_convolution(MatrixX<T>(0, 3), MatrixX<T>::Ones(4, 3)), ssm::error);
  EXPECT_THROW(make_kernel_spectrum<T>(MatrixX<T>::Ones(4, 3), 0), ssm::error);
}

TYPED_TEST(FFTTest, ManyThreadsShareThePlanCache) {
  using T = TypeParam;
  std::mt19937_64 gen(5);
  const Index H = 2;
  std::vector<MatrixX<T>> inputs, kernels;
  std::vector<MatrixX<double>> expected;
  const Index lengths[] = {37, 64, 129, 250, 511, 777, 1024, 1500};
  for (Index L : lengths) {
    inputs.push_back(random_normal<T>(L, H, gen));
    kernels.push_back(random_normal<T>(L, H, gen));
    expected.push_back(direct_causal_convolution<T>(inputs.back(), kernels.back()).template cast<double>());
  }
  std::vector<int> ok(8 * 3, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        const std::size_t i = std::size_t((t + rep) % 8);
        const Sequence<T> y = causal_convolution(inputs[i], kernels[i]);
        ok[std::size_t(t * 3 + rep)] =
            bool(near_relative_to_max(y.template cast<double>(), expected[i], 100 * scalar_traits<T>::tolerance));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int v : ok) EXPECT_EQ(v, 1);
}

// Threads running one plan at the same moment (FFTW: one plan, re-entrant execution; Eigen: a pool of
// engines, one per concurrent caller) each get exactly the single-threaded answer.
TYPED_TEST(FFTTest, ConcurrentCallsOnOnePlanAgreeWithOneThread) {
  using T = TypeParam;
  for (Index n : {96, 250, 1000}) {
    const auto plan = fft::real_fft<T>(n);
    fft::Buffer<T> x(n), back(n);
    fft::Buffer<std::complex<T>> X(n / 2 + 1), X_copy(n / 2 + 1);
    for (Index j = 0; j < n; ++j) x[j] = T((j * 7) % 13) - T(6);
    plan->forward(x, X);
    for (Index k = 0; k <= n / 2; ++k) X_copy[k] = X[k];
    plan->inverse(X_copy, back);
    std::vector<int> mismatches(6, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        fft::Buffer<T> xt(n), backt(n);
        fft::Buffer<std::complex<T>> Xt(n / 2 + 1);
        for (int rep = 0; rep < 50; ++rep) {
          for (Index j = 0; j < n; ++j) xt[j] = x[j];
          plan->forward(xt, Xt);
          for (Index k = 0; k <= n / 2; ++k) mismatches[std::size_t(t)] += Xt[k] != X[k];
          plan->inverse(Xt, backt);
          for (Index j = 0; j < n; ++j) mismatches[std::size_t(t)] += backt[j] != back[j];
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int m : mismatches) EXPECT_EQ(m, 0) << "n = " << n;
  }
}

}  // namespace
}  // namespace ssm::test
