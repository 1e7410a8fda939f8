// Sampling the next token (ssm/models/sampling.hpp) and MambaLM::generate with options: the filtered
// distributions are checked on hand-made logits against values worked out here by hand, the draws
// against those distributions, and generation against step-by-step decoding with the same sampler.
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/models/mamba_lm.hpp"
#include "ssm/models/sampling.hpp"

#include <cmath>
#include <vector>

namespace ssm::test {
namespace {

template <class T>
class SamplingTest : public ::testing::Test {};
TYPED_TEST_SUITE(SamplingTest, Scalars);

/// softmax(z / tau) in long double, for the expected distributions.
std::vector<double> softmax(const std::vector<double>& z, double tau) {
  long double top = z[0], total = 0;
  for (double v : z) top = std::max<long double>(top, v);
  std::vector<long double> e(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) total += e[i] = std::exp((z[i] - top) / tau);
  std::vector<double> p(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) p[i] = double(e[i] / total);
  return p;
}

template <class T>
VectorX<T> logits_of(const std::vector<double>& z) {
  VectorX<T> v(Index(z.size()));
  for (std::size_t i = 0; i < z.size(); ++i) v(Index(i)) = T(z[i]);
  return v;
}

SamplingOptions options(double temperature, Index top_k, double top_p, std::uint64_t seed = 1) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.seed = seed;
  return o;
}

TYPED_TEST(SamplingTest, GreedyIsTheFirstArgmax) {
  using T = TypeParam;
  Sampler greedy;
  EXPECT_EQ(greedy.next(logits_of<T>({0.5, 3, -1, 3, 2})), 1);  // tie between 1 and 3: the first
  EXPECT_EQ(greedy.next(logits_of<T>({-7})), 0);
}

// Logits ln(0.5), ln(0.3), ln(0.15), ln(0.05): at temperature 1 the probabilities are exactly those.
const std::vector<double> kFour = {std::log(0.5), std::log(0.3), std::log(0.15), std::log(0.05)};

TYPED_TEST(SamplingTest, FiltersGiveTheHandWorkedDistributions) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  const auto expect_p = [&](const SamplingOptions& o, const std::vector<double>& z, const std::vector<double>& p) {
    Sampler s(o);
    const VectorX<double> got = s.probabilities(logits_of<T>(z));
    ASSERT_EQ(got.size(), Index(p.size()));
    for (std::size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(got(Index(i)), p[i], tol) << "token " << i;
  };
  expect_p(options(1, 0, 1), kFour, {0.5, 0.3, 0.15, 0.05});
  expect_p(options(1, 2, 1), kFour, {0.5 / 0.8, 0.3 / 0.8, 0, 0});                  // top-k 2
  expect_p(options(1, 0, 0.7), kFour, {0.5 / 0.8, 0.3 / 0.8, 0, 0});                // 0.5 < 0.7 <= 0.8
  expect_p(options(1, 0, 0.45), kFour, {1, 0, 0, 0});                               // 0.5 already reaches 0.45
  expect_p(options(1, 0, 0.81), kFour, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});  // 0.8 < 0.81 <= 0.95
  // top-p on the top-k distribution: top-3 is (0.5, 0.3, 0.15)/0.95; 0.5/0.95 = 0.526 < 0.6 <= 0.842.
  expect_p(options(1, 3, 0.6), kFour, {0.5 / 0.8, 0.3 / 0.8, 0, 0});
  expect_p(options(1, 99, 1), kFour, {0.5, 0.3, 0.15, 0.05});  // k beyond the vocabulary keeps all
  // Temperature 2: softmax(z / 2), the order of the tokens mixed.
  const std::vector<double> z = {1.0, -2.0, 3.5, 0.0, 3.5};
  expect_p(options(2, 0, 1), z, softmax(z, 2));
  // Top-2 with a tie at the top: tokens 2 and 4 are kept, equally likely.
  expect_p(options(0.5, 2, 1), z, {0, 0, 0.5, 0, 0.5});
}

