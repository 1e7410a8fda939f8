#pragma once
// The machine's own limits, measured in the same binary as the code they judge:
//   BM_Roofline_FmaPeak_f32  : fp32 fused multiply-adds per second on one core (FLOP/s = 2 x FMA/s)
//   BM_Roofline_MemoryRead   : bytes per second streamed from a buffer far larger than the caches
// Every bench executable registers both, so a ratio "achieved / limit" comes from one run.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ssm::bench {

/// 12 independent 8-wide accumulators hide the FMA latency (4 cycles x 2 ports needs >= 8).
inline void BM_Roofline_FmaPeak_f32(benchmark::State& state) {
  typedef float v8 __attribute__((vector_size(32)));
  constexpr int kAcc = 12;
  v8 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = v8{} + float(i) * 1e-3f;
  const v8 a = v8{} + 0.999999f, b = v8{} + 1e-7f;
  constexpr std::int64_t kIters = 1 << 16;
  for (auto _ : state) {
    for (std::int64_t it = 0; it < kIters; ++it) {
      for (int i = 0; i < kAcc; ++i) acc[i] = acc[i] * a + b;
    }
    for (int i = 0; i < kAcc; ++i) benchmark::DoNotOptimize(acc[i]);
  }
  const double flops = 2.0 * 8 * kAcc * double(kIters);
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

/// Sums a 512 MiB buffer with 64-byte vector loads into 8 independent vector accumulators (so add
/// latency never limits it): the sustainable read bandwidth of one core.
inline void BM_Roofline_MemoryRead(benchmark::State& state) {
  typedef float v8 __attribute__((vector_size(64)));
  const std::size_t n = (std::size_t(512) << 20) / sizeof(v8);
  static std::vector<v8> data(n, v8{} + 1.0f);
  for (auto _ : state) {
    v8 s[8] = {};
    for (std::size_t i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) s[j] += data[i + std::size_t(j)];
    for (int j = 1; j < 8; ++j) s[0] += s[j];
    benchmark::DoNotOptimize(s[0]);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(v8)));
}

}  // namespace ssm::bench

BENCHMARK(ssm::bench::BM_Roofline_FmaPeak_f32)->Unit(benchmark::kMillisecond);
BENCHMARK(ssm::bench::BM_Roofline_MemoryRead)->Unit(benchmark::kMillisecond)->MinTime(0.5);
