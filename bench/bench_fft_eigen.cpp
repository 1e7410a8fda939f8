// The GPL-free FFT backend (Eigen's FFT module, kissfft) against FFTW, in one binary: this file compiles
// ssm with SSM_FFT_BACKEND_EIGEN=1 (it is the only translation unit of its program, so nothing else sees
// the other backend) and calls FFTW directly for the raw reference. Built only when the project's backend
// is FFTW (bench/CMakeLists.txt); the FFTW-backend figures of the same run are bench_fft's BM_CausalConv and
// bench_kernels' BM_CauchyKernel, which report.py sets beside these.
//
//   BM_EigenRawFFT<T>/L/H     per channel one r2c and one c2r of the Eigen backend's fast size for a
//                             convolution of length L (the same work as bench_fft's BM_RawFFTW)
//   BM_FFTWRawFFT<T>/L/H      the same two transforms of the same size with FFTW_MEASURE plans, raw FFTW
//   BM_EigenCausalConv<T>/L/H ssm::causal_convolution_into on the Eigen backend, cached kernel spectrum,
//                             one thread (as bench_fft's BM_CausalConv)
//   BM_EigenCauchyKernel<double>/H/N/L  the S4 (DPLR, HiPPO-LegS) kernel on the Eigen backend, one thread
//                             (as bench_kernels' BM_CauchyKernel)
// items/s counts output samples (L x H per iteration); times are wall-clock.
#define SSM_FFT_BACKEND_EIGEN 1

#include "bench_support.hpp"

#include "ssm/core/causal_convolution.hpp"
#include "ssm/kernels/cauchy.hpp"
#include "ssm/layers/s4.hpp"

#include "ssm/core/fftw_api.hpp"

#include <random>

namespace {

using ssm::bench::random_sequence;
using ssm::bench::ThreadScope;

static_assert(!ssm::fft::backend::gpl, "bench_fft_eigen must measure the Eigen backend");

template <class T>
void BM_EigenRawFFT(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1);
  const ssm::Index n = ssm::fft::fast_size(2 * L - 1);
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
  state.counters["fft_size"] = double(n);
}

/// Raw FFTW r2c + c2r plans of size n (FFTW_MEASURE) on arrays of their own, without ssm's plans.
template <class T>
struct RawFFTW {
  using api = ssm::fft::fftw::api<T>;
  ssm::fft::Buffer<T> x;
  ssm::fft::Buffer<std::complex<T>> X;
  typename api::plan_type forward, inverse;
  explicit RawFFTW(ssm::Index n) : x(n), X(n / 2 + 1) {
    forward = api::plan_r2c(static_cast<int>(n), x.data(), spectrum(), FFTW_MEASURE);
    inverse = api::plan_c2r(static_cast<int>(n), spectrum(), x.data(), FFTW_MEASURE);
    x.vector().setZero();  // measuring wrote into the arrays
  }
  typename api::complex_type* spectrum() { return reinterpret_cast<typename api::complex_type*>(X.data()); }
  void run() {
    api::r2c(forward, x.data(), spectrum());
    api::c2r(inverse, spectrum(), x.data());
  }
  ~RawFFTW() {
    api::destroy(forward);
    api::destroy(inverse);
  }
};

template <class T>
void BM_FFTWRawFFT(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1);
  const ssm::Index n = ssm::fft::fast_size(2 * L - 1);  // the Eigen backend's size, for the same work
  RawFFTW<T> raw(n);
  for (auto _ : state) {
    for (ssm::Index h = 0; h < H; ++h) raw.run();
    benchmark::DoNotOptimize(raw.x.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
  state.counters["fft_size"] = double(n);
}

template <class T>
void BM_EigenCausalConv(benchmark::State& state) {
  const ThreadScope one_thread(state, 1);
  const ssm::Index L = state.range(0), H = state.range(1);
  const auto u = random_sequence<T>(L, H, 1);
  const auto k = random_sequence<T>(L, H, 2);
  const auto spectrum = ssm::make_kernel_spectrum<T>(k, L);
  ssm::Sequence<T> y(L, H);
  y.setZero();
  for (auto _ : state) {
    ssm::causal_convolution_into(u, spectrum, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
  state.counters["fft_size"] = double(spectrum.fft_size);
}

template <class T>
void BM_EigenCauchyKernel(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2);
  const ThreadScope one_thread(state, 1);
  std::mt19937_64 gen(42);  // the layer of bench_kernels' BM_CauchyKernel
  const auto layer = ssm::S4<T>::initialise(H, N, ssm::hippo::Measure::legs, gen, 1e-3, 1e-1);
  const auto& p = layer.params();
  const ssm::MatrixXc<T> c_tilde = layer.c_tilde(L);
  const ssm::VectorX<T> dt = p.dt();
  ssm::MatrixX<T> K(L, H);
  ssm::kernels::dplr_kernel_into<T>(p.Lambda, p.P, p.B, c_tilde, dt, K);  // plans and first touch of K
  for (auto _ : state) {
    ssm::kernels::dplr_kernel_into<T>(p.Lambda, p.P, p.B, c_tilde, dt, K);
    benchmark::DoNotOptimize(K.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
}

void conv_sizes(benchmark::internal::Benchmark* b) {
  for (long L : {1024L, 16384L, 131072L}) b->Args({L, std::min(256L, std::max(1L, (4L << 20) / L))});
}

}  // namespace

BENCHMARK_TEMPLATE(BM_EigenRawFFT, float)->Apply(conv_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_FFTWRawFFT, float)->Apply(conv_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_EigenCausalConv, float)->Apply(conv_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_EigenRawFFT, double)->Args({16384, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_FFTWRawFFT, double)->Args({16384, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_EigenCausalConv, double)->Args({16384, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_EigenCauchyKernel, double)->Args({256, 64, 16384})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
