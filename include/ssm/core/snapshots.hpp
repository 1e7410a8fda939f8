#pragma once
/// \file snapshots.hpp
/// Prefix caching: a forward pass that also keeps the stream's state at chosen positions, so that a later
/// request sharing the first p samples resumes from position p without recomputing them.
///
///   auto run = ssm::forward_with_snapshots(layer, u, state, {128, 512});   // u: L x H, state advanced
///   // run.y (L x H) as layer.forward(u, state); run.states[i] is the state after positions[i] samples:
///   auto resumed = run.states[0];                                           // a copy forks the stream
///   layer.forward(other_suffix, resumed);                                   // continues after u[0, 128)
///
/// It runs `layer.forward(u.middleRows(a, b - a), state)` piece by piece between the positions, which every
/// layer continues exactly (the layer concept, core/layer.hpp): the outputs equal one pass over u to
/// rounding (the convolution mode's FFT sizes follow the pieces), and each snapshot is the state a pass over
/// that prefix leaves. Snapshots are States, so io::save_state stores them (ssm/io/state_io.hpp).

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <vector>

namespace ssm {

/// The outputs of a forward pass and the states after chosen prefixes of it.
template <class Layer>
struct SnapshotRun {
  Sequence<typename Layer::Scalar> y;            ///< L x (the layer's output width), the outputs
  std::vector<typename Layer::State> states;     ///< states[i]: after positions[i] samples
};

/// `layer.forward(u, state)` (leaving the final state in `state`) with a copy of the state after each of
/// `positions` (increasing, each in [0, L]). \throws ssm::error on positions out of order or range.
template <class Layer>
SnapshotRun<Layer> forward_with_snapshots(const Layer& layer,
                                          const Eigen::Ref<const Sequence<typename Layer::Scalar>>& u,
                                          typename Layer::State& state, const std::vector<Index>& positions) {
  constexpr const char* where = "forward_with_snapshots";
  const Index L = u.rows();
  Index previous = 0;
  for (std::size_t i = 0; i < positions.size(); ++i) {
    check(positions[i] >= previous && positions[i] <= L, where, "positions",
          detail::concat("increasing positions in [0, ", L, "] (L)"),
          detail::concat("positions[", i, "] = ", positions[i], " after ", previous));
    previous = positions[i];
  }
  SnapshotRun<Layer> run;
  run.states.reserve(positions.size());
  Index done = 0;
  const auto advance_to = [&](Index end) {
    if (end <= done) return;
    const Sequence<typename Layer::Scalar> piece = layer.forward(u.middleRows(done, end - done), state);
    if (run.y.size() == 0) run.y.resize(L, piece.cols());  // a layer's output width may differ from its input's
    run.y.middleRows(done, end - done) = piece;
    done = end;
  };
  for (Index p : positions) {
    advance_to(p);
    run.states.push_back(state);
  }
  advance_to(L);
  return run;
}

}  // namespace ssm