TYPED_TEST(SamplingTest, DrawsFollowTheDistributionAndRepeatWithTheSeed) {
  using T = TypeParam;
  const VectorX<T> z = logits_of<T>(kFour);
  for (const auto& o : {options(1, 0, 1, 11), options(1, 0, 0.81, 12), options(1, 2, 1, 13)}) {
    Sampler s(o);
    const VectorX<double> p = s.probabilities(z);
    const int draws = 40000;
    std::vector<int> count(4, 0);
    for (int i = 0; i < draws; ++i) ++count[std::size_t(s.next(z))];
    for (Index i = 0; i < 4; ++i) {
      const double expected = p(i) * draws, sigma = std::sqrt(draws * p(i) * (1 - p(i)));
      if (p(i) == 0) EXPECT_EQ(count[std::size_t(i)], 0) << "token " << i << " was filtered out";
      else EXPECT_NEAR(count[std::size_t(i)], expected, 5 * sigma + 1) << "token " << i;
    }
  }
  // The same seed gives the same tokens; another seed other tokens.
  Sampler a(options(1.3, 0, 1, 5)), b(options(1.3, 0, 1, 5)), c(options(1.3, 0, 1, 6));
  const VectorX<T> wide = logits_of<T>({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8});
  std::vector<Sampler::Token> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.next(wide));
    tb.push_back(b.next(wide));
    tc.push_back(c.next(wide));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampling, BadOptionsAndLogitsAreNamed) {
  expect_error([] { Sampler s(options(-1, 0, 1)); }, {"sampling.temperature", "-1"});
  expect_error([] { Sampler s(options(std::nan(""), 0, 1)); }, {"sampling.temperature"});
  expect_error([] { Sampler s(options(1, -2, 1)); }, {"sampling.top_k", "-2"});
  expect_error([] { Sampler s(options(1, 0, 0)); }, {"sampling.top_p", "(0, 1]"});
  expect_error([] { Sampler s(options(1, 0, 1.5)); }, {"sampling.top_p", "1.5"});
  Sampler s(options(1, 0, 1));
  expect_error([&] { s.next(VectorX<float>(0)); }, {"logits", "at least one"});
  VectorX<double> bad = VectorX<double>::Zero(3);
  bad(1) = std::nan("");
  expect_error([&] { s.next(bad); }, {"logits", "NaN"});
  Sampler greedy;
  expect_error([&] { greedy.probabilities(bad); }, {"temperature"});
}

const std::string kLM = data_path("mamba_lm");

std::vector<std::int64_t> prompt_ids() { return golden("mamba_lm", "input_ids").values<std::int64_t>(); }

// generate with a sampler is prefill + (draw, step) with that sampler: replayed here by hand.
TYPED_TEST(SamplingTest, GenerateDrawsWithTheSamplerStepByStep) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kLM);
  GenerationOptions o;
  o.sampling = options(0.9, 20, 0.9, 42);
  const auto generated = lm.generate(prompt_ids(), 12, o);
  ASSERT_EQ(generated.size(), 12u);
  Sampler replay(o.sampling);
  auto state = lm.initial_state();
  VectorX<T> logits = lm.prefill(prompt_ids(), state);
  for (std::size_t k = 0; k < generated.size(); ++k) {
    const auto token = replay.next(logits);
    EXPECT_EQ(token, generated[k]) << "token " << k;
    lm.step(token, state, logits);
  }
  EXPECT_EQ(lm.generate(prompt_ids(), 12, o), generated);  // seeded: the same again
  // Default options are greedy: the golden continuation.
  const auto golden_tokens = golden("mamba_lm", "generated").values<std::int64_t>();
  EXPECT_EQ(lm.generate(prompt_ids(), Index(golden_tokens.size()), GenerationOptions{}), golden_tokens);
}

TYPED_TEST(SamplingTest, StopTokensAndTheCallbackEndGeneration) {
  using T = TypeParam;
  const auto lm = MambaLM<T>::load(kLM);
  const auto greedy = lm.generate(prompt_ids(), 8);
  ASSERT_EQ(greedy.size(), 8u);
  // A stop token ends generation after it is emitted (the first occurrence of greedy[3] in greedy).
  GenerationOptions o;
  o.stop_tokens = {greedy[3], 100000};
  const std::size_t first = std::size_t(std::find(greedy.begin(), greedy.end(), greedy[3]) - greedy.begin());
  EXPECT_EQ(lm.generate(prompt_ids(), 8, o), std::vector<std::int64_t>(greedy.begin(), greedy.begin() + first + 1));
  // The callback sees every token in order, and returning false stops after that token.
  std::vector<std::int64_t> seen;
  const auto out = lm.generate(prompt_ids(), 8, GenerationOptions{}, [&](std::int64_t t) {
    seen.push_back(t);
    return seen.size() < 5;
  });
  EXPECT_EQ(out, std::vector<std::int64_t>(greedy.begin(), greedy.begin() + 5));
  EXPECT_EQ(seen, out);
  GenerationOptions bad;
  bad.sampling.top_p = 2;
  expect_error([&] { lm.generate(prompt_ids(), 3, bad); }, {"MambaLM::generate", "sampling.top_p"});
}

}  // namespace
}  // namespace ssm::test
