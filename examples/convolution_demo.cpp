// Causal FFT convolution of a long multichannel signal, checked against the direct sum.
//
// Convolves an L x H signal with H decaying kernels (the shape of an SSM kernel) by real FFTs
// and compares with the O(L^2) direct sum in long double on a sample of outputs, then prints
// the agreement and both times. Usage: convolution_demo [L] [H]

#include "ssm/core/causal_convolution.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

int main(int argc, char** argv) {
  using T = float;
  const ssm::Index L = argc > 1 ? std::atol(argv[1]) : 65536;
  const ssm::Index H = argc > 2 ? std::atol(argv[2]) : 8;
  if (L < 1 || H < 1) {
    std::fprintf(stderr, "usage: convolution_demo [L >= 1] [H >= 1]\n");
    return 2;
  }
  std::mt19937_64 gen(42);
  std::normal_distribution<T> normal;
  ssm::Sequence<T> u(L, H), k(L, H);
  for (ssm::Index h = 0; h < H; ++h)
    for (ssm::Index t = 0; t < L; ++t) {
      u(t, h) = normal(gen);
      k(t, h) = normal(gen) * std::exp(-T(t) / T(1000 * (h + 1)));
    }

  ssm::causal_convolution(u, k);  // plans the transform size once
  const auto t0 = std::chrono::steady_clock::now();
  const ssm::Sequence<T> y = ssm::causal_convolution(u, k);
  const double fft_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Direct sum in long double on 64 sampled outputs per channel.
  const ssm::Index samples = std::min<ssm::Index>(64, L);
  long double worst = 0, scale = 0;
  const auto t1 = std::chrono::steady_clock::now();
  for (ssm::Index h = 0; h < H; ++h)
    for (ssm::Index s = 0; s < samples; ++s) {
      const ssm::Index t = (L - 1) - s * (L / samples);
      long double acc = 0, mag = 0;
      for (ssm::Index j = 0; j <= t; ++j) {
        acc += (long double)k(j, h) * u(t - j, h);
        mag += std::fabs((long double)k(j, h) * u(t - j, h));
      }
      worst = std::max(worst, std::fabs(acc - (long double)y(t, h)));
      scale = std::max(scale, mag);
    }
  const double direct_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double direct_full = direct_seconds * double(L) / double(samples);  // all L outputs cost L/samples times more

  std::printf("causal convolution, L = %ld, H = %ld, float\n", long(L), long(H));
  std::printf("  largest |FFT - direct| over %ld sampled outputs: %.3g (%.3g relative to sum |k||u|)\n",
              long(samples * H), double(worst), double(worst / scale));
  std::printf("  FFT: %.2f ms   direct sum (extrapolated to all outputs): %.0f ms   speed-up %.0fx\n",
              fft_seconds * 1e3, direct_full * 1e3, direct_full / fft_seconds);
  return worst / scale < 1e-5 ? 0 : 1;
}
