// Text continuation with a Mamba-1 or Mamba-2 language model checkpoint: greedy, or sampled.
//
//   mamba_generate [--model DIR] [--weights f32|bf16|f16|q8] [--new N] [--temperature T] [--top-k K] [--top-p P]
//                  [--seed S] [token id ...]
//
// DIR holds config.json and model.safetensors (or shards and model.safetensors.index.json), in the
// reference's names (state-spaces/mamba; the mixer follows ssm_cfg.layer, "Mamba1" by default, or
// "Mamba2") or in Hugging Face's (MambaForCausalLM, Mamba2ForCausalLM, FalconMambaForCausalLM, e.g.
// state-spaces/mamba-130m-hf as downloaded). The default DIR is
// the tiny Mamba-1 model of the test suite; tests/data/mamba2_lm is its Mamba-2 counterpart. Token ids are the tokenizer's integers (this example
// does no tokenisation). Greedy unless --temperature > 0 (then a seeded draw with the top-k / top-p
// filters of ssm/models/sampling.hpp). Prints the new token ids, the prefill and decode speeds, and the
// process's resident memory after loading (Linux). --weights keeps the large matrices (projections,
// embedding, head) as F32 (the default), bfloat16, IEEE half, or int8 in blocks of 32 with a scale each
// (ssm/core/weight_matrix.hpp); a bf16 or f16 checkpoint loaded with the same format is kept as stored.
#include "ssm/models/mamba_lm.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace {

/// The golden tiny model beside this source file (tests/data/mamba_lm), unless the build says otherwise.
std::string default_model_dir() {
#ifdef SSM_EXAMPLE_MODEL_DIR
  return SSM_EXAMPLE_MODEL_DIR;
#else
  return (std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "data" / "mamba_lm").lexically_normal().string();
#endif
}

/// The process's resident memory now and at its peak, in MB, from /proc/self/status (-1 where absent).
std::pair<double, double> resident_mb() {
  double now = -1, peak = -1;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) now = std::stod(line.substr(6)) / 1024.0;
    if (line.rfind("VmHWM:", 0) == 0) peak = std::stod(line.substr(6)) / 1024.0;
  }
  return {now, peak};
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--model DIR] [--weights f32|bf16|f16|q8] [--new N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [token id ...]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = default_model_dir();
  long n_new = 16;
  std::vector<std::int64_t> prompt;
  ssm::SamplingOptions sampling;  // greedy
  std::string weights_name = "f32";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--weights" && i + 1 < argc) {
      weights_name = argv[++i];
    } else if (arg == "--new" && i + 1 < argc) {
      n_new = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--temperature" && i + 1 < argc) {
      sampling.temperature = std::strtod(argv[++i], nullptr);
    } else if (arg == "--top-k" && i + 1 < argc) {
      sampling.top_k = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--top-p" && i + 1 < argc) {
      sampling.top_p = std::strtod(argv[++i], nullptr);
    } else if (arg == "--seed" && i + 1 < argc) {
      sampling.seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "-h" || arg == "--help") {
      return usage(argv[0]);
    } else {
      char* end = nullptr;
      const long long id = std::strtoll(arg.c_str(), &end, 10);
      if (end == arg.c_str() || *end != '\0') return usage(argv[0]);
      prompt.push_back(id);
    }
  }
  if (prompt.empty()) prompt = {1, 2, 3, 4};
  if (n_new < 1) return usage(argv[0]);

  try {
    using Clock = std::chrono::steady_clock;
    const auto t_load = Clock::now();
    const ssm::WeightFormat weights = ssm::parse_weight_format(weights_name, "mamba_generate", "--weights");
    const auto lm = ssm::MambaLM<float>::load(dir, weights);
    const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
    const char* mixer = lm.config().mixer == ssm::MambaMixer::mamba2 ? "Mamba-2" : "Mamba-1";
    std::printf("model %s: %ld %s layers, d_model %ld, vocab %ld (loaded in %.3f s)\n", dir.c_str(),
                long(lm.config().n_layer), mixer, long(lm.config().d_model), long(lm.vocab_size()), load_s);
    std::printf("weights: %s, %.1f MB in the large matrices\n", weights_name.c_str(), double(lm.weight_bytes()) / 1e6);
    const auto [rss, peak_rss] = resident_mb();
    if (rss >= 0) std::printf("resident memory: %.1f MB (peak %.1f MB)\n", rss, peak_rss);

    // Prefill the prompt in one pass, then decode token by token (what generate() does, timed apart).
    ssm::Sampler sampler(sampling);  // checks the options
    auto state = lm.initial_state();
    const auto t0 = Clock::now();
    ssm::VectorX<float> logits = lm.prefill(prompt, state);  // the last position's logits
    const auto t1 = Clock::now();
    std::vector<std::int64_t> out;
    for (long k = 0; k < n_new; ++k) {
      const std::int64_t next = sampler.next(logits);
      out.push_back(next);
      if (k + 1 < n_new) lm.step(next, state, logits);  // allocation-free, into the same vector
    }
    const auto t2 = Clock::now();

    if (sampling.temperature > 0)
      std::printf("sampling: temperature %g, top-k %ld, top-p %g, seed %llu\n", sampling.temperature,
                  long(sampling.top_k), sampling.top_p, static_cast<unsigned long long>(sampling.seed));
    std::printf("prompt:");
    for (auto id : prompt) std::printf(" %lld", static_cast<long long>(id));
    std::printf("\ncontinuation:");
    for (auto id : out) std::printf(" %lld", static_cast<long long>(id));
    const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t2 - t1).count();
    std::printf("\nprefill: %zu tokens in %.3f ms (%.0f tokens/s)\n", prompt.size(), 1e3 * prefill_s,
                double(prompt.size()) / prefill_s);
    std::printf("decode: %ld tokens in %.3f ms (%.0f tokens/s)\n", n_new, 1e3 * decode_s,
                double(n_new) / decode_s);
  } catch (const ssm::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
