// The three linear time-invariant layers (S4, S4D, LinearRecurrentUnit) in each of their modes (issue 6).
//
//   BM_<Layer>Conv<T>/L/H/N        convolutional mode from the zero state for a length the layer has not
//                                  cached: the time includes generating the kernel for this L and its spectrum
//                                  (S4: C_tilde + Cauchy kernel; S4D: Vandermonde; LRU: the 2N mode kernels)
//                                  and then the FFT convolution, the honest cost of a new length. S4 and S4D
//                                  run forward's cache-miss path through the public API (kernel(L), spectrum,
//                                  convolution, D u); the LRU, whose spectra are private, on a copy made from
//                                  its parameters. FFTW plans are made before the timed loop
//                                  (MEASURE up to L = 16384, ESTIMATE beyond: see planning_for).
//   BM_<Layer>ConvCached<T>/L/H/N  the same call on a layer whose spectrum for L is already cached: the
//                                  steady cost of many sequences of one length (two FFTs per channel).
//   BM_<Layer>Recurrent<T>/L/H/N   recurrent mode over the whole sequence (forward(u, state, Mode::recurrence)) from a zero
//                                  state.
//   BM_<Layer>Step<T>/H/N          one step of all H channels (streaming, allocation-free).
// <Layer> is S4, S4D or LRU (LinearRecurrentUnit); N is the state size as each layer counts it
// (S4 and S4D keep N/2 complex modes, the LRU N complex modes shared by its H channels).
//
// Crossover target: for S4D, S4 (and LRU) with H=64, N=64, float, L in {16, ..., 16384}, the smallest L
// at which Conv is faster than Recurrent (report.py reads L as the first argument, and H = N = 64).
// Long sequences (L = 1M, H = 4; LRU 64k) and double are measured too.
//
// Everything here runs on ONE thread (omp_set_num_threads(1), restored after), so the figures compare
// algorithms, not core counts. items/s = samples x channels (L x H per sequence, H per step);
// bytes/s = the input read plus the output written. Times are wall-clock (UseRealTime; report.py ignores
// the "/real_time" suffix on the names).

#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/layers/lru.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <random>

namespace {

using ssm::bench::random_sequence;

/// One thread for the duration of a benchmark run, restored afterwards.
class SingleThread {
 public:
  SingleThread() {
#if defined(_OPENMP)
    previous_ = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
  }
  ~SingleThread() {
#if defined(_OPENMP)
    omp_set_num_threads(previous_);
#endif
  }

