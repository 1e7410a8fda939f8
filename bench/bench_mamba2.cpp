// Mamba-2: the SSD scan (chunked matrix form against the recurrence) and the Mamba-2 mixer (issue 13).
// Names as registered (ArgNames); report.py looks them up without the "/real_time" suffix.
//
//   BM_SsdScan<float>/recurrent:R/Q:Q/threads:T  SsdScan::run at the mamba2-130m shape (nheads 24, headdim 64,
//                                          dstate 128, ngroups 1, L 2048; D per head, dt_bias + softplus, no
//                                          gate), from a zero state. recurrent 0 = chunked with chunk size Q,
//                                          1 = recurrence (Q ignored). Same inputs in every run, so the times
//                                          compare directly. items/s = tokens/s. Counter gflops = the chunked
//                                          form's multiply-adds x 2 / time (C B^T: L Q N G; intra (triangular):
//                                          L Q P H / 2; inter and states: L P N H each), also reported for the
//                                          recurrence (same numerator) so that the ratio of the two is the
//                                          speed-up; compare with BM_Roofline_FmaPeak_f32 (FLOP/s = 2 x FMA/s).
//   BM_Mamba2Forward<float>/d_model:D/L:L/threads:T  Mamba2::forward of a whole sequence from zero states at the
//                                          reference's default sizes (d_state 128, headdim 64, expand 2, d_conv
//                                          4, ngroups 1; 24 heads at d_model 768); items/s = prompt tokens/s.
//   BM_Mamba2Step<float>/d_model:D         Mamba2::step at the mamba2-130m block size (d_model 768, the sizes
//                                          above) on one thread. A model reads every block's weights once per
//                                          token and they do not stay in cache (24 blocks of 15 MB), so the
//                                          benchmark steps through a rotation of distinct blocks whose weights
//                                          and states together exceed 4x the last-level cache (counter
//                                          "blocks"; ssm::bench::BlockStack); each iteration is one step of one
//                                          block. items/s = tokens/s. bytes/s counts, per step, every parameter
//                                          array (15.1 MB at 768) plus the state (conv window and SSD state,
//                                          0.8 MB) read and written: 16.7 MB. report.py compares bytes/s with
//                                          BM_Roofline_MemoryRead (target >= 70%). Counters: weight_bytes = one
//                                          block's parameters; blocks; allocations = heap allocations per step
//                                          (the design promises 0).
//   BM_Mamba2StepHot<float>/d_model:D      the same step always on one block (weights as cache-resident as
//                                          their size allows): the compute-side bound of the step. Same
//                                          counters (blocks = 1).
//   BM_Mamba2LMDecode<float>                a Mamba-2 language model at the mamba2-130m shape (d_model 768, 24
//                                          layers, vocab 50280, tied head), greedy decoding: one token per
//                                          iteration through every layer, the final norm and the head.
//                                          items/s = tokens/s.
//   BM_Mamba2LMPrefill<float>/L:L/threads:T  the same model's prefill of a prompt of L tokens from fresh
//                                          states (MambaLM::prefill: the chunked forward of every layer, the
//                                          head on the last position). items/s = prompt tokens/s.
//
// Threads: with OpenMP, omp_set_num_threads(threads) for the run (1 where there is no thread argument)
// and restored after; without OpenMP the 2-thread runs are skipped. Times are wall-clock (UseRealTime, so
// items/s, bytes/s and gflops are per wall second; report.py ignores the "/real_time" suffix on the names).

#define SSM_BENCH_COUNT_ALLOCATIONS  // this file's malloc counts allocations (bench_support.hpp)
#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/layers/mamba2.hpp"
#include "ssm/models/mamba_lm.hpp"
#include "ssm/layers/ssd_scan.hpp"

#include <cmath>
#include <cstdint>
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

