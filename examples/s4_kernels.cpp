// The convolution kernels of S4 and S4D: what a structured state space layer "sees" of its past.
//
// A time-invariant SSM channel  x' = A x + B u,  y = 2 Re(C x)  is, once discretised with step dt,
// the causal convolution  y_k = sum_l K_l u_{k-l}  with the kernel
//
//     K_l = 2 Re(C Abar^l Bbar),   l = 0 .. L-1,
//
// and since Bbar ~ dt B and Abar^l ~ exp(l dt A), K_l ~ dt K(l dt) samples ONE continuous kernel
// K(t) = 2 Re(C exp(tA) B). So dt is the layer's timescale: a ten times smaller dt stretches the same
// shape over ten times more lags, and the L1 mass sum_l |K_l| ~ integral |K(t)| dt hardly moves (as
// long as dt resolves K's fastest oscillations; at dt = 0.1 it no longer does).
//
// Four initialisations, one panel each, each drawn for dt = 1e-3, 1e-2, 1e-1:
// - S4 with HiPPO-LegS and with FouT: A = diag(Lambda) - P P^* (DPLR), bilinear; the kernel comes from
//   the Cauchy kernel at the roots of unity (ssm::S4::kernel, kernels/cauchy.hpp).
// - S4D-Lin (A_n = -1/2 - i pi n) and S4D-Inv (A_n = -1/2 - i (N/pi)(N/(2n+1) - 1)), ZOH; the kernel
//   is a Vandermonde product (ssm::S4D::kernel, kernels/vandermonde.hpp).
// Every kernel uses the same output vector C (M = N/2 complex values, seeded normal draws) and D = 0,
// all in double. The curves are normalised by their peak, K_l / max|K|, on a logarithmic lag axis.
//
// Printed per kernel: its peak, its L1 mass, the lag after which |K_l| stays below 1% of the peak,
// and the self-check: the same layer's recurrence (step() one sample at a time, fed a unit impulse)
// must reproduce the kernel, max_l |y_l - K_l| <= 1e-9 max|K|. In double both sides are computed
// to ~1e-13 (N = 64, L = 16384): the recurrence's rounding grows slowly with L (about sqrt(L) eps per
// mode), the S4D kernel takes exact powers exp(l log Abar), and the S4 kernel is the inverse FFT of
// the DPLR generating function at the L-th roots of unity. 1e-9 leaves room for larger N and L while
// still catching any real disagreement (a wrong C_tilde, an off-by-one lag, a wrong Bbar: all O(1)).
//
// What the picture shows: each init has one shape, and dt slides it along the lag axis (a decade of dt
// is a decade of lags). LegS weights its recent past most and lets the rest fade smoothly; FouT holds
// its weight over a window of about 1/dt lags (time 1) and keeps only a ringing tail after it, which
// finite N leaves; S4D-Lin and S4D-Inv decay like exp(-t/2) with oscillations (Lin's frequencies are
// evenly spaced, Inv's crowd towards zero). At dt = 0.1 FouT's highest frequencies (pi (M-1) dt ~ 10
// rad per step) are far above what one step resolves, and its 10-lag window is no longer clean.
//
// Usage: s4_kernels [N = 64] [L = 16384] [output.svg = s4_kernels.svg]

#include "svg.hpp"

#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

using ssm::Index;
const double kSteps[] = {1e-3, 1e-2, 1e-1};  // one channel per dt
constexpr Index kChannels = 3;
constexpr double kTolerance = 1e-9;  // max_l |recurrence - K| / max|K|, see the header comment

/// Summary of one kernel K_0 .. K_{L-1}.
struct Summary {
  double peak = 0;    // max_l |K_l|
  double l1 = 0;      // sum_l |K_l|
  Index decay = 0;    // first lag after which |K_l| < 0.01 peak for good (L if never)
};

Summary summarise(const Eigen::VectorXd& k) {
  Summary s;
  s.peak = k.cwiseAbs().maxCoeff();
  s.l1 = k.cwiseAbs().sum();
  s.decay = k.size();
  while (s.decay > 0 && std::abs(k(s.decay - 1)) < 0.01 * s.peak) --s.decay;
  return s;
}

