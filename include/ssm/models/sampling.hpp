#pragma once
/// \file sampling.hpp
/// Choosing the next token from a language model's logits: greedy, or a seeded draw with temperature,
/// top-k and top-p (nucleus) filters, in the order and meaning of Hugging Face's generation
/// (TemperatureLogitsWarper, then TopKLogitsWarper, then TopPLogitsWarper).
///
/// For logits z (vocab values) and options (temperature tau, top_k k, top_p p):
///   - tau = 0: greedy, the index of max z (the first on a tie); k and p are not used.
///   - tau > 0: probabilities q_i = softmax(z / tau)_i, computed in double as exp(z_i/tau - max z/tau) / sum;
///     top-k keeps the k tokens of largest z (ties at the boundary: the smaller index first; k = 0 keeps
///     all); top-p then keeps, in order of decreasing q, the shortest prefix of the kept tokens whose
///     probability (of the top-k distribution, renormalised) sums to >= p (at least one token; p = 1 keeps
///     all). The kept probabilities are renormalised and one token is drawn: u = 53 random bits / 2^53
///     from a std::mt19937_64 seeded with `seed`, and the token is the first, in the order of decreasing
///     q, whose cumulative probability exceeds u. The same seed gives the same tokens on every platform
///     (no std:: distribution, whose algorithms are implementation-defined, is used).
///
/// `Sampler` keeps its generator and scratch: after the first call at a vocabulary size it allocates
/// nothing. One per stream (it is not thread-safe: the generator advances).

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace ssm {

/// How the next token is chosen (see the file comment).
struct SamplingOptions {
  double temperature = 0;  ///< 0: greedy; > 0: draw from softmax(logits / temperature).
  Index top_k = 0;         ///< Keep the k most likely tokens before drawing; 0 keeps all.
  double top_p = 1;        ///< Keep the smallest most-likely set whose probability is >= top_p; in (0, 1].
  std::uint64_t seed = 0;  ///< Seed of the draw (std::mt19937_64).

  /// Checks every field, naming the first bad one in an ssm::error from `where`.
  void validate(const char* where) const {
    check(std::isfinite(temperature) && temperature >= 0, where, "sampling.temperature", "a finite value >= 0",
          detail::concat(temperature));
    check(top_k >= 0, where, "sampling.top_k", "a count >= 0 (0: all tokens)", detail::concat(top_k));
    check(top_p > 0 && top_p <= 1, where, "sampling.top_p", "a value in (0, 1]", detail::concat(top_p));
  }
};

/// Draws tokens from logits under `SamplingOptions` (see the file comment).
class Sampler {
 public:
  using Token = std::int64_t;

  explicit Sampler(const SamplingOptions& options = {}) : options_(options), generator_(options.seed) {
    options_.validate("Sampler");
  }

  const SamplingOptions& options() const { return options_; }

  /// The next token for `logits` (vocab >= 1 finite values, float or double).
  template <class Derived>
  Token next(const Eigen::MatrixBase<Derived>& logits) {
    constexpr const char* where = "Sampler::next";
    check(logits.size() >= 1, where, "logits", "at least one value", "none");
    check(logits.allFinite(), where, "logits", "finite values", "a NaN or infinity");
    if (options_.temperature == 0) {
      Index best = 0;
      logits.maxCoeff(&best);  // the first maximum
      return Token(best);
    }
    distribution(logits);
    const double u = double(generator_() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    double cumulative = 0;
    for (std::size_t r = 0; r < kept_; ++r) {
      cumulative += probability_[r];
      if (u < cumulative) return Token(order_[r]);
    }
    return Token(order_[kept_ - 1]);  // u within rounding of 1
  }

  /// The distribution a draw for `logits` comes from (temperature > 0): p (vocab) with the filtered-out
  /// tokens at 0 and the kept ones summing to 1. For inspection and tests; does not advance the generator.
  template <class Derived>
  VectorX<double> probabilities(const Eigen::MatrixBase<Derived>& logits) {
    constexpr const char* where = "Sampler::probabilities";
    check(options_.temperature > 0, where, "sampling.temperature", "> 0 (greedy has no distribution)", "0");
    check(logits.size() >= 1 && logits.allFinite(), where, "logits", "at least one value, all finite",
          detail::concat(logits.size(), " values, not all finite"));
    distribution(logits);
    VectorX<double> p = VectorX<double>::Zero(logits.size());
    for (std::size_t r = 0; r < kept_; ++r) p(order_[r]) = probability_[r];
    return p;
  }

 private:
  /// Fills order_[0, kept_) with the kept tokens by decreasing probability and probability_ with their
  /// renormalised probabilities.
  template <class Derived>
  void distribution(const Eigen::MatrixBase<Derived>& logits) {
    const std::size_t vocab = std::size_t(logits.size());
    order_.resize(vocab);
    probability_.resize(vocab);
    std::iota(order_.begin(), order_.end(), Index(0));
    // Decreasing logit, the smaller index first on a tie: the order of the probabilities too.
    const auto before = [&](Index a, Index b) { return logits(a) > logits(b) || (logits(a) == logits(b) && a < b); };
    std::size_t kept = vocab;
    if (options_.top_k > 0 && std::size_t(options_.top_k) < vocab) {
      kept = std::size_t(options_.top_k);
      std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(kept), order_.end(), before);
    } else {
      std::sort(order_.begin(), order_.end(), before);
    }
    const double inverse_temperature = 1.0 / options_.temperature;
    const double top = double(logits(order_[0])) * inverse_temperature;
    double total = 0;
    for (std::size_t r = 0; r < kept; ++r) {
      probability_[r] = std::exp(double(logits(order_[r])) * inverse_temperature - top);
      total += probability_[r];
    }
    if (options_.top_p < 1) {
      double cumulative = 0;
      std::size_t r = 0;
      while (r < kept) {
        cumulative += probability_[r] / total;
        ++r;
        if (cumulative >= options_.top_p) break;
      }
      kept = r;
      total = std::accumulate(probability_.begin(), probability_.begin() + std::ptrdiff_t(kept), 0.0);
    }
    for (std::size_t r = 0; r < kept; ++r) probability_[r] /= total;
    kept_ = kept;
  }

  SamplingOptions options_;
  std::mt19937_64 generator_;
  std::vector<Index> order_;         ///< token ids, most probable first (the first kept_ are kept)
  std::vector<double> probability_;  ///< their probabilities
  std::size_t kept_ = 0;
};

/// What a language model's `generate` does besides its prompt and length.
struct GenerationOptions {
  SamplingOptions sampling;               ///< Greedy unless sampling.temperature > 0.
  std::vector<std::int64_t> stop_tokens;  ///< Generation ends after any of these is emitted (it is returned).
};

}  // namespace ssm
