// Mamba: the selective scan, the block forward and step, and language-model decoding speed (issue 6).
//
//   BM_SelectiveScan<float>/D/N/L/threads  ssm::selective_scan as the Mamba block calls it (real A, per-step
//                                          B and C, D skip, gate z, delta bias + softplus). items/s counts
//                                          channel x state x step, so 1/items_per_second is the "ns per
//                                          channel x state x step" of the target (<= 0.4 ns on one thread at
//                                          D=1536, N=16, L=2048; >= 1.8x faster on two threads).
//   BM_SelectiveScanStep<float>/D/N/layout one step of the same scan (L = 1), as Mamba::step runs it:
//                                          layout 0 gives A with the channels contiguous for each state (the
//                                          step's layout, which the one-step kernel reads in place), layout 1
//                                          each channel's N values contiguous (which sends the step through the
//                                          lane kernel built for sequences). items/s = channel x state.
//   BM_MambaForward<float>/d_model/d_state/L/threads  Mamba::forward of a whole sequence (in_proj GEMM, conv,
//                                          x_proj, dt_proj, scan, out_proj) from zero states; items/s = tokens.
//   BM_MambaStep<float>/768/16             Mamba::step at the mamba-130m block size (d_model 768, d_state 16,
//                                          d_conv 4, expand 2, dt_rank 48) on one thread. A model reads every
//                                          block's weights once per token and they do not stay in cache (24
//                                          blocks of 15 MB), so the benchmark steps through a rotation of
//                                          distinct blocks whose weights and states together exceed 4x the
//                                          last-level cache (counter "blocks"; ssm::bench::BlockStack); each
//                                          iteration is one step of one block. bytes/s = weights per step.
//                                          Counter weight_bytes = bytes of one block's weights; report.py
//                                          divides it by the step time and compares with BM_Roofline_MemoryRead
//                                          (target >= 70%). Counter allocations = heap allocations per step
//                                          (the design promises 0).
//   BM_MambaStepHot<float>/768/16          the same step always on one block (weights as cache-resident as
//                                          their size allows): the compute-side bound of the step.
//   BM_MambaLMTokens<float>/d_model/n_layer/vocab  greedy decoding with MambaLM::step (argmax fed back) on a
//                                          randomly initialised model built in memory; items/s = tokens/s.
//                                          256/4/1024 is the small model; 768/24/50280 the mamba-130m shape.
//   BM_MambaLMBatchedTokens<float>/768/24/50280/B  batched decoding, B streams stepped together with
//                                          MambaLM::step_batch (each fed its own argmax) on one thread;
//                                          items/s = aggregate tokens/s over the B streams (target: B = 16 gives
//                                          >= 8x the tokens/s of B = 1). Counter flops (a rate) = 2 x the
//                                          weights each token multiplies (projections and head) x B per step,
//                                          to compare with BM_Roofline_FmaPeak_f32: where the step turns
//                                          compute-bound.
//   BM_LoadCheckpoint/768/24/50280   MambaLM::load of a checkpoint directory at the mamba-130m shape in the
//                                          reference layout, F32 (516 MB, written once to the temporary directory,
//                                          so read from a warm page cache). Counters: peak_rss_over_weights = (peak
//                                          resident memory during the load - resident memory before it) / the
//                                          file's bytes (target: <= 1.1; the peak is reset before each load through
//                                          /proc/self/clear_refs, Linux only: -1 where it cannot be); bytes/s = file
//                                          bytes loaded per second.
//
// Threads: with OpenMP, omp_set_num_threads(threads) for the run (1 where there is no thread argument)
// and restored after; without OpenMP the 2-thread runs are skipped. Times are wall-clock (UseRealTime, so
// items/s and bytes/s are per wall second; report.py ignores the "/real_time" suffix on the names).

#define SSM_BENCH_COUNT_ALLOCATIONS  // this file's malloc counts allocations (bench_support.hpp)
#include "bench_support.hpp"
#include "roofline.hpp"

#include "ssm/layers/mamba.hpp"
#include "ssm/layers/selective_scan.hpp"
#include "ssm/models/mamba_lm.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

