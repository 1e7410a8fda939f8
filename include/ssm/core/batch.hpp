#pragma once
/// \file batch.hpp
/// Many streams through one layer: B sequences of their own lengths in one forward call, and B streams,
/// each at its own position, advanced one step in one call. Works for every layer of the concept
/// (core/layer.hpp: S4, S4D, LRU, S4 block, Mamba, Mamba-2).
///
/// Representation: a ragged list, `std::vector<Sequence<T>>` with sequence b of shape L_b x H, and one
/// `State` per stream. Why not one packed (sum L_b) x H matrix with offsets: each stream's rows must
/// reach the layer as one contiguous L_b x H block anyway (an `Eigen::Ref` binds `packed.middleRows(o, L_b)`
/// without a copy, so a caller holding a packed matrix loses nothing by passing such blocks), and a list
/// keeps each output the size of its input with no offset arithmetic for the caller. For the step, the B
/// streams' inputs are the rows of one B x H matrix and the outputs the rows of another, which is what a
/// server gathers per tick.
///
/// Every stream runs exactly the arithmetic of a separate call (`layer.forward(u_b, state_b)`,
/// `layer.step(u_b, state_b, y_b)`), so the results are bit-identical to B separate calls. Parallelism:
/// with at least as many streams as threads the streams are spread over the threads (each layer call then
/// runs on its thread alone); with fewer streams they run one after the other and each call uses the
/// layer's own parallelism over channels.
///
/// Decoding many streams of a language model is another matter: there each step reads every weight once
/// per stream, so B separate steps read them B times. `Mamba::step_batch`, `Mamba2::step_batch` and
/// `MambaLM::step_batch` make the large projections one matrix product over the B streams instead (the
/// weights read once per call: core/weight_matrix.hpp's multiply_streams); they agree with separate steps to
/// rounding, not bit for bit, because that product sums in another order than `step`'s matrix-vector
/// products. Each stream's result does not depend on the other streams of the batch.

#include "ssm/core/error.hpp"
#include "ssm/core/weight_matrix.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/types.hpp"

#include <vector>

namespace ssm {

namespace detail {

/// Runs body(b) for b in [0, B): over the threads when B >= the available threads (and B > 1) and
/// `worth_threads`, else in order. The first exception any body throws is rethrown on the calling thread.
template <class Body>
void for_each_stream(Index B, const Body& body, bool worth_threads = true) {
  const int threads = available_threads();
  const int team = team_size(worth_threads && B >= threads, B);
  RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic) num_threads(team) if (team > 1)
#endif
  for (Index b = 0; b < B; ++b) errors.run([&] { body(b); });
  errors.rethrow();
}

/// The batched step of a mixer between two projections, shared by Mamba and Mamba-2. Checks that each of
/// the B pointers in `states` is set and passes `check_state(*states[b])`; then `projected` (B x
/// in_proj.rows()) = u in_proj^T + in_bias as one product over the streams; then, per stream and in
/// parallel over them, the stream's own step between the projections: its scratch `(*states[b]).*scratch`
/// gets row b of `projected`, `inner(*states[b])` runs, and row b of `inner_out` gets the state's `y`;
/// then y (B x out_proj.rows()) = inner_out out_proj^T + out_bias as one product. Empty biases are none.
/// y may alias u (u is read completely by the first product).
template <class T, class State, class CheckState, class Inner>
void project_step_project(const char* where, const Eigen::Ref<const Sequence<T>>& u, State* const* states,
                          const CheckState& check_state, const WeightMatrix<T>& in_proj, const VectorX<T>& in_bias,
                          VectorX<T> State::*scratch, const Inner& inner, const WeightMatrix<T>& out_proj,
                          const VectorX<T>& out_bias, Eigen::Ref<Sequence<T>> y) {
  const Index B = u.rows();
  check(states != nullptr || B == 0, where, "states", "B pointers to states", "null");
  for (Index b = 0; b < B; ++b) {
    if (states[b] == nullptr) check(false, where, "states", "B pointers to states", detail::concat("null at ", b));
    check_state(*states[b]);
  }
  // Row-major, so that each stream's row is contiguous for its own step.
  RowMatrixX<T> projected(B, in_proj.rows());
  in_proj.multiply_streams(u, projected, in_bias);
  RowMatrixX<T> inner_out(B, out_proj.cols());
  // Waking a team costs tens of microseconds: worth it only when the streams' inner steps are large
  // (a mixer of width w does some tens of multiply-adds per projected value).
  const bool worth_threads = B * in_proj.rows() >= 16384;
  for_each_stream(B, [&](Index b) {
    State& s = *states[b];
    s.*scratch = projected.row(b).transpose();
    inner(s);
    inner_out.row(b) = s.y.transpose();
  }, worth_threads);
  out_proj.multiply_streams(inner_out, y, out_bias);
}

}  // namespace detail

/// `outputs[b] = layer.forward(inputs[b], states[b])` for every stream b, leaving each stream's final
/// state in `states[b]`. inputs[b]: L_b x H (lengths may differ, L_b >= 0 as the layer allows); states: one
/// per input, each from `layer.initial_state()` or a previous call. Returns the B outputs.
/// \throws ssm::error when the counts differ, or what the layer throws for a stream (the first one).
template <class Layer>
std::vector<Sequence<typename Layer::Scalar>> forward_batch(const Layer& layer,
                                                            const std::vector<Sequence<typename Layer::Scalar>>& inputs,
                                                            std::vector<typename Layer::State>& states) {
  check(states.size() == inputs.size(), "forward_batch", "states", detail::concat(inputs.size(), " (one per input)"),
        detail::concat(states.size()));
  std::vector<Sequence<typename Layer::Scalar>> outputs(inputs.size());
  detail::for_each_stream(Index(inputs.size()), [&](Index b) {
    const std::size_t i = std::size_t(b);
    outputs[i] = layer.forward(inputs[i], states[i]);
  });
  return outputs;
}

/// One step of B streams: row b of `y` = `layer.step(row b of u, states[b])`. u: B x H (one row per
/// stream, B = states.size()); y: B x (the layer's output width), resized if needed. Each stream may be at
/// a different position; its state advances by one. Allocates nothing when `y` already has its shape.
/// \throws ssm::error when u has not one row per state, or what the layer throws for a stream.
template <class Layer>
void step_batch(const Layer& layer, const Eigen::Ref<const Sequence<typename Layer::Scalar>>& u,
                std::vector<typename Layer::State>& states, Sequence<typename Layer::Scalar>& y) {
  const Index B = Index(states.size());
  check(u.rows() == B, "step_batch", "u", detail::concat(B, " rows (one per state)"), detail::concat(u.rows(), " rows"));
  if (y.rows() != B || y.cols() != layer.channels()) y.resize(B, layer.channels());
  detail::for_each_stream(B, [&](Index b) { layer.step(u.row(b).transpose(), states[std::size_t(b)], y.row(b).transpose()); });
}

}  // namespace ssm
