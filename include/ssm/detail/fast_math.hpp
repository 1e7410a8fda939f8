#pragma once
/// \file fast_math.hpp
/// The selective scan's element-wise math, written branch-free so that loops of it vectorise with
/// whatever instruction set the enclosing function is compiled for: exp (`fast_exp`, on scalars and
/// on GCC / Clang generic vectors), log1p of a non-negative float, softplus, and the two per-channel
/// loops along time (softplus of the step sizes, skip and gate of the outputs).
///
/// Accuracy (checked in tests/test_selective_scan.cpp against the standard library): exp < 3 ulp,
/// softplus and log1p < 4 ulp; overflow gives +inf, underflow 0, NaN stays NaN.

#include "ssm/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__GNUC__) || defined(__clang__)
#define SSM_SCAN_INLINE inline __attribute__((always_inline))
#define SSM_SCAN_LAMBDA_INLINE __attribute__((always_inline))
#define SSM_RESTRICT __restrict__
#else
#define SSM_SCAN_INLINE inline
#define SSM_SCAN_LAMBDA_INLINE
#define SSM_RESTRICT
#endif

namespace ssm::detail {

/// Bits of a float or double as the same-sized unsigned integer, and back (memcpy: no aliasing
/// questions, and the compiler turns it into a register move that vectorises). Unsigned, so that the
/// exponent arithmetic below (a negative power of two shifted into place) wraps as defined.
template <class Scalar>
using bits_t = std::conditional_t<std::is_same_v<Scalar, float>, std::uint32_t, std::uint64_t>;

template <class Scalar>
SSM_SCAN_INLINE bits_t<Scalar> to_bits(Scalar v) {
  bits_t<Scalar> b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

template <class Scalar>
SSM_SCAN_INLINE Scalar from_bits(bits_t<Scalar> b) {
  Scalar v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

/// p = exp(r) for the reduced argument |r| <= ln 2 / 2, on a scalar or a generic vector V of Scalar
/// (the same operations lane by lane): the Cephes polynomial (float, degree 7, ~1 ulp) or the Taylor
/// series to degree 13 (double, < 1 ulp of truncation). By reference, so that no vector is passed by
/// value.
template <class Scalar, class V>
SSM_SCAN_INLINE void exp_of_reduced(const V& r, V& p) {
  if constexpr (std::is_same_v<Scalar, float>) {
    const V z = r * r;
    p = ((((((Scalar(1.9875691500E-4) * r + Scalar(1.3981999507E-3)) * r + Scalar(8.3334519073E-3)) * r +
            Scalar(4.1665795894E-2)) * r + Scalar(1.6666665459E-1)) * r + Scalar(5.0000001201E-1)) * z + r) + Scalar(1);
  } else {
    p = Scalar(1.0 / 6227020800.0) * r + Scalar(1.0 / 479001600.0);  // 1/13!, 1/12!
    p = p * r + Scalar(1.0 / 39916800.0);
    p = p * r + Scalar(1.0 / 3628800.0);
    p = p * r + Scalar(1.0 / 362880.0);
    p = p * r + Scalar(1.0 / 40320.0);
    p = p * r + Scalar(1.0 / 5040.0);
    p = p * r + Scalar(1.0 / 720.0);
    p = p * r + Scalar(1.0 / 120.0);
    p = p * r + Scalar(1.0 / 24.0);
    p = p * r + Scalar(1.0 / 6.0);
    p = p * r + Scalar(0.5);
    p = (p * r) * r + r + Scalar(1);
  }
}

/// exp(v), branch-free so that loops of it vectorise with whatever instruction set the enclosing
/// function is compiled for (the scan's cost is one exp per channel x state x step).
/// v = n ln 2 + r with |r| <= ln 2 / 2 (n by the round-to-nearest "magic number" addition, which
/// also leaves n in the low bits); exp(r) by `exp_of_reduced`; 2^n added to the exponent bits.
/// Overflow gives +inf, underflow below the smallest normal gives 0, NaN stays NaN.
template <class Scalar>
SSM_SCAN_INLINE Scalar fast_exp(Scalar v) {
  using I = bits_t<Scalar>;
  constexpr bool single = std::is_same_v<Scalar, float>;
  constexpr Scalar hi = single ? Scalar(88.37626) : Scalar(709.43);
  constexpr Scalar lo = single ? Scalar(-87.33654) : Scalar(-708.39);
  constexpr Scalar magic = single ? Scalar(12582912.0) : Scalar(6755399441055744.0);  // 1.5 * 2^mantissa bits
  constexpr Scalar log2e = Scalar(1.44269504088896340736);
  constexpr Scalar ln2_hi = single ? Scalar(0.693359375) : Scalar(6.93145751953125E-1);
  constexpr Scalar ln2_lo = single ? Scalar(-2.12194440e-4) : Scalar(1.42860682030941723212E-6);
  constexpr int mant = single ? 23 : 52;
  const Scalar c = v > hi ? hi : (v < lo ? lo : v);
  const Scalar t = c * log2e + magic;
  const Scalar n = t - magic;
  const I ni = to_bits(t) - to_bits(magic);
  const Scalar r = (c - n * ln2_hi) - n * ln2_lo;
  Scalar p;
  exp_of_reduced<Scalar>(r, p);
  Scalar e = from_bits<Scalar>(to_bits(p) + (ni << mant));
  e = v > hi ? std::numeric_limits<Scalar>::infinity() : e;
  e = v < lo ? Scalar(0) : e;
  return v != v ? v : e;
}

#if defined(__GNUC__) || defined(__clang__)
#define SSM_SCAN_VECTOR_EXT 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inline helpers: no ABI involved
#endif
/// A GCC / Clang generic vector of `Bytes` (16: SSE, 32: AVX2), for the kernel builds whose
/// auto-vectoriser does not if-convert exp's selects (the AVX-512 build vectorises the plain loop).
template <class Scalar, int Bytes>
struct LaneVector {
  typedef Scalar type __attribute__((vector_size(Bytes)));
  typedef bits_t<Scalar> bits __attribute__((vector_size(Bytes)));
};

// Vectors go by reference only: passing or returning them by value in a function compiled for a
// narrower instruction set is an ABI question compilers warn about.
template <class V>
SSM_SCAN_INLINE void load_lanes(V& v, const void* p) {
  std::memcpy(&v, p, sizeof v);
}

template <class V>
SSM_SCAN_INLINE void store_lanes(void* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

/// `fast_exp` on a vector, the same arithmetic lane by lane (same results).
template <class Scalar, int Bytes, class V = typename LaneVector<Scalar, Bytes>::type>
SSM_SCAN_INLINE void fast_exp_lanes(V& e, const V& v) {
  using IV = typename LaneVector<Scalar, Bytes>::bits;
  constexpr bool single = std::is_same_v<Scalar, float>;
  const V zero = V{} + Scalar(0);
  const V hi = zero + (single ? Scalar(88.37626) : Scalar(709.43));
  const V lo = zero + (single ? Scalar(-87.33654) : Scalar(-708.39));
  const V magic = zero + (single ? Scalar(12582912.0) : Scalar(6755399441055744.0));
  const Scalar log2e = Scalar(1.44269504088896340736);
  const Scalar ln2_hi = single ? Scalar(0.693359375) : Scalar(6.93145751953125E-1);
  const Scalar ln2_lo = single ? Scalar(-2.12194440e-4) : Scalar(1.42860682030941723212E-6);
  constexpr int mant = single ? 23 : 52;
  V c = v > hi ? hi : v;
  c = v < lo ? lo : c;
  const V t = c * log2e + magic;
  const V n = t - magic;
  const IV ni = (IV)t - (IV)magic;
  const V r = (c - n * ln2_hi) - n * ln2_lo;
  V p;
  exp_of_reduced<Scalar>(r, p);
  e = (V)((IV)p + (ni << mant));
  e = v > hi ? zero + std::numeric_limits<Scalar>::infinity() : e;
  e = v < lo ? zero : e;
  e = v != v ? v : e;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

/// log1p(e) for e >= 0 (float): log(u) - ((u - 1) - e) / u with u = 1 + e, which corrects the
/// rounding of 1 + e; log(u) by the exponent and the Cephes polynomial of the mantissa in
/// [sqrt(1/2), sqrt(2)). Branch-free like `fast_exp`.
SSM_SCAN_INLINE float fast_log1p_nonnegative(float e) {
  // No selects on special values: u == 1 gives log(u) = 0 and a correction of exactly e, and a NaN
  // e propagates through the correction; so the loop has no control flow and vectorises.
  const float u = 1.0f + e;
  const std::uint32_t b = to_bits(u);
  float kf = float(int((b >> 23) & 0xff) - 127);
  float m = from_bits<float>((b & 0x007fffff) | 0x3f800000);  // [1, 2)
  const float big = m > 1.41421356f ? 1.0f : 0.0f;
  m *= 1.0f - 0.5f * big;
  kf += big;
  const float x = m - 1.0f;
  const float z = x * x;
  float y = ((((((((7.0376836292E-2f * x - 1.1514610310E-1f) * x + 1.1676998740E-1f) * x - 1.2420140846E-1f) * x +
                 1.4249322787E-1f) * x - 1.6668057665E-1f) * x + 2.0000714765E-1f) * x - 2.4999993993E-1f) * x +
            3.3333331174E-1f) * x * z;
  y += -2.12194440e-4f * kf;
  y += -0.5f * z;
  const float log_u = x + y + 0.693359375f * kf;
  return log_u - ((u - 1.0f) - e) / u;
}

/// softplus(v) = log(1 + e^v), and v for v > 20 (PyTorch's threshold), for the scan's deltas: float
/// uses the vectorisable exp and log1p above, double the standard library (the double scan is not
/// the throughput target; the same expression as the public `ssm::softplus`).
template <class Scalar>
SSM_SCAN_INLINE Scalar scan_softplus(Scalar v) {
  if constexpr (std::is_same_v<Scalar, float>) {
    // The threshold select on bits: a ?: here would be turned into a branch around the log1p.
    const float l = fast_log1p_nonnegative(fast_exp(std::min(v, 20.0f)));
    const std::uint32_t mask = 0u - std::uint32_t(v > 20.0f);
    return from_bits<float>((to_bits(v) & mask) | (to_bits(l) & ~mask));
  } else {
    return v > Scalar(20) ? v : std::log1p(std::exp(v));
  }
}

/// dt[t] = softplus(delta[t] + bias) (or delta[t] + bias) for a block of T steps of one channel.
template <class Scalar>
SSM_SCAN_INLINE void scan_deltas(const Scalar* SSM_RESTRICT delta, Index T, Scalar bias, bool use_softplus,
                                 Scalar* SSM_RESTRICT dt) {
  if (use_softplus) {
    for (Index t = 0; t < T; ++t) dt[t] = scan_softplus(delta[t] + bias);
  } else {
    for (Index t = 0; t < T; ++t) dt[t] = delta[t] + bias;
  }
}

/// out[t] = (out[t] + D u[t]) silu(z[t]) (or out[t] + D u[t] without a gate, z null) for a block of T
/// steps of one channel, silu(z) = z / (1 + e^-z); out holds C . x on entry.
template <class Scalar>
SSM_SCAN_INLINE void scan_outputs(const Scalar* SSM_RESTRICT u, Scalar D, const Scalar* SSM_RESTRICT z, Index T,
                                  Scalar* SSM_RESTRICT out) {
  if (z) {
    for (Index t = 0; t < T; ++t) out[t] = (out[t] + D * u[t]) * (z[t] / (Scalar(1) + fast_exp(-z[t])));
  } else {
    for (Index t = 0; t < T; ++t) out[t] += D * u[t];
  }
}

}  // namespace ssm::detail
