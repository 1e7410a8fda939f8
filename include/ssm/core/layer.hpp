#pragma once
/// \file layer.hpp
/// The one shape every layer of ssm has (S4, S4D, LRU, Mamba, Mamba-2; new layers such as the S4 block follow
/// it too), so that learning one teaches all. For a layer `X` over the real scalar `T` (float or double), with `u` an L x H
/// sequence (rows are time steps, H = `channels()`):
///
///     X::Params                 the parameters in their physical meaning; Params::cast<U>() converts them
///     X(Params)                 checks every field (ssm::error naming it) and derives the caches
///     X::initialise(..., gen)   a layer initialised as the paper / reference does, from a std::mt19937_64
///     params(), channels()      what it was made from; the width H of u and y
///     initial_state()           the zero state of one stream, sized for this layer
///     State::reset()            back to the zero state, keeping its memory
///     forward(u)                y (L x H) from the zero state
///     forward(u, state)         y from `state`, leaving the state after the last row in it, so a sequence
///                               cut into pieces gives the one-pass result (chunked prefill)
///     step(u_t, state, y_t)     one time step; allocates nothing; u_t and y_t may be strided (a row of an
///                               L x H matrix) and y_t may alias u_t
///
/// Inputs are taken as `Eigen::Ref<const ...>`: a plain matrix or a block binds without a copy, an
/// expression (`x * W`, a row-major map) is evaluated once, and an input of another scalar type is a
/// compile error (no silent conversion). The time-invariant layers (S4, S4D, LRU) also take a `Mode` in
/// `forward(u, state, mode)`: both modes give the same outputs and the same final state; `automatic`
/// picks the one measured faster for the length (see each layer's `preferred_mode`).

#include "ssm/core/types.hpp"

#include <random>
#include <type_traits>
#include <utility>

namespace ssm {

/// How a time-invariant layer runs a whole sequence. Both give the same y and final state up to rounding.
enum class Mode {
  automatic,    ///< whichever the layer measured faster for this length
  convolution,  ///< kernel spectrum x input spectrum (FFT), final state by blocked sums of powers
  recurrence,   ///< the state updated one time step after the other
};

/// Human-readable name of a mode (for messages and benchmark labels).
inline const char* mode_name(Mode m) {
  switch (m) {
    case Mode::automatic: return "automatic";
    case Mode::convolution: return "convolution";
    case Mode::recurrence: return "recurrence";
  }
  return "?";
}

namespace detail {

template <class X, class = void>
struct has_layer_surface : std::false_type {};

template <class X>
struct has_layer_surface<
    X, std::void_t<typename X::Params, typename X::State, typename X::Scalar,
                   decltype(std::declval<const typename X::Params&>().template cast<float>()),
                   decltype(std::declval<const typename X::Params&>().template cast<double>()),
                   decltype(X(std::declval<typename X::Params>())),
                   decltype(std::declval<const X&>().params()),
                   decltype(std::declval<const X&>().channels()),
                   decltype(std::declval<typename X::State&>().reset()),
                   decltype(std::declval<const X&>().forward(std::declval<const Sequence<typename X::Scalar>&>())),
                   decltype(std::declval<const X&>().forward(std::declval<const Sequence<typename X::Scalar>&>(),
                                                             std::declval<typename X::State&>())),
                   decltype(std::declval<const X&>().step(std::declval<const VectorX<typename X::Scalar>&>(),
                                                          std::declval<typename X::State&>(),
                                                          std::declval<VectorX<typename X::Scalar>&>())),
                   // step on strided rows of a sequence, in place
                   decltype(std::declval<const X&>().step(
                       std::declval<Sequence<typename X::Scalar>&>().row(0).transpose(), std::declval<typename X::State&>(),
                       std::declval<Sequence<typename X::Scalar>&>().row(0).transpose())),
                   decltype(&X::initialise)>>
    : std::bool_constant<
          std::is_same_v<decltype(std::declval<const X&>().initial_state()), typename X::State> &&
          std::is_same_v<decltype(std::declval<const X&>().forward(std::declval<const Sequence<typename X::Scalar>&>())),
                         Sequence<typename X::Scalar>> &&
          std::is_same_v<decltype(std::declval<const X&>().channels()), Index>> {};

}  // namespace detail

/// True when `X` has the whole layer surface described in this file (checked at compile time in the tests,
/// for every layer and both scalars).
template <class X>
inline constexpr bool is_layer_v = detail::has_layer_surface<X>::value;

}  // namespace ssm
