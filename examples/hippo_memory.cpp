// HiPPO-LegS as an online memory: feed a signal through the continuous-time LegS system one sample
// at a time, then reconstruct the signal's WHOLE history from the N numbers of the state at a few
// moments, print the errors, and draw everything as an SVG.
//
// LegS projects the history f(s), s in [0, t], onto the scaled Legendre polynomials: the state
// c(t) (N numbers) obeys  c'(t) = (1/t) (A c(t) + B f(t))  with hippo::legs(N), and
//     f(x t) ~ sum_n c_n(t) sqrt(2n + 1) P_n(2x - 1),   x in [0, 1].
// Each step k = 1..L discretises that ODE with the bilinear rule at step size 1 for A/k, B/k;
// LegS's A is lower triangular, so each step is one triangular solve, O(N^2).
//
// Usage: hippo_memory [N = 64] [L = 4000] [output.svg = hippo_memory.svg]

#include "svg.hpp"

#include "ssm/hippo.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

/// The signal: a few incommensurate tones and a bump, on [0, 1].
double signal(double x) {
  return std::sin(2 * M_PI * 3 * x) + 0.5 * std::cos(2 * M_PI * 7.3 * x) + 1.2 * std::exp(-std::pow((x - 0.35) / 0.04, 2));
}

/// sum_n c_n sqrt(2n+1) P_n(y) for y in [-1, 1], with the three-term Legendre recurrence.
double legendre_series(const Eigen::VectorXd& c, double y) {
  double p_prev = 1.0, p = y, sum = c(0);
  if (c.size() > 1) sum += c(1) * std::sqrt(3.0) * p;
  for (Eigen::Index n = 2; n < c.size(); ++n) {
    const double p_next = ((2.0 * double(n) - 1.0) * y * p - (double(n) - 1.0) * p_prev) / double(n);
    p_prev = p;
    p = p_next;
    sum += c(n) * std::sqrt(2.0 * double(n) + 1.0) * p;
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const long N = argc > 1 ? std::atol(argv[1]) : 64;
  const long L = argc > 2 ? std::atol(argv[2]) : 4000;
  const std::string out_path = argc > 3 ? argv[3] : "hippo_memory.svg";
  if (N < 1 || L < 8) {
    std::fprintf(stderr, "usage: hippo_memory [N >= 1] [L >= 8] [output.svg]\n");
    return 2;
  }
  const ssm::hippo::Transition legs = ssm::hippo::legs(N);
  const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(N, N);

  Eigen::VectorXd c = Eigen::VectorXd::Zero(N);
  std::vector<double> xs(static_cast<std::size_t>(L)), fs(static_cast<std::size_t>(L));
  const long moments[4] = {L / 4, L / 2, 3 * L / 4, L};
  std::vector<Eigen::VectorXd> snapshots;
  for (long k = 1; k <= L; ++k) {
    const double x = (double(k) - 0.5) / double(L);  // sample k of the signal at the midpoint of its cell
    const double f = signal(x);
    xs[std::size_t(k - 1)] = x;
    fs[std::size_t(k - 1)] = f;
    // Bilinear step: (I - A/(2k)) c_k = (I + A/(2k)) c_{k-1} + B f_k / k.
    const Eigen::MatrixXd lhs = I - legs.A / (2.0 * double(k));
    const Eigen::VectorXd rhs = c + legs.A * c / (2.0 * double(k)) + legs.B * f / double(k);
    c = lhs.triangularView<Eigen::Lower>().solve(rhs);
    for (long m : moments)
      if (k == m) snapshots.push_back(c);
  }

  std::printf("HiPPO-LegS online memory: N = %ld coefficients summarise a history of up to L = %ld samples\n", N, L);
  std::printf("  %-10s %-14s %-16s %s\n", "moment t", "samples kept", "RMS error", "max error (over [0, t])");
  std::vector<svg::Panel> panels;
  svg::Panel overview{"HiPPO-LegS: the signal and its reconstruction from the N = " + std::to_string(N) + " state numbers",
                      "time (fraction of the signal)", "", {}};
  overview.series.push_back({"signal", xs, fs, "#222", 2.5, false});
  svg::Panel errors{"Reconstruction error: what the state forgot (each curve covers [0, t])", "time (fraction of the signal)",
                    "", {}};
  int worst_ok = 1;
  for (std::size_t s = 0; s < snapshots.size(); ++s) {
    const long t = moments[s];
    std::vector<double> rx, ry, ey;
    double sq = 0, worst = 0;
    for (long k = 1; k <= t; ++k) {
      const double y = 2.0 * (double(k) - 0.5) / double(t) - 1.0;  // position of sample k in [0, t], mapped to [-1, 1]
      const double r = legendre_series(snapshots[s], y);
      rx.push_back(xs[std::size_t(k - 1)]);
      ry.push_back(r);
      const double e = r - fs[std::size_t(k - 1)];
      ey.push_back(e);
      sq += e * e;
      worst = std::max(worst, std::abs(e));
    }
    const double rms = std::sqrt(sq / double(t));
    std::printf("  %-10.2f %-14ld %-16.4g %.4g\n", double(t) / double(L), t, rms, worst);
    if (!(rms < 0.1)) worst_ok = 0;
    const std::string label = "from c(" + svg::number(double(t) / double(L)) + ")";
    overview.series.push_back({label, rx, ry, svg::palette(s + 1), 1.4, true});
    errors.series.push_back({label, rx, ey, svg::palette(s + 1), 1.2, false});
  }
  panels.push_back(overview);
  panels.push_back(errors);
  svg::write(out_path, panels);
  std::printf("  wrote %s\n", out_path.c_str());
  return worst_ok ? 0 : 1;
}
