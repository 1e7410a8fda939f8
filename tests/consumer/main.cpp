// Built against the installed package in CI (modes "all" and "no_openmp", see CMakeLists.txt): includes
// the umbrella header and convolves.
#include <ssm/ssm.hpp>

#include <cstdio>

#if defined(CONSUMER_WITHOUT_OPENMP) && defined(_OPENMP)
#error "consumer: linked without ssm::openmp, yet compiled with OpenMP"
#endif

int main() {
  ssm::Sequence<double> u = ssm::Sequence<double>::Zero(8, 2);
  u(0, 0) = 1;  // an impulse on channel 0 returns its kernel
  ssm::Sequence<double> k = ssm::Sequence<double>::Ones(3, 2);
  const ssm::Sequence<double> y = ssm::causal_convolution(u, k);
  const bool ok = std::abs(y(0, 0) - 1) < 1e-12 && std::abs(y(2, 0) - 1) < 1e-12 && std::abs(y(3, 0)) < 1e-12 &&
                  std::abs(y(5, 1)) < 1e-12;
  std::printf("consumer: ssm %s (FFT backend: %s)\n", ok ? "works" : "is BROKEN", ssm::fft::backend::name);
  return ok ? 0 : 1;
}
