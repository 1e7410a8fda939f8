// FFT causal convolution against the raw FFTW transforms it needs, and against the direct sum.
//
//   BM_CausalConv<T>/L/H        : ssm::causal_convolution_into with a cached kernel spectrum and a
//                                 reused output (one thread, as the raw FFTW line)
//   BM_CausalConvAlloc<T>/L/H   : ssm::causal_convolution returning a fresh L x H result (one thread)
//   BM_RawFFTW<T>/L/H           : per channel, one r2c and one c2r of the same padded size, nothing else
//   BM_DirectConv<T>/L/H        : the O(L^2) sum (small L only)
// Target (issue 6): H = 256, L = 16384, float: BM_CausalConv at most 1.3 x BM_RawFFTW.
// Both use FFTW_MEASURE plans; items/s counts output samples (L x H per iteration).

#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/core/causal_convolution.hpp"

#include <random>

namespace {

using ssm::bench::random_sequence;
using ssm::bench::ThreadScope;


template <class T, bool Allocate>
void causal_conv_benchmark(benchmark::State& state) {
  const ThreadScope one_thread(state, 1);  // the raw FFTW reference is single-threaded
  const ssm::Index L = state.range(0), H = state.range(1);
  ssm::fft::set_planning(ssm::fft::Planning::measure);
  const auto u = random_sequence<T>(L, H, 1);
  const auto k = random_sequence<T>(L, H, 2);
  const auto spectrum = ssm::make_kernel_spectrum<T>(k, L);
  ssm::Sequence<T> y(L, H);
  y.setZero();
  for (auto _ : state) {
    if constexpr (Allocate) {
      auto fresh = ssm::causal_convolution(u, spectrum);
      benchmark::DoNotOptimize(fresh.data());
    } else {
      ssm::causal_convolution_into(u, spectrum, y);
      benchmark::DoNotOptimize(y.data());
    }
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * L * H * 2 * std::int64_t(sizeof(T)));
  state.counters["fft_size"] = double(spectrum.fft_size);
}

template <class T>
void BM_CausalConv(benchmark::State& state) {
  causal_conv_benchmark<T, false>(state);
}

template <class T>
void BM_CausalConvAlloc(benchmark::State& state) {
  causal_conv_benchmark<T, true>(state);
}

template <class T>
void BM_RawFFTW(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1);
  const ssm::Index n = ssm::fft::fast_size(2 * L - 1);
  ssm::fft::set_planning(ssm::fft::Planning::measure);
  const auto plan = ssm::fft::real_fft<T>(n);
  ssm::fft::Buffer<T> x(n);
  ssm::fft::Buffer<std::complex<T>> X(n / 2 + 1);
  for (auto _ : state) {
    for (ssm::Index h = 0; h < H; ++h) {
      plan->forward(x, X);
      plan->inverse(X, x);
    }
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
}

template <class T>
void BM_DirectConv(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1);
  const auto u = random_sequence<T>(L, H, 1);
  const auto k = random_sequence<T>(L, H, 2);
  ssm::Sequence<T> y(L, H);
  for (auto _ : state) {
    for (ssm::Index h = 0; h < H; ++h)
      for (ssm::Index t = 0; t < L; ++t) {
        T acc = 0;
        for (ssm::Index j = 0; j <= t; ++j) acc += k(j, h) * u(t - j, h);
        y(t, h) = acc;
      }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
}

void conv_sizes(benchmark::internal::Benchmark* b) {
  // H x L kept <= 4M samples so that inputs, kernels and outputs fit in memory comfortably.
  for (long L : {1024L, 16384L, 131072L, 1048576L}) {
    const long H = std::min(256L, std::max(1L, (4L << 20) / L));
    b->Args({L, H});
  }
}

}  // namespace

BENCHMARK_TEMPLATE(BM_CausalConv, float)->Apply(conv_sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_RawFFTW, float)->Apply(conv_sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_CausalConvAlloc, float)->Args({16384, 256})->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_CausalConv, double)->Apply(conv_sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_RawFFTW, double)->Apply(conv_sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_DirectConv, float)->Args({1024, 16})->Args({4096, 4})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