/// A Mamba-2 block at the reference's default sizes, initialised as the reference does from `seed`.
template <class T>
ssm::Mamba2<T> block(Index d_model, std::uint64_t seed = 7) {
  ssm::Mamba2Config c;
  c.d_model = d_model;
  std::mt19937_64 gen(seed);
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

/// Bytes of every parameter array of a block: what one token's step reads (the scan's A, D and dt_bias
/// are its own copies of A_log, D and dt_bias, of the same sizes).
template <class T>
std::int64_t weight_bytes(const ssm::Mamba2Params<T>& p) {
  const std::int64_t n = p.dt_bias.size() + p.A_log.size() + p.D.size() + p.in_proj_weight.size() +
                         p.in_proj_bias.size() + p.conv1d_weight.size() + p.conv1d_bias.size() +
                         p.norm_weight.size() + p.out_proj_weight.size() + p.out_proj_bias.size();
  return n * std::int64_t(sizeof(T));
}

/// Steps the block: a cold rotation of distinct blocks or one hot block (ssm::bench::BlockStack). Bytes per
/// step = the weights plus the state (conv window and SSD state) read and written.
template <class T>
void mamba2_step(benchmark::State& state, bool cold) {
  const Index d_model = state.range(0);
  auto& stack = ssm::bench::BlockStack<ssm::Mamba2<T>>::get(
      {d_model}, cold, [=](std::uint64_t seed) { return block<T>(d_model, seed); },
      [](const ssm::Mamba2<T>& b) { return weight_bytes(b.params()); });
  ssm::bench::step_blocks(state, stack, stack.weight_bytes + 2 * stack.state_bytes);
}

template <class T>
void BM_Mamba2Step(benchmark::State& state) {
  mamba2_step<T>(state, true);
}

template <class T>
void BM_Mamba2StepHot(benchmark::State& state) {
  mamba2_step<T>(state, false);
}

BENCHMARK_TEMPLATE(BM_Mamba2Step, float)
    ->ArgNames({"d_model"})
    ->Arg(768)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_Mamba2StepHot, float)
    ->ArgNames({"d_model"})
    ->Arg(768)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

/// A Mamba-2 language model at the mamba2-130m shape (d_model 768, 24 layers, vocab 50280 padded to
/// 50288, tied head), every block initialised as the reference does; built once and kept.
template <class T>
const ssm::MambaLM<T>& mamba2_130m_shape() {
  static const ssm::MambaLM<T> lm = [] {
    ssm::MambaLMConfig config;
    config.d_model = 768;
    config.n_layer = 24;
    config.vocab_size = 50280;
    config.pad_vocab_size_multiple = 16;
    config.mixer = ssm::MambaMixer::mamba2;
    config.block2.d_model = config.d_model;
    std::vector<typename ssm::MambaLM<T>::Layer> layers;
    for (Index i = 0; i < config.n_layer; ++i)
      layers.push_back({VectorX<T>::Ones(config.d_model), block<T>(config.d_model, std::uint64_t(100 + i))});
    const MatrixX<T> embedding = T(0.02) * ssm::bench::random_sequence<T>(config.padded_vocab_size(), config.d_model, 8);
    return ssm::MambaLM<T>(config, embedding, std::move(layers), VectorX<T>::Ones(config.d_model));
  }();
  return lm;
}

/// Greedy decoding, one token per iteration (every layer's step, the final norm and the tied head over
/// the whole vocabulary); items/s = tokens/s.
template <class T>
void BM_Mamba2LMDecode(benchmark::State& state) {
  ThreadScope threads(state, 1);
  const auto& lm = mamba2_130m_shape<T>();
  auto s = lm.initial_state();
  VectorX<T> logits(lm.vocab_size());
  typename ssm::MambaLM<T>::Token token = 1;
  lm.step(token, s, logits);  // the first step after building pays one-time costs (about 250 ms here)
  s.reset();
  for (auto _ : state) {
    lm.step(token, s, logits);
    Index best = 0;
    logits.maxCoeff(&best);
    token = best;
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()));
}

/// Prompt prefill: the next-token logits after a prompt of L tokens from fresh states (MambaLM::prefill:
/// the chunked forward of every layer, the head on the last position); items/s = prompt tokens/s.
template <class T>
void BM_Mamba2LMPrefill(benchmark::State& state) {
  const Index L = state.range(0);
  ThreadScope threads(state, int(state.range(1)));
  if (!threads.ok()) return;
  const auto& lm = mamba2_130m_shape<T>();
  std::vector<typename ssm::MambaLM<T>::Token> prompt(static_cast<std::size_t>(L));
  std::mt19937_64 gen(11);
  for (auto& t : prompt) t = typename ssm::MambaLM<T>::Token(gen() % 50280);
  for (auto _ : state) {
    auto s = lm.initial_state();
    VectorX<T> logits = lm.prefill(prompt, s);
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L);
}

BENCHMARK_TEMPLATE(BM_Mamba2LMDecode, float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Mamba2LMPrefill, float)
    ->ArgNames({"L", "threads"})
    ->Args({512, 1})
    ->Args({512, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