/// The impulse response of a layer's recurrence: feed u_0 = 1, u_l = 0 (all channels) through `step`
/// and return y (L x H), with the skip term D u removed (D = 0 here, but this keeps it honest).
template <class Layer>
Eigen::MatrixXd impulse_response(const Layer& layer, Index L) {
  auto state = layer.initial_state();
  Eigen::VectorXd u = Eigen::VectorXd::Zero(kChannels), y(kChannels);
  Eigen::MatrixXd out(L, kChannels);
  for (Index l = 0; l < L; ++l) {
    u.setConstant(l == 0 ? 1.0 : 0.0);
    layer.step(u, state, y);
    out.row(l) = y.transpose() - (u.array() * layer.params().D.array()).matrix().transpose();
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Index N = argc > 1 ? std::atol(argv[1]) : 64;
  const Index L = argc > 2 ? std::atol(argv[2]) : 16384;
  const std::string out_path = argc > 3 ? argv[3] : "s4_kernels.svg";
  if (N < 2 || N % 2 != 0 || L < 16) {
    std::fprintf(stderr, "usage: s4_kernels [N even >= 2] [L >= 16] [output.svg]\n");
    return 2;
  }
  const Index M = N / 2;

  // One output vector for every kernel: C_n = (a + i b)/sqrt2 with a, b standard normal, seeded.
  std::mt19937_64 gen(2022);
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::VectorXcd C(M);
  for (Index n = 0; n < M; ++n) C(n) = {normal(gen) / std::sqrt(2.0), normal(gen) / std::sqrt(2.0)};
  const Eigen::MatrixXcd C_rows = C.transpose().replicate(kChannels, 1);  // the same C in every channel

  struct Kernel {
    std::string name, how;
    Eigen::MatrixXd K;         // L x 3: one column per dt
    Eigen::MatrixXd impulse;   // L x 3: the recurrence's impulse response
    double tolerance;          // of the self-check, relative to max|K|
  };
  std::vector<Kernel> kernels;

  for (auto [measure, name] : {std::pair{ssm::hippo::Measure::legs, "S4 HiPPO-LegS"},
                               std::pair{ssm::hippo::Measure::fout, "S4 FouT"}}) {
    std::mt19937_64 init_gen(1);  // draws dt, C, D, all overwritten below
    auto p = ssm::S4<double>::initialise(kChannels, N, measure, init_gen, 1e-3, 1e-1).params();
    for (Index h = 0; h < kChannels; ++h) p.log_dt(h) = std::log(kSteps[h]);
    p.C = C_rows;
    p.D.setZero();
    const ssm::S4<double> layer(p);
    kernels.push_back({name, "DPLR, Cauchy kernel", layer.kernel(L),
                       impulse_response(layer, L),
                       kTolerance});
  }
  for (auto [init, name] : {std::pair{ssm::hippo::DiagonalInit::lin, "S4D-Lin"},
                            std::pair{ssm::hippo::DiagonalInit::inv, "S4D-Inv"}}) {
    std::mt19937_64 init_gen(1);
    auto p = ssm::S4D<double>::initialise(kChannels, N, init, ssm::Discretization::zoh, init_gen).params();
    for (Index h = 0; h < kChannels; ++h) p.log_dt(h) = std::log(kSteps[h]);
    p.C = C_rows;
    p.D.setZero();
    const ssm::S4D<double> layer(p);
    kernels.push_back({name, "diagonal, Vandermonde kernel", layer.kernel(L),
                       impulse_response(layer, L),
                       kTolerance});
  }

  std::printf("Convolution kernels K_l = 2 Re(C Abar^l Bbar), N = %ld (M = %ld complex modes), L = %ld lags\n", long(N),
              long(M), long(L));
  std::printf("  %-14s %-7s %-11s %-11s %-14s %s\n", "kernel", "dt", "max|K|", "sum|K|", "1% lag", "|recurrence - K| / max|K|");
  bool ok = true;
  std::vector<svg::Panel> panels;
  for (const Kernel& k : kernels) {
    svg::Panel panel{k.name + " (" + k.how + "): K_l / max|K|, one curve per dt", "lag l + 1 (log scale)", "", {}};
    panel.log_x = true;
    for (Index h = 0; h < kChannels; ++h) {
      const Eigen::VectorXd K = k.K.col(h);
      const Summary s = summarise(K);
      const double error = (k.impulse.col(h) - K).cwiseAbs().maxCoeff() / s.peak;
      const bool pass = error <= k.tolerance;  // NaN fails too
      ok = ok && pass;
      const std::string decay = s.decay < L ? std::to_string(s.decay) : "> " + std::to_string(L);
      std::printf("  %-14s %-7g %-11.4g %-11.4g %-14s %.2e %s\n", k.name.c_str(), kSteps[h], s.peak, s.l1, decay.c_str(),
                  error, pass ? "ok" : "FAIL");
      svg::Series series{"dt = " + svg::number(kSteps[h]), {}, {}, svg::palette(std::size_t(h)), 1.3, false};
      for (Index l = 0; l < L; ++l) {
        series.x.push_back(double(l + 1));
        series.y.push_back(K(l) / s.peak);
      }
      panel.series.push_back(std::move(series));
    }
    panels.push_back(std::move(panel));
  }
  svg::write(out_path, panels, 900, 250);
  std::printf("  self-check tolerance: %.0e of max|K|\n  wrote %s\n", kTolerance, out_path.c_str());
  if (!ok) std::fprintf(stderr, "s4_kernels: a kernel disagrees with its own recurrence\n");
  return ok ? 0 : 1;
}