 private:
  int previous_ = 1;
};

/// FFTW_MEASURE plans (faster transforms) up to L = 16384; ESTIMATE beyond, because measuring the 1M and 2M
/// sizes takes about a minute per size, which bench/run.sh cannot afford.
ssm::fft::Planning planning_for(ssm::Index L) {
  return L <= 16384 ? ssm::fft::Planning::measure : ssm::fft::Planning::estimate;
}


/// What S4 and S4D forward() do for a length they have not cached: the kernel for L (S4: C_tilde and the
/// Cauchy kernel; S4D: the Vandermonde kernel), its padded spectrum, the FFT convolution, the skip term.
/// Done through the public API on the same layer, so the layer's constructor is not part of the time.
template <class Layer, class T>
ssm::Sequence<T> uncached_forward(const Layer& l, const ssm::Sequence<T>& u) {
  const ssm::Index L = u.rows();
  const auto spectrum = ssm::make_kernel_spectrum<T>(l.kernel(L), L);
  ssm::Sequence<T> y = ssm::causal_convolution(u, spectrum);
  y += u * l.params().D.asDiagonal();
  return y;
}

/// The modes every layer runs through the same API (initial_state, forward, forward from a state, step).
template <class LayerType, class T>
struct LayerModes {
  using Layer = LayerType;
  static auto state(const Layer& l) { return l.initial_state(); }
  static void reset(typename Layer::State& s) { s.x.setZero(); }
  static ssm::Sequence<T> conv(const Layer& l, const ssm::Sequence<T>& u) { return l.forward(u); }
  static ssm::Sequence<T> recurrent(const Layer& l, const ssm::Sequence<T>& u, typename Layer::State& s) {
    return l.forward(u, s, ssm::Mode::recurrence);
  }
  static void step(const Layer& l, const ssm::VectorX<T>& u, ssm::VectorX<T>& y, typename Layer::State& s) {
    l.step(u, s, y);
  }
};

// Adapters: how to make each layer and time its convolution at a length it has not cached.
template <class T>
struct S4DLayer : LayerModes<ssm::S4D<T>, T> {
  using Layer = ssm::S4D<T>;
  static Layer make(ssm::Index H, ssm::Index N) {
    std::mt19937_64 gen(1);
    return Layer::initialise(H, N, ssm::hippo::DiagonalInit::inv, ssm::Discretization::zoh, gen);
  }
  static ssm::Sequence<T> conv_new_length(const Layer& l, const ssm::Sequence<T>& u) {
    return uncached_forward(l, u);
  }
};

template <class T>
struct S4Layer : LayerModes<ssm::S4<T>, T> {
  using Layer = ssm::S4<T>;
  static Layer make(ssm::Index H, ssm::Index N) {
    std::mt19937_64 gen(1);
    return Layer::initialise(H, N, ssm::hippo::Measure::legs, gen, 1e-3, 1e-1);
  }
  static ssm::Sequence<T> conv_new_length(const Layer& l, const ssm::Sequence<T>& u) {
    return uncached_forward(l, u);
  }
};

template <class T>
struct LRULayer : LayerModes<ssm::LinearRecurrentUnit<T>, T> {
  using Layer = ssm::LinearRecurrentUnit<T>;
  static Layer make(ssm::Index H, ssm::Index N) {
    std::mt19937_64 gen(1);
    return Layer::initialise(H, N, gen, 0.9, 0.999);
  }
  // The LRU's per-length spectra are private to its forward: a copy made from the parameters starts with an
  // empty cache (its constructor is O(N H), small next to the kernels).
  static ssm::Sequence<T> conv_new_length(const Layer& l, const ssm::Sequence<T>& u) {
    return Layer(l.params()).forward(u);
  }
};

template <class T>
void sequence_counters(benchmark::State& state, ssm::Index L, ssm::Index H) {
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L * H);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * L * H * 2 * std::int64_t(sizeof(T)));
}

template <class A, class T>
void BM_Conv(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1), N = state.range(2);
  SingleThread one;
  ssm::fft::set_planning(planning_for(L));
  const auto layer = A::make(H, N);
  const auto u = random_sequence<T>(L, H, 3);
  benchmark::DoNotOptimize(A::conv(layer, u).data());  // FFTW plans for this L, outside the timing
  for (auto _ : state) {
    auto y = A::conv_new_length(layer, u);  // the kernel for L is generated, then applied
    benchmark::DoNotOptimize(y.data());
  }
  sequence_counters<T>(state, L, H);
}

template <class A, class T>
void BM_ConvCached(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1), N = state.range(2);
  SingleThread one;
  ssm::fft::set_planning(planning_for(L));
  const auto layer = A::make(H, N);
  const auto u = random_sequence<T>(L, H, 3);
  benchmark::DoNotOptimize(A::conv(layer, u).data());  // fills the layer's spectrum cache for L
  for (auto _ : state) {
    auto y = A::conv(layer, u);
    benchmark::DoNotOptimize(y.data());
  }
  sequence_counters<T>(state, L, H);
}

template <class A, class T>
void BM_Recurrent(benchmark::State& state) {
  const ssm::Index L = state.range(0), H = state.range(1), N = state.range(2);
  SingleThread one;
  const auto layer = A::make(H, N);
  const auto u = random_sequence<T>(L, H, 3);
  auto s = A::state(layer);
  for (auto _ : state) {
    A::reset(s);
    auto y = A::recurrent(layer, u, s);
    benchmark::DoNotOptimize(y.data());
  }
  sequence_counters<T>(state, L, H);
}

template <class A, class T>
void BM_Step(benchmark::State& state) {
  const ssm::Index H = state.range(0), N = state.range(1);
  SingleThread one;
  const auto layer = A::make(H, N);
  const ssm::VectorX<T> u = random_sequence<T>(H, 1, 3);
  ssm::VectorX<T> y(H);
  auto s = A::state(layer);
  for (auto _ : state) {
    A::step(layer, u, y, s);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * H);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * H * 2 * std::int64_t(sizeof(T)));
}

