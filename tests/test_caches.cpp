// The bounded caches: ByteBudgetCache (LRU eviction under a byte budget), SpectrumCache of kernel spectra,
// and the FFT plan cache. The Concurrency* suites also run under ThreadSanitizer (the tsan preset).
#include "test_support.hpp"

#include "ssm/core/spectrum_cache.hpp"

#include <atomic>
#if !(defined(SSM_FFT_BACKEND_EIGEN) && SSM_FFT_BACKEND_EIGEN)
#include <fftw3.h>
#define SSM_TEST_RAW_FFTW 1
#endif
#include <map>
#include <stdexcept>
#include <thread>
#include <vector>

namespace ssm::test {
namespace {

/// A cached value of a chosen size, remembering the key it was made for.
struct Blob {
  Index key = 0;
  std::size_t size = 0;
  std::size_t bytes() const { return size; }
};

using BlobCache = ByteBudgetCache<Index, Blob>;

std::vector<Index> keys_of(const BlobCache& cache) { return cache.keys(); }

TEST(ByteBudgetCache, EvictsTheLeastRecentlyUsedFirst) {
  BlobCache cache(100);
  int made = 0;
  auto make = [&](Index key, std::size_t size) {
    return [&made, key, size] {
      ++made;
      return Blob{key, size};
    };
  };
  cache.get_or_make(1, make(1, 40));
  cache.get_or_make(2, make(2, 40));
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{2, 1}));
  EXPECT_EQ(cache.get_or_make(1, make(1, 40))->key, 1);  // a hit: 1 becomes the most recent
  EXPECT_EQ(made, 2);
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{1, 2}));
  cache.get_or_make(3, make(3, 40));  // 120 > 100: the least recently used (2) goes
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{3, 1}));
  EXPECT_FALSE(cache.contains(2));
  EXPECT_EQ(cache.bytes(), 80u);
  EXPECT_EQ(cache.size(), 2u);
  // find() counts as a use too; contains() does not.
  EXPECT_TRUE(cache.contains(1));
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{3, 1}));
  ASSERT_TRUE(cache.find(1));
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{1, 3}));
  EXPECT_EQ(cache.find(2), nullptr);
  cache.get_or_make(4, make(4, 70));  // needs 70: both 3 and then 1 must go (LRU order)
  EXPECT_EQ(keys_of(cache), (std::vector<Index>{4}));
  EXPECT_EQ(cache.bytes(), 70u);
}

TEST(ByteBudgetCache, RespectsTheBudgetAndCountsBytesExactly) {
  std::mt19937_64 gen(3);
  std::uniform_int_distribution<int> key_dist(0, 40), size_dist(1, 300);
  BlobCache cache(1000);
  std::map<Index, std::size_t> size_of;  // the size each key is made with (deterministic per key)
  for (int i = 0; i < 2000; ++i) {
    const Index key = key_dist(gen);
    if (!size_of.count(key)) size_of[key] = std::size_t(size_dist(gen));
    const auto value = cache.get_or_make(key, [&] { return Blob{key, size_of[key]}; });
    ASSERT_EQ(value->key, key);
    ASSERT_LE(cache.bytes(), 1000u);
    ASSERT_TRUE(cache.contains(key));  // the entry just used is never the one evicted
    std::size_t sum = 0;
    for (Index k : cache.keys()) sum += size_of[k];
    ASSERT_EQ(cache.bytes(), sum);
    ASSERT_EQ(cache.size(), cache.keys().size());
  }
  cache.set_budget(250);  // shrinking evicts at once, least recently used first
  EXPECT_LE(cache.bytes(), 250u);
  EXPECT_EQ(cache.budget(), 250u);
}

TEST(ByteBudgetCache, AnEntryLargerThanTheBudgetIsReturnedButNotKept) {
  BlobCache cache(100);
  cache.get_or_make(1, [] { return Blob{1, 60}; });
  const auto big = cache.get_or_make(2, [] { return Blob{2, 101}; });
  ASSERT_TRUE(big);
  EXPECT_EQ(big->key, 2);
  EXPECT_FALSE(cache.contains(2));
  EXPECT_TRUE(cache.contains(1));  // and nothing else was evicted for it
  BlobCache none(0);               // budget 0: a pass-through
  EXPECT_EQ(none.get_or_make(5, [] { return Blob{5, 1}; })->key, 5);
  EXPECT_EQ(none.size(), 0u);
}