namespace {

using ssm::bench::allocation_count;
using ssm::bench::ThreadScope;

/// Fast deterministic uniform fill in [-scale, scale] (xorshift), for weight matrices of any size.
template <class Derived>
void fill_uniform(Eigen::DenseBase<Derived>& m, double scale, std::uint64_t& seed) {
  for (ssm::Index j = 0; j < m.cols(); ++j)
    for (ssm::Index i = 0; i < m.rows(); ++i) {
      seed ^= seed << 13;
      seed ^= seed >> 7;
      seed ^= seed << 17;
      const double u = double(seed >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
      m(i, j) = typename Derived::Scalar((2.0 * u - 1.0) * scale);
    }
}

/// A Mamba block with the reference's initialisation shapes: Linear weights uniform(+-1/sqrt(fan_in)),
/// A_log = log(1 .. d_state) per channel (S4D-Real), dt_proj bias = softplus^-1 of dt log-uniform in
/// [1e-3, 1e-1], D = 1.
template <class T>
ssm::MambaParams<T> random_block(ssm::Index d_model, ssm::Index d_state, std::uint64_t seed) {
  ssm::MambaParams<T> p;
  p.config.d_model = d_model;
  p.config.d_state = d_state;
  p.config.d_conv = 4;
  p.config.expand = 2;
  p.config.dt_rank = 0;  // auto: ceil(d_model / 16), 48 at d_model 768
  const ssm::Index di = p.config.d_inner(), R = p.config.rank(), N = d_state, K = p.config.d_conv;
  std::uint64_t s = 0x9E3779B97F4A7C15ull ^ (seed * 0xBF58476D1CE4E5B9ull);
  p.in_proj_weight.resize(2 * di, d_model);
  fill_uniform(p.in_proj_weight, 1.0 / std::sqrt(double(d_model)), s);
  p.conv1d_weight.resize(di, K);
  fill_uniform(p.conv1d_weight, 1.0 / std::sqrt(double(K)), s);
  p.conv1d_bias.resize(di);
  fill_uniform(p.conv1d_bias, 1.0 / std::sqrt(double(K)), s);
  p.x_proj_weight.resize(R + 2 * N, di);
  fill_uniform(p.x_proj_weight, 1.0 / std::sqrt(double(di)), s);
  p.dt_proj_weight.resize(di, R);
  fill_uniform(p.dt_proj_weight, 1.0 / std::sqrt(double(R)), s);
  p.dt_proj_bias.resize(di);
  for (ssm::Index d = 0; d < di; ++d) {
    Eigen::Matrix<double, 1, 1> u;
    fill_uniform(u, 1.0, s);
    const double dt = std::exp(std::log(1e-3) + 0.5 * (u(0) + 1.0) * (std::log(1e-1) - std::log(1e-3)));
    p.dt_proj_bias(d) = T(dt + std::log(-std::expm1(-dt)));
  }
  p.A_log.resize(di, N);
  for (ssm::Index d = 0; d < di; ++d)
    for (ssm::Index n = 0; n < N; ++n) p.A_log(d, n) = T(std::log(double(n + 1)));
  p.D = ssm::VectorX<T>::Ones(di);
  p.out_proj_weight.resize(d_model, di);
  fill_uniform(p.out_proj_weight, 1.0 / std::sqrt(double(di)), s);
  return p;
}

/// Bytes of all of a block's weights: what one token's step must read.
template <class T>
std::int64_t weight_bytes(const ssm::MambaParams<T>& p) {
  const std::int64_t n = p.in_proj_weight.size() + p.conv1d_weight.size() + p.conv1d_bias.size() +
                         p.x_proj_weight.size() + p.dt_proj_weight.size() + p.dt_proj_bias.size() + p.A_log.size() +
                         p.D.size() + p.out_proj_weight.size();
  return n * std::int64_t(sizeof(T));
}

template <class T>
ssm::Sequence<T> random_sequence(ssm::Index L, ssm::Index H, unsigned seed, T scale = 1) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<T> normal(0, scale);
  ssm::Sequence<T> m(L, H);
  for (ssm::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
  return m;
}

template <class T>
void BM_SelectiveScan(benchmark::State& state) {
  const ssm::Index D = state.range(0), N = state.range(1), L = state.range(2);
  ThreadScope threads(state, int(state.range(3)));
  if (!threads.ok()) return;
  const auto u = random_sequence<T>(L, D, 1);
  const auto delta = random_sequence<T>(L, D, 2, T(0.5));
  ssm::MatrixX<T> A(D, N);
  for (ssm::Index d = 0; d < D; ++d)
    for (ssm::Index n = 0; n < N; ++n) A(d, n) = -T(n + 1);
  // The scan takes views of B, C and the options: the values live here.
  const ssm::Sequence<T> B_values = random_sequence<T>(L, N, 3), C_values = random_sequence<T>(L, N, 4);
  const auto B = ssm::ScanMatrix<T>::per_step(B_values);
  const auto C = ssm::ScanMatrix<T>::per_step(C_values);
  const ssm::VectorX<T> skip = ssm::VectorX<T>::Ones(D);
  const ssm::Sequence<T> z = random_sequence<T>(L, D, 5);
  const ssm::VectorX<T> bias = ssm::VectorX<T>::Constant(D, T(-4));  // softplus(-4) ~ 0.018: a typical dt
  ssm::SelectiveScanOptions<T> options;
  options.D = skip;
  options.z = z;
  options.delta_bias = bias;
  options.delta_softplus = true;
  for (auto _ : state) {
    auto r = ssm::selective_scan(u, delta, A, B, C, options);
    benchmark::DoNotOptimize(r.out.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * D * N * L);
  // u, delta, z read and out written (L x D each), B and C read (L x N each).
  state.SetBytesProcessed(std::int64_t(state.iterations()) * (4 * L * D + 2 * L * N) * std::int64_t(sizeof(T)));
}

template <class T>
void BM_SelectiveScanStep(benchmark::State& state) {
  const ssm::Index D = state.range(0), N = state.range(1);
  const bool channel_major = state.range(2) == 1;
  ThreadScope threads(state, 1);
  const auto u = random_sequence<T>(1, D, 1);
  const auto delta = random_sequence<T>(1, D, 2, T(0.5));
  const auto z = random_sequence<T>(1, D, 5);
  ssm::MatrixX<T> A(D, N);
  for (ssm::Index d = 0; d < D; ++d)
    for (ssm::Index n = 0; n < N; ++n) A(d, n) = -T(n + 1);
  const ssm::MatrixX<T> A_by_channel = A.transpose();  // N x D: channel d's N values contiguous
  using StridedMap = Eigen::Map<const ssm::MatrixX<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const StridedMap A_view = channel_major ? StridedMap(A_by_channel.data(), D, N, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(1, N))
                                          : StridedMap(A.data(), D, N, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(D, 1));
  const ssm::Sequence<T> B_values = random_sequence<T>(1, N, 3), C_values = random_sequence<T>(1, N, 4);
  const ssm::VectorX<T> skip = ssm::VectorX<T>::Ones(D), bias = ssm::VectorX<T>::Constant(D, T(-4));
  ssm::SelectiveScanOptions<T> options;
  options.D = skip;
  options.z = z;
  options.delta_bias = bias;
  options.delta_softplus = true;
  ssm::MatrixX<T> x = ssm::MatrixX<T>::Zero(D, N);
  ssm::Sequence<T> out(1, D);
  for (auto _ : state) {
    ssm::selective_scan_into<T>(u, delta, A_view, ssm::ScanMatrix<T>::per_step(B_values),
                                ssm::ScanMatrix<T>::per_step(C_values), options, out, x);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * D * N);
}

template <class T>
void BM_MambaForward(benchmark::State& state) {
  const ssm::Index d_model = state.range(0), d_state = state.range(1), L = state.range(2);
  ThreadScope threads(state, int(state.range(3)));
  if (!threads.ok()) return;
  const ssm::Mamba<T> block(random_block<T>(d_model, d_state, 1));
  const auto u = random_sequence<T>(L, d_model, 7);
  auto s = block.initial_state();
  const std::int64_t before = allocation_count();
  for (auto _ : state) {
    s.reset();
    auto y = block.forward(u, s);
    benchmark::DoNotOptimize(y.data());
  }
  const std::int64_t allocations = allocation_count() - before;
  state.counters["allocations"] = state.iterations() ? double(allocations) / double(state.iterations()) : 0.0;
  state.SetItemsProcessed(std::int64_t(state.iterations()) * L);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * 2 * L * d_model * std::int64_t(sizeof(T)));
}

/// Steps the mamba-130m-sized block: a cold rotation of distinct blocks or one hot block
/// (ssm::bench::BlockStack). Bytes per step = one block's weights (the state, 0.1 MB, is not counted).
template <class T>
void mamba_step(benchmark::State& state, bool cold) {
  const ssm::Index d_model = state.range(0), d_state = state.range(1);
  auto& stack = ssm::bench::BlockStack<ssm::Mamba<T>>::get(
      {d_model, d_state}, cold,
      [=](std::uint64_t seed) { return ssm::Mamba<T>(random_block<T>(d_model, d_state, seed)); },
      [](const ssm::Mamba<T>& block) { return weight_bytes(block.params()); });
  ssm::bench::step_blocks(state, stack, stack.weight_bytes);
}

template <class T>
void BM_MambaStep(benchmark::State& state) {
  mamba_step<T>(state, true);
}

template <class T>
void BM_MambaStepHot(benchmark::State& state) {
  mamba_step<T>(state, false);
}

/// A randomly initialised Mamba language model (tied head), built once per shape and kept.
template <class T>
const ssm::MambaLM<T>& random_lm(ssm::Index d_model, ssm::Index n_layer, ssm::Index vocab) {
  static std::map<std::tuple<ssm::Index, ssm::Index, ssm::Index>, std::unique_ptr<ssm::MambaLM<T>>> cache;
  auto& slot = cache[{d_model, n_layer, vocab}];
  if (!slot) {
    ssm::MambaLMConfig config;
    config.d_model = d_model;
    config.n_layer = n_layer;
    config.vocab_size = vocab;
    std::vector<typename ssm::MambaLM<T>::Layer> layers;
    for (ssm::Index i = 0; i < n_layer; ++i) {
      auto params = random_block<T>(d_model, 16, std::uint64_t(i + 1));
      config.block = params.config;
      layers.push_back({ssm::VectorX<T>::Ones(d_model), ssm::Mamba<T>(std::move(params))});
    }
    ssm::MatrixX<T> embedding(vocab, d_model);
    std::uint64_t seed = 12345;
    fill_uniform(embedding, 0.02 * std::sqrt(3.0), seed);  // the reference's N(0, 0.02^2), in variance
    slot = std::make_unique<ssm::MambaLM<T>>(config, std::move(embedding), std::move(layers),
                                             ssm::VectorX<T>::Ones(d_model));
  }
  return *slot;
}

template <class T>
void BM_MambaLMTokens(benchmark::State& state) {
  ThreadScope threads(state, 1);
  const auto& lm = random_lm<T>(state.range(0), state.range(1), state.range(2));
  auto s = lm.initial_state();
  ssm::VectorX<T> logits(lm.vocab_size());
  typename ssm::MambaLM<T>::Token token = 1;
  const std::int64_t before = allocation_count();
  for (auto _ : state) {
    lm.step(token, s, logits);
    ssm::Index best = 0;
    logits.maxCoeff(&best);
    token = best;
  }
  const std::int64_t allocations = allocation_count() - before;
  state.SetItemsProcessed(std::int64_t(state.iterations()));
  state.counters["allocations"] = state.iterations() ? double(allocations) / double(state.iterations()) : 0.0;
}

/// Greedy decoding of the mamba-130m-shaped model with its large matrices in one storage format (range(3):
/// 0 full F32, 1 bf16, 2 f16, 3 q8; core/weight_matrix.hpp), one thread. bytes_per_token is everything a
/// token's step must move: every stored large matrix read once (the tied head is the embedding, read
/// whole, and the token's embedding row is part of it), the small parameters (conv, A_log, D, dt bias,
/// norms) read, and every layer's conv and SSM states read and written. report.py divides it by the step's
/// time and by the memory read bandwidth of the same run.
template <class T>
void BM_MambaLMDecodeFormat(benchmark::State& state) {
  ThreadScope threads(state, 1);
  const auto format = ssm::WeightFormat(state.range(3));
  static std::map<std::tuple<ssm::Index, ssm::Index, ssm::Index, int>, std::unique_ptr<ssm::MambaLM<T>>> cache;
  auto& slot = cache[{state.range(0), state.range(1), state.range(2), int(format)}];
  if (!slot) slot = std::make_unique<ssm::MambaLM<T>>(random_lm<T>(state.range(0), state.range(1), state.range(2)).with_weights(format));
  const ssm::MambaLM<T>& lm = *slot;
  auto s = lm.initial_state();
  ssm::VectorX<T> logits(lm.vocab_size());
  typename ssm::MambaLM<T>::Token token = 1;
  std::int64_t small = lm.norm_f().size(), states = 0;
  for (std::size_t i = 0; i < lm.layers().size(); ++i) {
    const auto& p = std::get<ssm::Mamba<T>>(lm.layers()[i].mixer).params();
    small += lm.layers()[i].norm_weight.size() + p.conv1d_weight.size() + p.conv1d_bias.size() + p.dt_proj_bias.size() +
             p.A_log.size() + p.D.size();
    const auto& ms = std::get<typename ssm::Mamba<T>::State>(s.layers[i]);
    states += ms.conv.size() + ms.ssm.size();
  }
  const double bytes = double(lm.weight_bytes()) + double(small + 2 * states) * double(sizeof(T));
  for (int warm = 0; warm < 2; ++warm) lm.step(token, s, logits);
  for (auto _ : state) {
    lm.step(token, s, logits);
    ssm::Index best = 0;
    logits.maxCoeff(&best);
    token = best;
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()));
  state.counters["bytes_per_token"] = bytes;
  state.counters["weight_bytes"] = double(lm.weight_bytes());
}

template <class T>
void BM_MambaLMBatchedTokens(benchmark::State& state) {
  ThreadScope threads(state, 1);
  const auto& lm = random_lm<T>(state.range(0), state.range(1), state.range(2));
  const ssm::Index B = state.range(3);
  std::vector<typename ssm::MambaLM<T>::State> streams(std::size_t(B), lm.initial_state());
  std::vector<typename ssm::MambaLM<T>::Token> tokens(static_cast<std::size_t>(B));
  for (ssm::Index b = 0; b < B; ++b) tokens[std::size_t(b)] = 1 + b;
  ssm::MatrixX<T> logits(B, lm.vocab_size());
  for (auto _ : state) {
    lm.step_batch(tokens, streams, logits);
    for (ssm::Index b = 0; b < B; ++b) {
      ssm::Index best = 0;
      logits.row(b).maxCoeff(&best);
      tokens[std::size_t(b)] = best;
    }
  }
  // Multiply-adds per token: every projection of every block and the head.
  double weights = double(lm.vocab_size()) * double(state.range(0));
  for (const auto& layer : lm.layers()) {
    const auto& p = std::get<ssm::Mamba<T>>(layer.mixer).params();
    weights += double(p.in_proj_weight.size() + p.x_proj_weight.size() + p.dt_proj_weight.size() + p.out_proj_weight.size());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * B);
  state.counters["flops"] = benchmark::Counter(2 * weights * double(B) * double(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

/// A field of /proc/self/status in kB ("VmRSS", "VmHWM"); -1 where there is none.
double status_kb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.compare(0, field.size() + 1, field + ":") == 0) return std::stod(line.substr(field.size() + 1));
  return -1;
}

/// Writes a reference-layout checkpoint of the given shape (F32, Mamba-1, d_state 16, expand 2) to `dir`, one
/// tensor at a time (the file is never whole in memory); returns the file's bytes.
std::int64_t write_lm_checkpoint(const std::string& dir, ssm::Index d_model, ssm::Index n_layer, ssm::Index vocab) {
  const ssm::Index di = 2 * d_model, N = 16, K = 4, R = (d_model + 15) / 16;
  std::vector<std::pair<std::string, std::vector<ssm::Index>>> tensors = {{"backbone.embedding.weight", {vocab, d_model}}};
  for (ssm::Index i = 0; i < n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    for (const auto& t : std::vector<std::pair<std::string, std::vector<ssm::Index>>>{
             {"norm.weight", {d_model}},      {"mixer.in_proj.weight", {2 * di, d_model}}, {"mixer.conv1d.weight", {di, 1, K}},
             {"mixer.conv1d.bias", {di}},     {"mixer.x_proj.weight", {R + 2 * N, di}},   {"mixer.dt_proj.weight", {di, R}},
             {"mixer.dt_proj.bias", {di}},    {"mixer.A_log", {di, N}},                   {"mixer.D", {di}},
             {"mixer.out_proj.weight", {d_model, di}}})
      tensors.push_back({p + t.first, t.second});
  }
  tensors.push_back({"backbone.norm_f.weight", {d_model}});
  nlohmann::json header = nlohmann::json::object();
  std::size_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    std::size_t n = 1;
    for (ssm::Index d : shape) n *= std::size_t(d);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(dir + "/model.safetensors", std::ios::binary);
  const std::uint64_t length = text.size();
  for (int b = 0; b < 8; ++b) out.put(char((length >> (8 * b)) & 0xff));
  out << text;
  std::uint64_t seed = 12345;
  for (const auto& [name, shape] : tensors) {
    ssm::Index n = 1;
    for (ssm::Index d : shape) n *= d;
    Eigen::Matrix<float, Eigen::Dynamic, 1> values(n);
    fill_uniform(values, name.find("A_log") != std::string::npos ? 0.5 : 0.05, seed);
    out.write(reinterpret_cast<const char*>(values.data()), std::streamsize(4 * n));
  }
  std::ofstream(dir + "/config.json") << "{\"d_model\": " << d_model << ", \"n_layer\": " << n_layer
                                      << ", \"vocab_size\": " << vocab << "}";
  return std::int64_t(8 + text.size() + offset);
}

void BM_LoadCheckpoint(benchmark::State& state) {
  ThreadScope threads(state, 1);
  const std::string dir = (std::filesystem::temp_directory_path() / "ssm_bench_load_checkpoint").string();
  std::filesystem::create_directories(dir);
  const std::int64_t bytes = write_lm_checkpoint(dir, state.range(0), state.range(1), state.range(2));
  double worst = 0;
  for (auto _ : state) {
    const bool reset = bool(std::ofstream("/proc/self/clear_refs") << "5");  // peak resident memory := now
    const double before = status_kb("VmRSS");
    {
      const auto lm = ssm::MambaLM<float>::load(dir);
      benchmark::DoNotOptimize(lm.norm_f().data());
      const double peak = status_kb("VmHWM");
      worst = reset && before >= 0 && peak >= 0 ? std::max(worst, (peak - before) * 1024.0 / double(bytes)) : -1;
    }
  }
  std::filesystem::remove_all(dir);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * bytes);
  state.counters["peak_rss_over_weights"] = worst;
}

}  // namespace

