// Batched decoding: N prompts decoded together with MambaLM::step_batch (one matrix product per projection
// for all streams), against the same N prompts decoded one at a time with MambaLM::step.
//
//   mamba_batch [--model DIR] [--streams N] [--new K]
//
// DIR holds model.safetensors and config.json in the reference's names (Mamba-1 or Mamba-2; the default is
// the tiny model of the test suite, too small for the batch to pay much: use a real checkpoint such as
// mamba-130m for representative figures, or bench_mamba's BM_MambaLMBatchedTokens). The prompts are
// synthetic token ids of different lengths, so the streams stand at different positions. Both runs are
// greedy; the example prints the aggregate tokens/s of each and how many of the N x K tokens agree (the
// batched products round differently from the matrix-vector ones, so a near-tie may in principle flip).
#include "ssm/models/mamba_lm.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

/// The golden tiny model beside this source file (tests/data/mamba_lm).
std::string default_model_dir() {
  return (std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "data" / "mamba_lm").lexically_normal().string();
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--model DIR] [--streams N] [--new K]\n", argv0);
  return 2;
}

template <class V>
std::int64_t argmax(const V& logits) {
  Eigen::Index best = 0;
  logits.maxCoeff(&best);
  return std::int64_t(best);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = default_model_dir();
  long streams = 16, n_new = 32;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) dir = argv[++i];
    else if (arg == "--streams" && i + 1 < argc) streams = std::strtol(argv[++i], nullptr, 10);
    else if (arg == "--new" && i + 1 < argc) n_new = std::strtol(argv[++i], nullptr, 10);
    else return usage(argv[0]);
  }
  if (streams < 1 || n_new < 1) return usage(argv[0]);

  try {
    using Clock = std::chrono::steady_clock;
    using LM = ssm::MambaLM<float>;
    const auto lm = LM::load(dir);
    const std::size_t N = std::size_t(streams);
    std::printf("model %s: %ld layers, d_model %ld, vocab %ld; %ld streams, %ld new tokens each\n", dir.c_str(),
                long(lm.config().n_layer), long(lm.config().d_model), long(lm.vocab_size()), streams, n_new);

    // N prompts of lengths 3, 4, 5, ... with ids spread over the vocabulary; prefilled once, each state
    // then copied for the two runs.
    std::vector<LM::State> prefilled;
    std::vector<std::int64_t> first;
    for (std::size_t b = 0; b < N; ++b) {
      std::vector<std::int64_t> prompt;
      for (std::size_t k = 0; k < 3 + b % 8; ++k) prompt.push_back(std::int64_t((17 * k + 29 * b + 1) % std::size_t(lm.vocab_size())));
      LM::State state = lm.initial_state();
      first.push_back(argmax(lm.prefill(prompt, state)));
      prefilled.push_back(std::move(state));
    }

    // One at a time: each stream decoded to the end before the next.
    std::vector<std::vector<std::int64_t>> alone(N);
    ssm::VectorX<float> logits(lm.vocab_size());
    const auto t0 = Clock::now();
    for (std::size_t b = 0; b < N; ++b) {
      LM::State state = prefilled[b];
      std::int64_t token = first[b];
      for (long k = 0; k < n_new; ++k) {
        alone[b].push_back(token);
        if (k + 1 < n_new) {
          lm.step(token, state, logits);
          token = argmax(logits);
        }
      }
    }
    const double alone_s = std::chrono::duration<double>(Clock::now() - t0).count();

    // Together: one step_batch per position for all N streams.
    std::vector<std::vector<std::int64_t>> together(N);
    std::vector<LM::State> states = prefilled;
    std::vector<std::int64_t> tokens = first;
    ssm::MatrixX<float> batch_logits(streams, lm.vocab_size());
    const auto t1 = Clock::now();
    for (long k = 0; k < n_new; ++k) {
      for (std::size_t b = 0; b < N; ++b) together[b].push_back(tokens[b]);
      if (k + 1 < n_new) {
        lm.step_batch(tokens, states, batch_logits);
        for (std::size_t b = 0; b < N; ++b) tokens[b] = argmax(batch_logits.row(Eigen::Index(b)));
      }
    }
    const double together_s = std::chrono::duration<double>(Clock::now() - t1).count();

    long agree = 0;
    for (std::size_t b = 0; b < N; ++b)
      for (long k = 0; k < n_new; ++k) agree += alone[b][std::size_t(k)] == together[b][std::size_t(k)];
    const double tokens_decoded = double(streams) * double(n_new - 1);  // the steps each run timed
    std::printf("stream 0: ");
    for (auto id : together[0]) std::printf(" %lld", static_cast<long long>(id));
    std::printf("\none at a time: %.0f tokens/s (%.3f s)\n", tokens_decoded / alone_s, alone_s);
    std::printf("batched:       %.0f tokens/s (%.3f s), %.2fx\n", tokens_decoded / together_s, together_s,
                alone_s / together_s);
    std::printf("tokens that agree: %ld of %ld\n", agree, streams * n_new);
  } catch (const ssm::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