TEST(ByteBudgetCache, EvictedAndClearedValuesLiveOnWithTheirUsers) {
  BlobCache cache(100);
  std::shared_ptr<const Blob> held = cache.get_or_make(1, [] { return Blob{1, 80}; });
  const std::weak_ptr<const Blob> watch = held;
  cache.get_or_make(2, [] { return Blob{2, 80}; });  // evicts 1 from the cache
  EXPECT_FALSE(cache.contains(1));
  ASSERT_FALSE(watch.expired());
  EXPECT_EQ(held->key, 1);
  held.reset();
  EXPECT_TRUE(watch.expired());  // the cache kept no reference

  std::shared_ptr<const Blob> two = cache.find(2);
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
  EXPECT_TRUE(cache.keys().empty());
  EXPECT_EQ(two->key, 2);
  // Usable after clear().
  EXPECT_EQ(cache.get_or_make(3, [] { return Blob{3, 10}; })->key, 3);
  EXPECT_EQ(cache.bytes(), 10u);
  EXPECT_TRUE(cache.erase(3));
  EXPECT_FALSE(cache.erase(3));
  EXPECT_EQ(cache.bytes(), 0u);
}

TEST(ByteBudgetCache, AFailedMakeInsertsNothing) {
  BlobCache cache(100);
  EXPECT_THROW(cache.get_or_make(1, []() -> Blob { throw std::runtime_error("no"); }), std::runtime_error);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
  // make may also return a shared_ptr (for values that cannot be moved).
  const auto p = cache.get_or_make(1, [] { return std::make_shared<Blob>(Blob{1, 5}); });
  EXPECT_EQ(cache.find(1).get(), p.get());
}

template <class T>
class SpectrumCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(SpectrumCacheTest, Scalars);

TYPED_TEST(SpectrumCacheTest, CountsTheBytesOfEachSpectrumAndEvictsByLength) {
  using T = TypeParam;
  std::mt19937_64 gen(9);
  const Index H = 3;
  const MatrixX<T> k = random_normal<T>(64, H, gen);
  auto make = [&](Index L) { return [&k, L] { return make_kernel_spectrum<T>(k, L); }; };
  const auto s64 = make_kernel_spectrum<T>(k, 64);
  const std::size_t bytes64 = s64.bytes();
  // (n/2 + 1) x H complex values: n = fast_size(64 + 64 - 1) = 128, so 65 x 3.
  EXPECT_EQ(s64.fft_size, 128);
  EXPECT_GE(bytes64, std::size_t(65 * H) * sizeof(std::complex<T>));
  EXPECT_LE(bytes64, std::size_t(65 * H) * sizeof(std::complex<T>) + 256);
  SpectrumCache<T> cache(2 * bytes64 + bytes64 / 2);  // room for two spectra of this size
  const auto a = cache.get_or_make(64, make(64));
  EXPECT_EQ(a->input_length, 64);
  EXPECT_EQ(cache.bytes(), bytes64);
  EXPECT_EQ(cache.get_or_make(64, make(64)).get(), a.get());  // cached
  cache.get_or_make(63, make(63));                              // n = fast_size(125) = 126
  cache.get_or_make(64, make(64));                              // 64 most recent
  cache.get_or_make(62, make(62));
  EXPECT_TRUE(cache.contains(64));
  EXPECT_LE(cache.bytes(), cache.budget());
  EXPECT_LE(cache.size(), 2u);
  // The cached spectrum convolves exactly like a fresh one.
  const MatrixX<T> u = random_normal<T>(64, H, gen);
  const Sequence<T> y1 = causal_convolution(u, *cache.get_or_make(64, make(64)));
  const Sequence<T> y2 = causal_convolution(u, s64);
  EXPECT_EQ((y1 - y2).cwiseAbs().maxCoeff(), T(0));
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(a->input_length, 64);  // still alive with its holder
}

TYPED_TEST(SpectrumCacheTest, DefaultBudgetIs256MiB) {
  using T = TypeParam;
  SpectrumCache<T> cache;
  EXPECT_EQ(cache.budget(), std::size_t(256) << 20);
}

// ---- Concurrency (also run under ThreadSanitizer: suite names start with "Concurrency") ----

