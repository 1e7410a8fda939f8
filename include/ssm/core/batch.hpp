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
/// weights read once per call); they agree with separate steps to rounding, not bit for bit, because a
/// matrix product sums in another order than a matrix-vector product.

#include "ssm/core/error.hpp"
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

/// The batched step of a mixer between two projections, shared by Mamba and Mamba-2: `projected` (B x
/// in_weight.rows()) = u in_weight^T + in_bias as one matrix product; then, per stream and in parallel over
/// them, `inner(b, projected.row(b), inner_out.row(b))` (the stream's own step between the projections);
/// then y (B x out_weight.rows()) = inner_out out_weight^T + out_bias as one product. Empty biases are none.
template <class T, class Inner>
void project_step_project(const Eigen::Ref<const Sequence<T>>& u, const MatrixX<T>& in_weight, const VectorX<T>& in_bias,
                          const MatrixX<T>& out_weight, const VectorX<T>& out_bias, const Inner& inner,
                          Eigen::Ref<Sequence<T>> y) {
  const Index B = u.rows();
  MatrixX<T> projected(B, in_weight.rows());
  projected.noalias() = u * in_weight.transpose();
  if (in_bias.size() != 0) projected.rowwise() += in_bias.transpose();
  MatrixX<T> inner_out(B, out_weight.cols());
  // Waking a team costs tens of microseconds: worth it only when the streams' inner steps are large
  // (a mixer of width w does some tens of multiply-adds per projected value).
  const bool worth_threads = B * in_weight.rows() >= 16384;
  for_each_stream(B, [&](Index b) { inner(b, projected.row(b), inner_out.row(b)); }, worth_threads);
  y.noalias() = inner_out * out_weight.transpose();
  if (out_bias.size() != 0) y.rowwise() += out_bias.transpose();
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
