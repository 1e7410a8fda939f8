// Convolution-kernel generation: the DPLR (Cauchy) kernel of S4 and the Vandermonde kernel of S4D,
// each against the naive algorithm it replaces (issue 6).
//
//   BM_CauchyKernel<double>/H/N/L/threads  ssm::kernels::dplr_kernel_into (caller-owned L x H output), rank 1
//                                          (HiPPO-LegS), C_tilde for L precomputed outside the timed loop (it is BM_CauchyCTilde).
//                                          Target: H=256, N=64, L=16384, 1 thread <= 60 ms.
//   BM_CauchyCTilde<double>/H/N/L          C_tilde = C (I - Abar^L) by repeated squaring (S4::c_tilde), the
//                                          other per-length cost of an S4 kernel; reported beside the target.
//   BM_CauchyKernelNaive<double>/H/N/L     the reference's way: per channel, materialise the (L/2+1) x N
//                                          complex Cauchy matrix 1/(g_k - lambda_n) (both conjugates), multiply
//                                          by the N x 4 numerators, Woodbury, 2/(1+z), inverse FFT. The ratio
//                                          of the target line. Counter max_abs_diff: agreement with the fast one.
//                                          Run at H=32 (4 s at H=256 is too long for bench/run.sh); the work is
//                                          linear in H, so report.py scales it by 256/32 for the ratio.
//   BM_VandermondeKernel<T>/H/N/L/threads  ssm::vandermonde_kernel_into (blocked GEMM form) into a preallocated
//                                          L x H output, S4D-Inv modes with ZOH. Target: float, H=256, N=64,
//                                          L=16384, 1 thread <= 20 ms.
//   BM_VandermondeNaive<T>/H/N/L           powers by one long chain of repeated multiplications in T, time outer,
//                                          modes inner (vectorisable). Counter max_rel_err: its error against
//                                          the fast kernel (the reason the fast one avoids long chains).
//
// FFTW plans: MEASURE up to L = 16384, ESTIMATE beyond (measuring 1M sizes takes about a minute each).
// Times are wall-clock (UseRealTime: items/s and bytes/s from wall time; report.py reads real_time and
// ignores the "/real_time" suffix this adds to the names).
// items/s = kernel taps produced (L x H); bytes/s = bytes of the kernel written (L x H x sizeof(T)).
// Threads: with OpenMP, omp_set_num_threads(threads) for the run and restored after; without it the
// 2-thread runs are skipped. Benchmarks without a thread argument run on one thread.

#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/kernels/cauchy.hpp"
#include "ssm/kernels/vandermonde.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <complex>
#include <random>

namespace {

using ssm::bench::ThreadScope;


/// An S4 layer (HiPPO-LegS, rank 1) of H channels and state size N, deterministic.
template <class T>
ssm::S4<T> make_s4(ssm::Index H, ssm::Index N) {
  std::mt19937_64 gen(42);
  return ssm::S4<T>::initialise(H, N, ssm::hippo::Measure::legs, gen, 1e-3, 1e-1);
}

void set_kernel_counters(benchmark::State& state, ssm::Index L, ssm::Index H, std::size_t scalar_bytes) {
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * L * H * std::int64_t(scalar_bytes));
}

template <class T>
void BM_CauchyKernel(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2);
  ThreadScope threads(state, int(state.range(3)));
  if (!threads.ok()) return;
  ssm::fft::set_planning(L <= 16384 ? ssm::fft::Planning::measure : ssm::fft::Planning::estimate);
  const auto layer = make_s4<T>(H, N);
  const auto& p = layer.params();
  const ssm::MatrixXc<T> c_tilde = layer.c_tilde(L);
  const ssm::VectorX<T> dt = p.dt();
  ssm::MatrixX<T> K(L, H);
  ssm::kernels::dplr_kernel_into<T>(p.Lambda, p.P, p.B, c_tilde, dt, K);  // FFTW plan and first touch of K
  for (auto _ : state) {
    ssm::kernels::dplr_kernel_into<T>(p.Lambda, p.P, p.B, c_tilde, dt, K);
    benchmark::DoNotOptimize(K.data());
  }
  set_kernel_counters(state, L, H, sizeof(T));
}

