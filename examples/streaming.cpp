// Streaming inference: one layer, two ways to run it, the same output.
//
// A time-invariant diagonal SSM layer (H channels of L samples, u and y are L x H)
//
//     x_t = Abar .* x_{t-1} + Bbar u_t,      y_t = out(x_t) + D .* u_t
//
// can run over a whole recorded signal as a convolution y = K * u + D u (FFT, O(L log L) per
// channel, every output at once), or live, one sample at a time with `step` (O(state) per sample, no
// allocation, the state owned by the caller). Both read the same parameters, so they must agree.
//
// This program builds
// - an S4D layer (S4D-Lin, ZOH, dt log-uniform in [1e-3, 1e-1]; N real states = N/2 complex modes per
//   channel, out(x) = 2 Re(C . x)), and
// - a LinearRecurrentUnit (N complex modes shared by the H channels, |lambda| in [0.9, 0.999],
//   out(x) = Re(C x)), when ssm/layers/lru.hpp is present,
// feeds each, in float and in double, a seeded white-noise signal u (L x H) sample by sample through
// step() and whole through forward() (the convolution), and prints
// - the largest difference max |y_step - y_conv| and the same divided by max |y_conv|,
// - the per-sample latency of step() for all H channels: median and 99th percentile of L timed calls,
// - the whole-signal convolution time: the first call (which also builds the kernel and its FFT
//   plans, then cached per length) and the best of five repeats.
//
// Self-check: the relative difference must stay below 1e-4 in float and 1e-10 in double. The two modes
// round differently (the FFT mixes all L samples; the recurrence carries its rounding along the slowest
// mode, whose memory is 1/(1 - |Abar|) ~ 2000 steps), so they agree to some tens of eps of the output's
// scale, not to the last bit (about 2e-6 in float and 7e-15 in double at the default sizes). The
// tolerances leave a wide margin for other sizes and machines and are still far below any real
// disagreement (an off-by-one lag, a wrong Bbar or D: errors of order 1).
//
// Usage: streaming [H = 64] [N = 64] [L = 16384]

#include "ssm/layers/s4d.hpp"
#if __has_include("ssm/layers/lru.hpp")
#include "ssm/layers/lru.hpp"
#define SSM_EXAMPLE_HAS_LRU 1
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using ssm::Index;
using Clock = std::chrono::steady_clock;

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;  // relative to max |y|, see the header comment
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// Runs `layer` both ways on u, prints one table row, returns whether the outputs agree.
template <class T, class Layer>
bool compare(const char* name, const Layer& layer, const ssm::Sequence<T>& u) {
  const Index L = u.rows(), H = u.cols();

  // Whole signal by convolution: the first call builds and caches the kernel spectrum for length L;
  // then the best of five (the least disturbed by other work on the machine).
  auto start = Clock::now();
  ssm::Sequence<T> y_conv = layer.forward(u);
  const double first = seconds_since(start);
  double repeat = 1e300;
  for (int r = 0; r < 5; ++r) {
    start = Clock::now();
    y_conv = layer.forward(u);
    repeat = std::min(repeat, seconds_since(start));
  }

  // One sample at a time: time each step() call (all H channels) on its own. A live stream delivers
  // each sample as H contiguous values, so that is what step() gets here. (step() also takes a row of
  // the L x H sequence directly, but that row is strided by L values: slower, and not what is measured.)
  auto state = layer.initial_state();
  ssm::VectorX<T> u_t(H), y_t(H);
  ssm::Sequence<T> y_step(L, H);
  std::vector<double> latency(static_cast<std::size_t>(L));
  for (Index t = 0; t < L; ++t) {
    u_t = u.row(t).transpose();
    start = Clock::now();
    layer.step(u_t, state, y_t);
    latency[std::size_t(t)] = seconds_since(start);
    y_step.row(t) = y_t.transpose();
  }
  auto percentile = [&](double q) {
    std::vector<double> v = latency;
    auto nth = v.begin() + std::ptrdiff_t(q * double(v.size() - 1));
    std::nth_element(v.begin(), nth, v.end());
    return *nth;
  };

  const double diff = double((y_step - y_conv).cwiseAbs().maxCoeff());
  const double scale = double(y_conv.cwiseAbs().maxCoeff());
  const double relative = diff / scale;
  const bool ok = relative <= tolerance<T>();  // NaN fails too
  std::printf("  %-8s %-7s %-10.2e %-10.2e %-12.2f %-11.2f %-11.1f %-11.1f %-11.3f %s\n", name,
              ssm::scalar_traits<T>::name, diff, relative, 1e6 * percentile(0.5), 1e6 * percentile(0.99), 1e3 * first,
              1e3 * repeat, 1e6 * repeat / double(L), ok ? "ok" : "FAIL");
  return ok;
}

template <class T>
bool run(Index H, Index N, Index L) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  ssm::Sequence<T> u(L, H);
  for (Index h = 0; h < H; ++h)
    for (Index t = 0; t < L; ++t) u(t, h) = T(normal(gen));

  std::mt19937_64 s4d_gen(1);
  const auto s4d = ssm::S4D<T>::initialise(H, N, ssm::hippo::DiagonalInit::lin, ssm::Discretization::zoh, s4d_gen);
  bool ok = compare<T>("S4D", s4d, u);
#ifdef SSM_EXAMPLE_HAS_LRU
  std::mt19937_64 lru_gen(1);
  const auto lru = ssm::LinearRecurrentUnit<T>::initialise(H, N, lru_gen, 0.9, 0.999);
  ok = compare<T>("LRU", lru, u) && ok;
#endif
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const Index H = argc > 1 ? std::atol(argv[1]) : 64;
  const Index N = argc > 2 ? std::atol(argv[2]) : 64;
  const Index L = argc > 3 ? std::atol(argv[3]) : 16384;
  if (H < 1 || N < 2 || N % 2 != 0 || L < 2) {
    std::fprintf(stderr, "usage: streaming [H >= 1] [N even >= 2] [L >= 2]\n");
    return 2;
  }
  std::printf("Streaming (step, one sample at a time) vs whole signal (convolution): H = %ld channels, N = %ld, L = %ld\n",
              long(H), long(N), long(L));
#ifndef SSM_EXAMPLE_HAS_LRU
  std::printf("  (ssm/layers/lru.hpp not found: S4D only)\n");
#endif
  std::printf("  %-8s %-7s %-10s %-10s %-12s %-11s %-11s %-11s %-11s\n", "layer", "scalar", "max diff", "relative",
              "step med us", "step p99 us", "conv 1st ms", "conv ms", "conv us/smp");
  const bool ok = run<float>(H, N, L) & run<double>(H, N, L);
  std::printf("  tolerance (relative to max |y|): float %.0e, double %.0e\n", tolerance<float>(), tolerance<double>());
  if (!ok) std::fprintf(stderr, "streaming: step() and forward() disagree\n");
  return ok ? 0 : 1;
}
