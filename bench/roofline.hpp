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

/// Sums a 512 MiB buffer: the sustainable read bandwidth of one core.
inline void BM_Roofline_MemoryRead(benchmark::State& state) {
  const std::size_t n = (std::size_t(512) << 20) / sizeof(float);
  static std::vector<float> data(n, 1.0f);
  for (auto _ : state) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (std::size_t i = 0; i < n; i += 8) {
      s0 += data[i]; s1 += data[i + 1]; s2 += data[i + 2]; s3 += data[i + 3];
      s4 += data[i + 4]; s5 += data[i + 5]; s6 += data[i + 6]; s7 += data[i + 7];
    }
    float s = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(float)));
}

}  // namespace ssm::bench

BENCHMARK(ssm::bench::BM_Roofline_FmaPeak_f32)->Unit(benchmark::kMillisecond);
BENCHMARK(ssm::bench::BM_Roofline_MemoryRead)->Unit(benchmark::kMillisecond)->MinTime(0.5);
