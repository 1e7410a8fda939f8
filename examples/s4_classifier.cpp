// Sequence classification with the S4Model of the official state-spaces/s4 example.py, two ways.
//
//   s4_classifier [--model DIR] [--input FILE.npy] [--double]
//
// DIR holds model.safetensors (example.py's state_dict names) and config.json; the default DIR is the tiny
// golden model of the test suite (tests/data/s4model_example; tests/data/s4model_example_prenorm is its
// prenorm twin). The input is a .npy array of (L, d_input), (L) when d_input is 1, or (batch, L, d_input)
// for several sequences; the default is DIR/x.npy. Every sequence is classified by convolution (forward, the
// whole sequence at once) and by streaming (one sample at a time through every layer's recurrent step, the
// mean pooling kept as a running sum); the program prints both logit vectors, their largest difference, the
// predicted class and the streaming latency per sample. Computes in float unless --double.
#include "ssm/io/npy.hpp"
#include "ssm/models/s4_model.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

/// The golden tiny model beside this source file (tests/data/s4model_example), unless the build says otherwise.
std::string default_model_dir() {
#ifdef SSM_EXAMPLE_S4MODEL_DIR
  return SSM_EXAMPLE_S4MODEL_DIR;
#else
  return (std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "data" / "s4model_example")
      .lexically_normal()
      .string();
#endif
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--model DIR] [--input FILE.npy] [--double]\n", argv0);
  return 2;
}

/// The sequences of an input array as L x d_input matrices (one per batch entry).
template <class T>
std::vector<ssm::MatrixX<T>> sequences(const ssm::io::NpyArray& a, ssm::Index d_input) {
  using ssm::Index;
  const std::vector<T> flat = a.values<T>();
  Index batch = 1, L = 0, d = 1;
  if (a.shape.size() == 1) {
    L = a.shape[0];
  } else if (a.shape.size() == 2) {
    L = a.shape[0], d = a.shape[1];
  } else if (a.shape.size() == 3) {
    batch = a.shape[0], L = a.shape[1], d = a.shape[2];
  } else {
    throw ssm::error(ssm::detail::concat("s4_classifier: ", a.source, ": expected a (L), (L, d_input) or (batch, L, ",
                                         "d_input) array, got ", a.shape.size(), " dimensions"));
  }
  if (d != d_input || L < 1)
    throw ssm::error(ssm::detail::concat("s4_classifier: ", a.source, ": expected L >= 1 samples of d_input = ", d_input,
                                         " features, got L = ", L, " of ", d));
  std::vector<ssm::MatrixX<T>> out;
  for (Index b = 0; b < batch; ++b)
    out.push_back(Eigen::Map<const ssm::RowMatrixX<T>>(flat.data() + b * L * d, L, d));
  return out;
}

void print_vector(const char* label, const ssm::VectorX<double>& v) {
  std::printf("  %-10s", label);
  for (Eigen::Index i = 0; i < v.size(); ++i) std::printf(" %9.5f", v(i));
  std::printf("\n");
}

template <class T>
int run(const std::string& dir, const std::string& input) {
  using Clock = std::chrono::steady_clock;
  const auto t_load = Clock::now();
  const auto model = ssm::S4Model<T>::load(dir);
  const double load_ms = 1e3 * std::chrono::duration<double>(Clock::now() - t_load).count();
  const ssm::S4ModelConfig& c = model.config();
  std::printf("model %s: %ld S4D layers (%s), d_model %ld, d_state %ld, d_input %ld, %ld classes, %s (loaded in %.2f ms)\n",
              dir.c_str(), long(c.n_layers), c.prenorm ? "prenorm" : "postnorm", long(c.d_model), long(c.d_state),
              long(c.d_input), long(c.d_output), sizeof(T) == 4 ? "float" : "double", load_ms);

  const auto xs = sequences<T>(ssm::io::read_npy(input), c.d_input);
  std::printf("input %s: %zu sequence(s) of %ld samples\n", input.c_str(), xs.size(), long(xs[0].rows()));
  auto state = model.initial_state();  // reused across sequences: reset() keeps the memory
  for (std::size_t b = 0; b < xs.size(); ++b) {
    const ssm::MatrixX<T>& x = xs[b];
    const auto t0 = Clock::now();
    const ssm::VectorX<T> conv = model.forward(x);
    const double conv_us = 1e6 * std::chrono::duration<double>(Clock::now() - t0).count();

    state.reset();
    std::vector<double> step_us(std::size_t(x.rows()));
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const auto s0 = Clock::now();
      model.step(x.row(t).transpose(), state);  // allocation-free
      step_us[std::size_t(t)] = 1e6 * std::chrono::duration<double>(Clock::now() - s0).count();
    }
    const ssm::VectorX<T> streamed = model.logits(state);

    Eigen::Index predicted = 0, predicted_streamed = 0;
    conv.maxCoeff(&predicted);
    streamed.maxCoeff(&predicted_streamed);
    std::vector<double> sorted = step_us;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (double v : step_us) mean += v / double(step_us.size());
    std::printf("sequence %zu:\n", b);
    print_vector("conv", conv.template cast<double>());
    print_vector("streaming", streamed.template cast<double>());
    std::printf("  max |conv - streaming| = %.3g; predicted class %ld (streaming: %ld)\n",
                (conv - streamed).cwiseAbs().maxCoeff() * 1.0, long(predicted), long(predicted_streamed));
    std::printf("  convolution %.1f us for %ld samples%s; streaming per sample: mean %.2f us, median %.2f us, max %.2f us\n",
                conv_us, long(x.rows()), b == 0 ? " (the first call also plans its FFTs)" : "", mean,
                sorted[sorted.size() / 2], sorted.back());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = default_model_dir(), input;
  bool use_double = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--input" && i + 1 < argc) {
      input = argv[++i];
    } else if (arg == "--double") {
      use_double = true;
    } else {
      return usage(argv[0]);
    }
  }
  if (input.empty()) input = dir + "/x.npy";
  try {
    return use_double ? run<double>(dir, input) : run<float>(dir, input);
  } catch (const ssm::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
