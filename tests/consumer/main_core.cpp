// Built against the installed package in CI (mode "core", see CMakeLists.txt): the Mamba and Mamba-2
// layers with ssm::core alone. The checks below prove no FFT, JSON or OpenMP header came along.
#include <ssm/layers/mamba.hpp>
#include <ssm/layers/mamba2.hpp>

#include <cstdio>
#include <random>

#if defined(FFTW3_H) || defined(INCLUDE_NLOHMANN_JSON_HPP_) || defined(_OPENMP)
#error "consumer: ssm::core pulled in FFTW, nlohmann-json or OpenMP"
#endif

int main() {
  std::mt19937_64 gen(1);
  ssm::MambaConfig config;
  config.d_model = 8;
  const auto mamba = ssm::Mamba<float>::initialise(config, gen);
  ssm::Mamba2Config config2;
  config2.d_model = 16;
  config2.d_state = 8;
  config2.headdim = 8;
  const auto mamba2 = ssm::Mamba2<float>::initialise(config2, gen);

  // One pass over a sequence equals stepping through it, for both layers.
  const ssm::Sequence<float> u = ssm::Sequence<float>::Random(5, 8);
  const ssm::Sequence<float> u2 = ssm::Sequence<float>::Random(5, 16);
  const ssm::Sequence<float> y = mamba.forward(u);
  const ssm::Sequence<float> y2 = mamba2.forward(u2);
  auto state = mamba.initial_state();
  auto state2 = mamba2.initial_state();
  ssm::Sequence<float> stepped(5, 8), stepped2(5, 16);
  for (ssm::Index t = 0; t < 5; ++t) {
    mamba.step(u.row(t), state, stepped.row(t));
    mamba2.step(u2.row(t), state2, stepped2.row(t));
  }
  const float scale = 1 + y.cwiseAbs().maxCoeff() + y2.cwiseAbs().maxCoeff();
  const bool ok = y.allFinite() && y2.allFinite() && (y - stepped).cwiseAbs().maxCoeff() < 1e-4f * scale &&
                  (y2 - stepped2).cwiseAbs().maxCoeff() < 1e-4f * scale;
  std::printf("consumer (core only): ssm Mamba and Mamba-2 %s\n", ok ? "work" : "are BROKEN");
  return ok ? 0 : 1;
}