TEST(ConcurrencyCache, GetOrMakeFromManyThreadsKeepsOneValuePerKey) {
  BlobCache cache(1 << 20);  // everything fits: no eviction, so racing threads must agree on one value
  constexpr int threads = 8, keys = 16, rounds = 200;
  std::atomic<int> made{0};
  std::vector<std::vector<const Blob*>> seen(threads, std::vector<const Blob*>(keys, nullptr));
  std::vector<int> bad(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        const Index key = (i * 7 + t) % keys;
        const auto value = cache.get_or_make(key, [&] {
          made.fetch_add(1);
          std::this_thread::yield();  // widen the race window
          return Blob{key, 100};
        });
        if (value->key != key) ++bad[std::size_t(t)];
        const Blob*& first = seen[std::size_t(t)][std::size_t(key)];
        if (first == nullptr) first = value.get();
        if (first != value.get()) ++bad[std::size_t(t)];  // a key never changes value here
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
  EXPECT_EQ(cache.size(), std::size_t(keys));
  EXPECT_EQ(cache.bytes(), std::size_t(keys) * 100);
  EXPECT_GE(made.load(), keys);
  for (int k = 0; k < keys; ++k) {
    const Blob* kept = cache.find(k).get();
    for (int t = 0; t < threads; ++t)
      if (seen[std::size_t(t)][std::size_t(k)]) {
        EXPECT_EQ(seen[std::size_t(t)][std::size_t(k)], kept);
      }
  }
}

TEST(ConcurrencyCache, EvictionUnderContentionKeepsTheBudgetAndTheValues) {
  BlobCache cache(500);  // five of the 16 keys fit at a time
  constexpr int threads = 8, rounds = 400;
  std::vector<int> bad(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 gen{std::uint64_t(t)};
      for (int i = 0; i < rounds; ++i) {
        const Index key = Index(gen() % 16);
        const auto value = cache.get_or_make(key, [key] { return Blob{key, 100}; });
        if (value->key != key || value->size != 100) ++bad[std::size_t(t)];
        if (cache.bytes() > 500) ++bad[std::size_t(t)];
        if (i % 97 == 0) cache.clear();
        if (i % 131 == 0) cache.set_budget(300 + 100 * std::size_t(t % 3));
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
  EXPECT_LE(cache.bytes(), cache.budget());
}

TEST(ConcurrencyCache, SpectraFromManyThreads) {
  std::mt19937_64 gen(4);
  const Index H = 2;
  const MatrixX<double> k = random_normal<double>(48, H, gen);
  const std::size_t one = make_kernel_spectrum<double>(k, 48).bytes();
  SpectrumCache<double> cache(3 * one);
  std::vector<int> bad(6, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < 6; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 30; ++i) {
        const Index L = 40 + (t + i) % 6;
        const auto s = cache.get_or_make(L, [&k, L] { return make_kernel_spectrum<double>(k, L); });
        if (s->input_length != L || s->channels() != H) ++bad[std::size_t(t)];
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
  EXPECT_LE(cache.bytes(), cache.budget());
}

// The plan cache evicts and re-plans while other threads execute plans. With the FFTW backend, FFTW's
// planner is thread-safe process-wide: a thread planning through FFTW directly (not through ssm) runs alongside.
TEST(ConcurrencyCache, PlanCacheUnderEvictionAndForeignPlanning) {
  const std::size_t saved = fft::plan_cache_budget();
  fft::set_plan_cache_budget(std::size_t(64) << 10);  // 64 KiB: a handful of small plans per precision
  std::vector<int> bad(5, 0);
  std::atomic<bool> stop{false};
  std::thread foreign([&] {
#if SSM_TEST_RAW_FFTW
    // Plan, run and destroy with raw FFTW calls, as another library in the process would.
    std::vector<double> in(96, 1.0);
    std::vector<fftw_complex> out(49);
    while (!stop.load()) {
      fftw_plan p = fftw_plan_dft_r2c_1d(96, in.data(), out.data(), FFTW_ESTIMATE | FFTW_DESTROY_INPUT);
      fftw_execute(p);
      fftw_destroy_plan(p);
    }
#endif
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 60; ++i) {
        const Index n = 64 + 2 * ((t * 13 + i * 5) % 40);
        const auto plan = fft::real_fft<double>(n);
        fft::Buffer<double> x(n), back(n);
        fft::Buffer<std::complex<double>> X(n / 2 + 1);
        for (Index j = 0; j < n; ++j) x[j] = double((j * 7 + t) % 11) - 5.0;
        plan->forward(x, X);
        if (i % 10 == 0) fft::clear_plan_cache();  // the plan held here stays valid
        plan->inverse(X, back);
        for (Index j = 0; j < n; ++j)
          if (std::abs(back[j] / double(n) - x[j]) > 1e-12 * 8) {
            ++bad[std::size_t(t)];
            break;
          }
        const auto fplan = fft::real_fft<float>(n + 2);
        if (fplan->size() != n + 2) ++bad[std::size_t(t)];
      }
    });
  }
  for (auto& th : pool) th.join();
  stop = true;
  foreign.join();
  for (int b : bad) EXPECT_EQ(b, 0);
  EXPECT_LE(fft::plan_cache_bytes(), 2 * fft::plan_cache_budget());
  fft::set_plan_cache_budget(saved);
}

}  // namespace
}  // namespace ssm::test