BENCHMARK(BM_LoadCheckpoint)->Args({768, 24, 50280})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_TEMPLATE(BM_SelectiveScan, float)
    ->Args({1536, 16, 2048, 1})
    ->Args({1536, 16, 2048, 2})
    ->Args({1536, 16, 256, 1})
    ->Args({256, 16, 16384, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_SelectiveScanStep, float)
    ->Args({1536, 16, 0})
    ->Args({1536, 16, 1})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaForward, float)
    ->Args({768, 16, 2048, 1})
    ->Args({768, 16, 2048, 2})
    ->Args({256, 16, 2048, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaStep, float)->Args({768, 16})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaStepHot, float)->Args({768, 16})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaLMTokens, float)->Args({256, 4, 1024})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaLMTokens, float)->Args({768, 24, 50280})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaLMDecodeFormat, float)
    ->ArgNames({"d_model", "layers", "vocab", "format"})
    ->Args({768, 24, 50280, 0})
    ->Args({768, 24, 50280, 1})
    ->Args({768, 24, 50280, 2})
    ->Args({768, 24, 50280, 3})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_MambaLMBatchedTokens, float)
    ->Args({768, 24, 50280, 1})
    ->Args({768, 24, 50280, 4})
    ->Args({768, 24, 50280, 16})
    ->Args({768, 24, 50280, 64})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