template <class T>
void BM_CauchyCTilde(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2);
  ThreadScope threads(state, 1);
  const auto layer = make_s4<T>(H, N);
  for (auto _ : state) {
    auto c = layer.c_tilde(L);
    benchmark::DoNotOptimize(c.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * H);
}

/// The naive DPLR kernel of one channel: the materialised Cauchy matrix times the numerators.
/// Returns the kernel (length L) in `kernel`.
struct NaiveCauchy {
  ssm::Index L, M, bins;
  ssm::MatrixXc<double> cauchy;   // bins x 2M: 1 / (g_k - lambda_n), then 1 / (g_k - conj lambda_n)
  ssm::MatrixXc<double> numer;    // 2M x 4: v00, v01, v10, v11 (then their conjugates)
  ssm::MatrixXc<double> sums;     // bins x 4
  ssm::fft::Buffer<std::complex<double>> spectrum;
  ssm::fft::Buffer<double> kernel;
  std::shared_ptr<const ssm::fft::RealFFT<double>> plan;

  NaiveCauchy(ssm::Index L_, ssm::Index M_)
      : L(L_), M(M_), bins(L_ / 2 + 1), cauchy(bins, 2 * M_), numer(2 * M_, 4), sums(bins, 4), spectrum(bins),
        kernel(L_), plan(ssm::fft::real_fft<double>(L_)) {}

  template <class T>
  void run(const ssm::S4Params<T>& p, const ssm::MatrixXc<T>& c_tilde, double dt, ssm::Index h) {
    const double pi = 3.14159265358979323846;
    for (ssm::Index n = 0; n < M; ++n) {
      const std::complex<double> b(p.B(h, n)), c(c_tilde(h, n)), q(p.P[0](h, n));
      const std::complex<double> v[4] = {c * b, c * q, std::conj(q) * b, std::conj(q) * q};
      for (int j = 0; j < 4; ++j) {
        numer(n, j) = v[j];
        numer(M + n, j) = std::conj(v[j]);
      }
    }
    const bool nyquist = L % 2 == 0;
    const ssm::Index regular = nyquist ? bins - 1 : bins;
    for (ssm::Index n = 0; n < 2 * M; ++n) {
      const std::complex<double> lambda = n < M ? std::complex<double>(p.Lambda(h, n))
                                                : std::conj(std::complex<double>(p.Lambda(h, n - M)));
      for (ssm::Index k = 0; k < regular; ++k) {
        const std::complex<double> z = std::polar(1.0, -2.0 * pi * double(k) / double(L));
        const std::complex<double> g = (2.0 / dt) * (1.0 - z) / (1.0 + z);
        cauchy(k, n) = 1.0 / (g - lambda);
      }
    }
    sums.topRows(regular).noalias() = cauchy.topRows(regular) * numer;
    for (ssm::Index k = 0; k < regular; ++k) {
      const std::complex<double> z = std::polar(1.0, -2.0 * pi * double(k) / double(L));
      const std::complex<double> reduced = sums(k, 0) - sums(k, 1) * sums(k, 2) / (1.0 + sums(k, 3));
      spectrum[k] = 2.0 / (1.0 + z) * reduced / double(L);
    }
    if (nyquist) {  // z = -1: the finite limit dt Re(sum C_tilde B)
      double acc = 0;
      for (ssm::Index n = 0; n < M; ++n)
        acc += (std::complex<double>(c_tilde(h, n)) * std::complex<double>(p.B(h, n))).real();
      spectrum[bins - 1] = dt * acc / double(L);
    }
    plan->inverse(spectrum, kernel);
  }
};

template <class T>
void BM_CauchyKernelNaive(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2);
  ThreadScope threads(state, 1);
  ssm::fft::set_planning(L <= 16384 ? ssm::fft::Planning::measure : ssm::fft::Planning::estimate);
  const auto layer = make_s4<T>(H, N);
  const auto& p = layer.params();
  const ssm::MatrixXc<T> c_tilde = layer.c_tilde(L);
  const ssm::VectorX<T> dt = p.dt();
  NaiveCauchy naive(L, N / 2);
  ssm::MatrixX<T> K(L, H);
  for (auto _ : state) {
    for (ssm::Index h = 0; h < H; ++h) {
      naive.run(p, c_tilde, double(dt(h)), h);
      for (ssm::Index l = 0; l < L; ++l) K(l, h) = T(naive.kernel[l]);
    }
    benchmark::DoNotOptimize(K.data());
  }
  set_kernel_counters(state, L, H, sizeof(T));
  const auto fast = ssm::kernels::dplr_kernel(p.Lambda, p.P, p.B, c_tilde, dt, L);
  state.counters["max_abs_diff"] = double((fast - K).cwiseAbs().maxCoeff());
}

