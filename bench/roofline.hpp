#pragma once
// The machine's own limits, measured in the same binary as the code they judge:
//   BM_Roofline_FmaPeak_f32  : fp32 fused multiply-adds per second on one core (FLOP/s = 2 x FMA/s),
//                              with the widest vectors the build uses (counter "lanes")
//   BM_Roofline_MemoryRead   : bytes per second streamed from a buffer far larger than the caches
// Every bench executable registers both, so a ratio "achieved / limit" comes from one run.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ssm::bench {

/// The widest float vector the build uses: 16 lanes with AVX-512, 8 with AVX, else 4 (SSE / NEON).
#if defined(__AVX512F__)
constexpr int kRooflineLanes = 16;
#elif defined(__AVX__)
constexpr int kRooflineLanes = 8;
#else
constexpr int kRooflineLanes = 4;
#endif
typedef float RooflineVector __attribute__((vector_size(4 * kRooflineLanes)));

/// 12 independent accumulators of the widest vector hide the FMA latency (4 cycles x 2 ports needs
/// >= 8), so the figure is what the build's own instruction set can reach.
inline void BM_Roofline_FmaPeak_f32(benchmark::State& state) {
  constexpr int kAcc = 12;
  RooflineVector acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = RooflineVector{} + float(i) * 1e-3f;
  const RooflineVector a = RooflineVector{} + 0.999999f, b = RooflineVector{} + 1e-7f;
  constexpr std::int64_t kIters = 1 << 16;
  for (auto _ : state) {
    for (std::int64_t it = 0; it < kIters; ++it) {
      for (int i = 0; i < kAcc; ++i) acc[i] = acc[i] * a + b;
    }
    for (int i = 0; i < kAcc; ++i) benchmark::DoNotOptimize(acc[i]);
  }
  const double flops = 2.0 * kRooflineLanes * kAcc * double(kIters);
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lanes"] = kRooflineLanes;
}

/// Sums a 512 MiB buffer, far larger than the caches, read as four concurrent sequential streams
/// (one per quarter; a matrix-vector product reads many rows at once, and one stream alone leaves
/// bandwidth unused) into two vector accumulators per stream, every accumulator kept live: the
/// sustainable read bandwidth of one core.
inline void BM_Roofline_MemoryRead(benchmark::State& state) {
  typedef float v16 __attribute__((vector_size(64)));
  constexpr std::size_t kStreams = 4;
  const std::size_t n = (std::size_t(512) << 20) / sizeof(v16), per_stream = n / kStreams;
  static std::vector<v16> data(n, v16{} + 1.0f);
  for (auto _ : state) {
    v16 s[kStreams][2] = {};
    for (std::size_t i = 0; i < per_stream; i += 2)
      for (std::size_t k = 0; k < kStreams; ++k) {
        s[k][0] += data[k * per_stream + i];
        s[k][1] += data[k * per_stream + i + 1];
      }
    v16 total = {};
    for (std::size_t k = 0; k < kStreams; ++k) total += s[k][0] + s[k][1];
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(v16)));
}

}  // namespace ssm::bench

BENCHMARK(ssm::bench::BM_Roofline_FmaPeak_f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_Roofline_MemoryRead)->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();
