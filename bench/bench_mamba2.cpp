// Mamba-2: the SSD scan (chunked matrix form against the recurrence) and the Mamba-2 mixer (issue 13).
//
//   BM_SsdScan<float>/algorithm/Q/threads   SsdScan::run at the mamba2-130m shape (nheads 24, headdim 64,
//                                          dstate 128, ngroups 1, L 2048; D per head, dt_bias + softplus, no
//                                          gate), from a zero state. recurrent 0 = chunked with chunk size Q,
//                                          1 = recurrence (Q ignored). Same inputs in every run, so the times
//                                          compare directly. items/s = tokens/s. Counter gflops = the chunked
//                                          form's multiply-adds x 2 / time (C B^T: L Q N G; intra (triangular):
//                                          L Q P H / 2; inter and states: L P N H each), also reported for the
//                                          recurrence (same numerator) so that the ratio of the two is the
//                                          speed-up; compare with BM_Roofline_FmaPeak_f32 (FLOP/s = 2 x FMA/s).
//   BM_Mamba2Forward<float>/d_model/L/threads  Mamba2::forward of a whole sequence from zero states at the
//                                          reference's default sizes (d_state 128, headdim 64, expand 2, d_conv
//                                          4, ngroups 1; 24 heads at d_model 768); items/s = prompt tokens/s.
//   BM_Mamba2Step<float>/d_model           Mamba2::step on one block (weights cache-warm as their size
//                                          allows); items/s = tokens/s; counter bytes = weights + states read
//                                          per step.
//
// Threads: with OpenMP, omp_set_num_threads(threads) for the run and restored after; without OpenMP the
// 2-thread runs are skipped.

#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/ssd_scan.hpp"

#include <cmath>
#include <random>

namespace {

using ssm::Index;
using ssm::MatrixX;
using ssm::VectorX;
using ssm::bench::ThreadScope;

constexpr Index kH = 24, kP = 64, kN = 128, kG = 1, kL = 2048;

template <class T>
struct SsdInputs {
  ssm::SsdScanParams<T> params;
  MatrixX<T> x, dt, B, C;
};

template <class T>
const SsdInputs<T>& ssd_inputs() {
  static const SsdInputs<T> in = [] {
    SsdInputs<T> s;
    std::mt19937_64 gen(42);
    std::uniform_real_distribution<double> A(1.0, 16.0), dt(std::log(1e-3), std::log(1e-1));
    s.params.headdim = kP;
    s.params.ngroups = kG;
    s.params.dstate = kN;
    s.params.A.resize(kH);
    s.params.dt_bias.resize(kH);
    for (Index h = 0; h < kH; ++h) {
      s.params.A[h] = T(-A(gen));
      const double d = std::exp(dt(gen));
      s.params.dt_bias[h] = T(d + std::log(-std::expm1(-d)));
    }
    s.params.D = VectorX<T>::Ones(kH);
    s.params.dt_softplus = true;
    s.x = ssm::bench::random_sequence<T>(kL, kH * kP, 1);
    s.dt = ssm::bench::random_sequence<T>(kL, kH, 2);
    s.B = ssm::bench::random_sequence<T>(kL, kG * kN, 3);
    s.C = ssm::bench::random_sequence<T>(kL, kG * kN, 4);
    return s;
  }();
  return in;
}

template <class T>
void BM_SsdScan(benchmark::State& state) {
  const bool recurrent = state.range(0) == 1;
  const Index Q = state.range(1);
  ThreadScope threads(state, int(state.range(2)));
  if (!threads.ok()) return;
  const SsdInputs<T>& in = ssd_inputs<T>();
  const ssm::SsdScan<T> scan(in.params);
  MatrixX<T> S = scan.initial_state(), out(kL, kH * kP);
  const MatrixX<T> no_gate;
  for (auto _ : state) {
    S.setZero();
    scan.run(in.x, in.dt, in.B, in.C, no_gate, S, out,
             recurrent ? ssm::SsdAlgorithm::recurrent : ssm::SsdAlgorithm::chunked, Q);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double fma = double(kL) * Q * kN * kG + 0.5 * double(kL) * Q * kP * kH + 2.0 * kL * kP * kN * kH;
  state.SetItemsProcessed(state.iterations() * kL);
  state.counters["gflops"] =
      benchmark::Counter(2 * fma * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["Q"] = double(Q);
}

BENCHMARK_TEMPLATE(BM_SsdScan, float)
    ->ArgNames({"recurrent", "Q", "threads"})
    ->Args({1, 64, 1})
    ->Args({0, 32, 1})
    ->Args({0, 64, 1})
    ->Args({0, 128, 1})
    ->Args({0, 256, 1})
    ->Args({0, 64, 2})
    ->Args({1, 64, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

template <class T>
ssm::Mamba2<T> block(Index d_model) {
  ssm::Mamba2Config c;
  c.d_model = d_model;
  std::mt19937_64 gen(7);
  return ssm::Mamba2<T>::initialise(c, gen);
}

template <class T>
void BM_Mamba2Forward(benchmark::State& state) {
  const Index d_model = state.range(0), L = state.range(1);
  ThreadScope threads(state, int(state.range(2)));
  if (!threads.ok()) return;
  const ssm::Mamba2<T> b = block<T>(d_model);
  const ssm::Sequence<T> u = ssm::bench::random_sequence<T>(L, d_model, 5);
  for (auto _ : state) {
    ssm::Sequence<T> y = b.forward(u);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * L);
}

BENCHMARK_TEMPLATE(BM_Mamba2Forward, float)
    ->ArgNames({"d_model", "L", "threads"})
    ->Args({768, 2048, 1})
    ->Args({768, 2048, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

template <class T>
void BM_Mamba2Step(benchmark::State& state) {
  const Index d_model = state.range(0);
  ThreadScope threads(state, 1);
  const ssm::Mamba2<T> b = block<T>(d_model);
  auto s = b.initial_state();
  VectorX<T> u = ssm::bench::random_sequence<T>(d_model, 1, 6), y(d_model);
  for (auto _ : state) {
    b.step(u, s, y);
    benchmark::DoNotOptimize(y.data());
  }
  const auto& p = b.params();
  const double bytes = double(sizeof(T)) * double(p.in_proj_weight.size() + p.out_proj_weight.size() +
                                                  p.conv1d_weight.size() + 2 * s.ssm.size() + 2 * s.conv.size());
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes"] = bytes;
}

BENCHMARK_TEMPLATE(BM_Mamba2Step, float)->ArgNames({"d_model"})->Arg(768)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