// The crossover series: H = N = 64, L = 16 .. 16384.
void crossover(benchmark::internal::Benchmark* b) {
  for (long L : {16L, 64L, 256L, 1024L, 4096L, 16384L}) b->Args({L, 64, 64});
}
// Double precision, and one long sequence (L = 1M, H = 4: H x L = 4M samples).
void double_sizes(benchmark::internal::Benchmark* b) {
  for (long L : {1024L, 16384L}) b->Args({L, 64, 64});
}
void long_sizes(benchmark::internal::Benchmark* b) { b->Args({1048576L, 4, 64}); }
// The LRU's convolution holds the spectra of its 2N mode kernels (bins x 2N complex: 1 GB at L = 1M, N = 64,
// and 8 s per call), so its long sequence is L = 64k.
void lru_long_sizes(benchmark::internal::Benchmark* b) { b->Args({65536L, 4, 64}); }
void cached_sizes(benchmark::internal::Benchmark* b) {
  for (long L : {1024L, 16384L}) b->Args({L, 64, 64});
}

}  // namespace

// Benchmark names without the adapter: BM_S4DConv<float>/L/H/N etc. (report.py looks them up by name).
#define SSM_LAYER_BENCH(Prefix, Adapter, T)                                                                      \
  BENCHMARK(BM_Conv<Adapter<T>, T>)->Name("BM_" #Prefix "Conv<" #T ">")->Apply(crossover)->Unit(benchmark::kMillisecond)->UseRealTime(); \
  BENCHMARK(BM_Recurrent<Adapter<T>, T>)                                                                     \
      ->Name("BM_" #Prefix "Recurrent<" #T ">")                                                              \
      ->Apply(crossover)                                                                                     \
      ->Unit(benchmark::kMillisecond)->UseRealTime();

#define SSM_LAYER_EXTRA(Prefix, Adapter, LongSizes)                                                                          \
  BENCHMARK(BM_Conv<Adapter<float>, float>)->Name("BM_" #Prefix "Conv<float>")->Apply(LongSizes)->Unit(benchmark::kMillisecond)->UseRealTime(); \
  BENCHMARK(BM_Recurrent<Adapter<float>, float>)                                                              \
      ->Name("BM_" #Prefix "Recurrent<float>")                                                                \
      ->Apply(LongSizes)                                                                                     \
      ->Unit(benchmark::kMillisecond)->UseRealTime();                                                                        \
  BENCHMARK(BM_ConvCached<Adapter<float>, float>)                                                             \
      ->Name("BM_" #Prefix "ConvCached<float>")                                                               \
      ->Apply(cached_sizes)                                                                                   \
      ->Unit(benchmark::kMillisecond)->UseRealTime();                                                                        \
  BENCHMARK(BM_Conv<Adapter<double>, double>)                                                                 \
      ->Name("BM_" #Prefix "Conv<double>")                                                                    \
      ->Apply(double_sizes)                                                                                   \
      ->Unit(benchmark::kMillisecond)->UseRealTime();                                                                        \
  BENCHMARK(BM_Recurrent<Adapter<double>, double>)                                                            \
      ->Name("BM_" #Prefix "Recurrent<double>")                                                               \
      ->Apply(double_sizes)                                                                                   \
      ->Unit(benchmark::kMillisecond)->UseRealTime();                                                                        \
  BENCHMARK(BM_Step<Adapter<float>, float>)->Name("BM_" #Prefix "Step<float>")->Args({64, 64})->UseRealTime();              \
  BENCHMARK(BM_Step<Adapter<double>, double>)->Name("BM_" #Prefix "Step<double>")->Args({64, 64})->UseRealTime();

SSM_LAYER_BENCH(S4D, S4DLayer, float)
SSM_LAYER_BENCH(S4, S4Layer, float)
SSM_LAYER_BENCH(LRU, LRULayer, float)
SSM_LAYER_EXTRA(S4D, S4DLayer, long_sizes)
SSM_LAYER_EXTRA(S4, S4Layer, long_sizes)
SSM_LAYER_EXTRA(LRU, LRULayer, lru_long_sizes)

BENCHMARK_MAIN();