/// S4D-Inv modes discretised by ZOH: log z = dt A and W = C Bbar, both H x M.
template <class T>
struct VandermondeInputs {
  ssm::MatrixXc<T> log_z, W;
  VandermondeInputs(ssm::Index H, ssm::Index N) {
    std::mt19937_64 gen(7);
    const auto layer = ssm::S4D<T>::initialise(H, N, ssm::hippo::DiagonalInit::inv, ssm::Discretization::zoh, gen);
    const auto& p = layer.params();
    log_z = p.dt().template cast<std::complex<T>>().asDiagonal() * p.Lambda;
    W = p.C.cwiseProduct(layer.B_bar().transpose());
  }
};

template <class T>
void BM_VandermondeKernel(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2);
  ThreadScope threads(state, int(state.range(3)));
  if (!threads.ok()) return;
  const VandermondeInputs<T> in(H, N);
  ssm::Sequence<T> K(L, H);
  ssm::vandermonde_kernel_into<T>(in.log_z, in.W, K);  // first touch of K, outside the timing
  for (auto _ : state) {
    ssm::vandermonde_kernel_into<T>(in.log_z, in.W, K);
    benchmark::DoNotOptimize(K.data());
  }
  set_kernel_counters(state, L, H, sizeof(T));
}

template <class T>
void BM_VandermondeNaive(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1), L = state.range(2), M = N / 2;
  ThreadScope threads(state, 1);
  const VandermondeInputs<T> in(H, N);
  ssm::Sequence<T> K(L, H);
  Eigen::Array<T, Eigen::Dynamic, 1> zr(M), zi(M), pr(M), pi(M), re(M);
  for (auto _ : state) {
    for (ssm::Index h = 0; h < H; ++h) {
      for (ssm::Index n = 0; n < M; ++n) {
        const std::complex<T> z = std::exp(in.log_z(h, n));
        zr(n) = z.real();
        zi(n) = z.imag();
        pr(n) = 2 * in.W(h, n).real();
        pi(n) = 2 * in.W(h, n).imag();
      }
      T* out = K.col(h).data();
      for (ssm::Index l = 0; l < L; ++l) {  // p <- p z: Eigen vectorises both the sum and the update
        out[l] = pr.sum();
        re = pr * zr - pi * zi;
        pi = pr * zi + pi * zr;
        pr = re;
      }
    }
    benchmark::DoNotOptimize(K.data());
  }
  set_kernel_counters(state, L, H, sizeof(T));
  const ssm::Sequence<T> fast = ssm::vandermonde_kernel<T>(in.log_z, in.W, L);
  state.counters["max_rel_err"] = double((fast - K).cwiseAbs().maxCoeff() / fast.cwiseAbs().maxCoeff());
}

/// L from 1k to 1M with H reduced so that H x L <= 4M; the target size on 1 and 2 threads.
void kernel_sizes(benchmark::internal::Benchmark* b) {
  b->Args({256, 64, 16384, 1});
  b->Args({256, 64, 16384, 2});
  for (long L : {1024L, 131072L, 1048576L}) {
    const long H = std::min(256L, std::max(1L, (4L << 20) / L));
    b->Args({H, 64, L, 1});
  }
}

}  // namespace

BENCHMARK_TEMPLATE(BM_CauchyKernel, double)->Apply(kernel_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_CauchyCTilde, double)->Args({256, 64, 16384})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_CauchyKernelNaive, double)->Args({32, 64, 16384})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_VandermondeKernel, float)->Apply(kernel_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_VandermondeKernel, double)->Apply(kernel_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_VandermondeNaive, float)->Args({256, 64, 16384})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_VandermondeNaive, double)->Args({256, 64, 16384})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
