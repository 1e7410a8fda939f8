#pragma once
/// \file lm_batch_support.hpp
/// Batched decoding (MambaLM::step_batch) against separate steps, for the Mamba-1 and Mamba-2 LM tests.

#include <gtest/gtest.h>

#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/models/mamba_lm.hpp"

#include <vector>

namespace ssm::test {

/// Five prompts of lengths 1, 5, 9, 13, 17 run through `prefill` (so the streams stand at different
/// positions), then all five stepped together 12 times with `step_batch` and, beside it, each alone with
/// `step`, both fed the same next token (the argmax of the separate step's logits). Expects the logits of
/// every stream and step to agree to 100 epsilon relative to their largest value (the products sum in
/// another order than the matrix-vector ones: a few roundings of each, carried through the layers) and
/// the argmax to agree; records the largest difference seen as the test property
/// largest_relative_difference. A third copy of each stream is stepped by `step_batch` alone (B = 1):
/// its logits must equal its row of the batch's bit for bit (a stream's result does not depend on the
/// other streams). Also checks the argument errors.
template <class T>
void expect_step_batch_matches_steps(const MambaLM<T>& lm) {
  using LM = MambaLM<T>;
  using Token = typename LM::Token;
  const Index V = lm.vocab_size(), n_steps = 12;
  const double tol = 100 * double(scalar_traits<T>::epsilon);
  std::vector<std::vector<Token>> prompts;
  for (int b = 0; b < 5; ++b) {
    std::vector<Token> p;
    for (int k = 0; k < 1 + 4 * b; ++k) p.push_back(Token((11 * k + 7 * b + 1) % V));
    prompts.push_back(p);
  }
  const std::size_t B = prompts.size();
  std::vector<typename LM::State> batch, single, alone;
  std::vector<Token> next(B);
  for (std::size_t b = 0; b < B; ++b) {
    auto state = lm.initial_state();
    const VectorX<T> logits = lm.prefill(prompts[b], state);
    batch.push_back(state);
    single.push_back(state);
    alone.push_back(state);
    Index best;
    logits.maxCoeff(&best);
    next[b] = Token(best);
  }
  MatrixX<T> batch_logits(Index(B), V);
  VectorX<T> one(V);
  MatrixX<T> alone_logits(1, V);
  double worst = 0;
  for (Index k = 0; k < n_steps; ++k) {
    lm.step_batch(next, batch, batch_logits);
    for (std::size_t b = 0; b < B; ++b) {
      lm.step(next[b], single[b], one);
      std::vector<typename LM::State> just_b{alone[b]};
      lm.step_batch({next[b]}, just_b, alone_logits);
      alone[b] = just_b[0];
      EXPECT_TRUE(alone_logits.row(0) == batch_logits.row(Index(b))) << "stream " << b << ", step " << k;
      const MatrixX<double> got = batch_logits.row(Index(b)).transpose().template cast<double>();
      const MatrixX<double> want = one.template cast<double>();
      SSM_EXPECT_NEAR_REL(got, want, tol);
      worst = std::max(worst, (got - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff());
      Index best_batch, best_single;
      batch_logits.row(Index(b)).maxCoeff(&best_batch);
      one.maxCoeff(&best_single);
      EXPECT_EQ(best_batch, best_single) << "stream " << b << ", step " << k;
      next[b] = Token(best_single);
    }
  }
  std::vector<typename LM::State> too_few(1, lm.initial_state());
  expect_error([&] { lm.step_batch(next, too_few, batch_logits); }, {"MambaLM::step_batch", "states"});
  MatrixX<T> narrow(Index(B), V - 1);
  expect_error([&] { lm.step_batch(next, batch, narrow); }, {"MambaLM::step_batch", "logits"});
  std::vector<Token> bad = next;
  bad[0] = Token(V);
  expect_error([&] { lm.step_batch(bad, batch, batch_logits); }, {"MambaLM::step_batch", "tokens"});
  ::testing::Test::RecordProperty("largest_relative_difference", ssm::detail::concat(worst));
}

}  // namespace ssm::test
