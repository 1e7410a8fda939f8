#pragma once
/// \file selective_scan.hpp
/// The selective scan of Mamba (S6): a diagonal linear recurrence whose step size, input and
/// output matrices change with every time step.
///
/// For every channel d (of D) and step t (of L), with a state x_t of N entries:
///
///     delta'_t = softplus(delta_t + delta_bias_d)      (or delta_t + delta_bias_d without softplus)
///     x_t      = exp(delta'_t A_d) .* x_{t-1} + delta'_t u_t B_t          (ZOH for A, Euler for B)
///     y_t      = C_t . x_t   (2 Re(C_t . x_t) for complex A)  +  D_d u_t
///     out_t    = y_t * silu(z_t)                                          (when a gate z is given)
///
/// This is `selective_scan_ref` of state-spaces/mamba with every option, plus an initial state.
/// softplus(v) = log(1 + e^v), and v itself for v > 20 (PyTorch's threshold); silu(v) = v / (1 + e^-v).
///
/// A is real (D x N), or complex (D x N with one mode of each conjugate pair, which is why the
/// output takes 2 Re). B and C are each one of (see `ScanMatrix`):
///  - constant:  D x N, one row per channel, the same at every step;
///  - per step:  L x N, row t shared by all channels at step t;
///  - grouped:   L x (G N), channel d reads the N columns of group g = d / (D / G).
/// For complex A, B and C have complex entries (the reference packs them as (re, im) pairs along
/// time; here they are simply complex).
///
/// Layout follows the library: u, delta, z and out are L x D (rows are time); the states are
/// D x N (channel rows, as the reference's (batch, D, N)).
///
/// How it runs (real A): channels go in SIMD lanes, 16 floats or 8 doubles at a time, so that
/// every operation of the recurrence is a full-width vector operation with no horizontal sums: per
/// step t and state n, x[n][lanes] = exp(delta[lanes] A[n][lanes]) x[n][lanes] + (delta u)[lanes]
/// B_t[n], y[lanes] += C_t[n] x[n][lanes], with B_t[n] and C_t[n] one broadcast value per step
/// (the per-step / grouped case of Mamba). exp is a branch-free polynomial (`detail::fast_exp`,
/// < 3 ulp) that the compiler vectorises; softplus and the gate are vectorised along time. On
/// x86-64 with GCC or Clang the kernel is compiled for the baseline, AVX2 + FMA and AVX-512 and
/// chosen at run time; the AVX2 and baseline builds write the update with GCC / Clang generic
/// vectors (their auto-vectorisers leave exp's selects as branches), and the AVX-512 build runs fp32
/// with lane-shared B and C (Mamba's case) through hand-written intrinsics
/// (selective_scan_avx512.hpp: exp by vscalefps, softplus and the gate on whole registers).
/// Measured with GCC 12, fp32, D = 1536, N = 16, L = 2048, one thread of an AMD EPYC (Zen 5) VM:
/// 0.34 ns per channel x state x step with the AVX-512 intrinsics (0.45 ns auto-vectorised),
/// 1.9 ns AVX2, 4.5 ns SSE2. Lane groups are spread across threads with OpenMP when `_OPENMP` is
/// defined. Complex A runs one channel at a time (Eigen's exp, sin and cos). Nothing is allocated
/// beyond the result and rearranged copies of A, B and C.
///
/// Example:
/// \code
///   auto r = ssm::selective_scan(u, delta, A, ssm::ScanMatrix<float>::per_step(B),
///                                ssm::ScanMatrix<float>::per_step(C), {D, z, bias, true});
///   // r.out: L x D, r.last_state: D x N
/// \endcode

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

// With GCC or Clang on x86-64 the real kernel is also built for AVX2 + FMA and AVX-512 and chosen at
// run time (see `run_real_scan`); SSM_NO_RUNTIME_DISPATCH turns this off.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SSM_NO_RUNTIME_DISPATCH)
#define SSM_SCAN_DISPATCH 1
#include "ssm/layers/selective_scan_avx512.hpp"
#endif

namespace ssm {

/// softplus(v) = log(1 + exp(v)), and v for v > 20, exactly as PyTorch's F.softplus (beta 1, threshold 20).
template <class Scalar>
inline Scalar softplus(Scalar v) {
  return v > Scalar(20) ? v : std::log1p(std::exp(v));
}

/// silu(v) = v * sigmoid(v) = v / (1 + exp(-v)).
template <class Scalar>
inline Scalar silu(Scalar v) {
  return v / (Scalar(1) + std::exp(-v));
}

/// B or C of the selective scan: its values and how they vary over channels and steps.
/// `E` is the real scalar (real A) or `std::complex<Scalar>` (complex A).
template <class E>
struct ScanMatrix {
  /// How the matrix varies.
  enum class Kind {
    constant,  ///< values is D x N: row d is channel d's vector, the same at every step.
    per_step,  ///< values is L x N: row t is the vector of step t, shared by every channel.
    grouped    ///< values is L x (G N): channel d uses columns [g N, (g + 1) N) with g = d / (D / G).
  };

  Kind kind = Kind::constant;
  MatrixX<E> values;  ///< See `Kind` for the shape.
  Index groups = 1;   ///< G; 1 unless grouped.

  /// Time-invariant B or C: D x N, one row per channel.
  static ScanMatrix constant(MatrixX<E> values) { return {Kind::constant, std::move(values), 1}; }
  /// Per-step B or C: L x N, row t at step t, for all channels.
  static ScanMatrix per_step(MatrixX<E> values) { return {Kind::per_step, std::move(values), 1}; }
  /// Per-step B or C in G groups: L x (G N); group g (columns g N .. g N + N - 1) serves channels
  /// g D/G .. (g + 1) D/G - 1.
  static ScanMatrix grouped(MatrixX<E> values, Index groups) {
    return {Kind::grouped, std::move(values), groups};
  }
};

/// The optional inputs of the selective scan. Empty members mean "not given".
template <class Scalar, class E = Scalar>
struct SelectiveScanOptions {
  VectorX<Scalar> D;            ///< Skip connection, size D: y += D_d u. Empty: none.
  Sequence<Scalar> z;           ///< Gate, L x D: out = y * silu(z). Empty: no gate.
  VectorX<Scalar> delta_bias;   ///< Added to delta before softplus, size D. Empty: none.
  bool delta_softplus = false;  ///< Apply softplus to delta (+ bias).
  MatrixX<E> initial_state;     ///< x_0, D x N (channel rows). Empty: zero.
};

/// What the selective scan returns.
template <class Scalar, class E = Scalar>
struct SelectiveScanResult {
  Sequence<Scalar> out;  ///< L x D.
  MatrixX<E> last_state; ///< x_L, D x N (channel rows), the state to continue from.
};

namespace detail {

/// One channel of a complex selective scan: A, B, C and the state split in real and imaginary parts.
template <class Scalar>
struct ComplexScanChannel {
  Index L = 0, N = 0;
  const Scalar* u = nullptr;
  const Scalar* delta = nullptr;
  Scalar delta_bias = 0;
  bool softplus = false;
  const Scalar* A_re = nullptr;
  const Scalar* A_im = nullptr;
  const Scalar* B_re = nullptr;
  const Scalar* B_im = nullptr;
  Index B_stride = 0;
  const Scalar* C_re = nullptr;
  const Scalar* C_im = nullptr;
  Index C_stride = 0;
  Scalar D = 0;
  const Scalar* z = nullptr;
  Scalar* x_re = nullptr;
  Scalar* x_im = nullptr;
  Scalar* out = nullptr;
};

/// Scratch of the complex kernel: this many scalars per buffer live on the stack. A block of
/// max(1, kScanBuffer / N) steps is discretised at a time.
inline constexpr Index kScanBuffer = 2048;

#if defined(__GNUC__) || defined(__clang__)
#define SSM_SCAN_INLINE inline __attribute__((always_inline))
#define SSM_SCAN_LAMBDA_INLINE __attribute__((always_inline))
#define SSM_RESTRICT __restrict__
#else
#define SSM_SCAN_INLINE inline
#define SSM_SCAN_LAMBDA_INLINE
#define SSM_RESTRICT
#endif

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
/// also leaves n in the low bits); exp(r) by the Cephes polynomial (float, degree 7, ~1 ulp) or by
/// its Taylor series to degree 13 (double, < 1 ulp of truncation); 2^n added to the exponent bits.
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

/// softplus for the scan's deltas: float uses the vectorisable exp and log1p above, double the
/// standard library (the double scan is not the throughput target).
template <class Scalar>
SSM_SCAN_INLINE Scalar scan_softplus(Scalar v) {
  if constexpr (std::is_same_v<Scalar, float>) {
    // The threshold select on bits: a ?: here would be turned into a branch around the log1p.
    const float l = fast_log1p_nonnegative(fast_exp(std::min(v, 20.0f)));
    const std::uint32_t mask = 0u - std::uint32_t(v > 20.0f);
    return from_bits<float>((to_bits(v) & mask) | (to_bits(l) & ~mask));
  } else {
    return softplus(v);
  }
}

/// delta' = softplus(delta + bias) (or delta + bias) for a block of T steps.
template <class Scalar>
SSM_SCAN_INLINE void scan_deltas(const Scalar* SSM_RESTRICT delta, Index T, Scalar bias, bool use_softplus,
                                 Scalar* SSM_RESTRICT dt) {
  if (use_softplus) {
    for (Index t = 0; t < T; ++t) dt[t] = scan_softplus(delta[t] + bias);
  } else {
    for (Index t = 0; t < T; ++t) dt[t] = delta[t] + bias;
  }
}

/// out = (y + D u) * silu(z) for a block of T steps (y already in out).
template <class Scalar>
SSM_SCAN_INLINE void scan_outputs(const Scalar* SSM_RESTRICT u, Scalar D, const Scalar* SSM_RESTRICT z, Index T,
                                  Scalar* SSM_RESTRICT out) {
  if (z) {
    for (Index t = 0; t < T; ++t) out[t] = (out[t] + D * u[t]) * (z[t] / (Scalar(1) + fast_exp(-z[t])));
  } else {
    for (Index t = 0; t < T; ++t) out[t] += D * u[t];
  }
}

/// Channels scanned together, one per SIMD lane (16 floats or 8 doubles: one AVX-512 register, two
/// AVX2 or four SSE registers).
template <class Scalar>
inline constexpr int kLanes = std::is_same_v<Scalar, float> ? 16 : 8;

/// B or C as the real kernel reads it: channel d's N-vector at step t is at
/// data + offset(d) + t * stride, with offset(d) = d N (constant, stride 0) or (d / group_size) N.
template <class Scalar>
struct ScanOperand {
  const Scalar* data = nullptr;
  Index stride = 0;          ///< Scalars from step t to t + 1; 0 for a constant operand.
  bool constant = false;     ///< One vector per channel (D x N, stored channel by channel).
  Index group_size = 1;      ///< Channels sharing one vector (D for per-step, D / G grouped).
  Index offset(Index d, Index N) const { return constant ? d * N : (d / group_size) * N; }
};

/// A whole real selective scan over D channels, as raw column pointers (column d of u is
/// u + d * ld_u, contiguous over time), so that layers can run it on their own buffers.
template <class Scalar>
struct RealScanProblem {
  Index L = 0, D = 0, N = 0;
  const Scalar* u = nullptr;
  Index ld_u = 0;
  const Scalar* delta = nullptr;  ///< Before bias and softplus.
  Index ld_delta = 0;
  const Scalar* z = nullptr;  ///< Gate or nullptr.
  Index ld_z = 0;
  const Scalar* delta_bias = nullptr;  ///< D or nullptr.
  const Scalar* skip = nullptr;        ///< D (the "D" vector) or nullptr.
  bool softplus = false;
  const Scalar* A = nullptr;  ///< Channel d's N values at A + d * N.
  ScanOperand<Scalar> B, C;
  Scalar* x = nullptr;  ///< State entry (d, n) at x + d * x_ld_d + n * x_ld_n: read as x_0, written as x_L.
  Index x_ld_d = 0, x_ld_n = 0;
  Scalar* out = nullptr;
  Index ld_out = 0;
};

/// Steps per block of the lane kernel (its scratch lives on the stack).
inline constexpr Index kLaneBlock = 64;
/// States per chunk of the lane kernel: larger N is scanned in chunks (on the stack all the same).
inline constexpr Index kLaneStackStates = 64;

/// The real kernel for W channels d0 .. d0 + W - 1 (lanes past D are padding: zero input, results
/// dropped). Per step t and state n, for all lanes at once:
///   x[n][w] = exp(dt[w] A[n][w]) x[n][w] + dt[w] u[w] B_t[n];   y[w] += C_t[n] x[n][w]
/// B_t[n] is one value for all lanes when the lanes share B (per-step, or grouped with whole groups
/// of lanes), else one per lane (BL / CL true). No horizontal sums, no shuffles: every operation is
/// a full-width vector operation, and exp is the branch-free `fast_exp`.
///
/// States are taken kLaneStackStates at a time (n0 .. n0 + nc - 1): the first chunk writes its part
/// of y, later ones add theirs, and the last applies the skip and the gate.
template <class Scalar, bool BL, bool CL, int VB>
SSM_SCAN_INLINE void scan_lanes_impl(const RealScanProblem<Scalar>& p, Index d0, Index n0, Index nc, bool first,
                                     bool last, Scalar* SSM_RESTRICT x) {
  constexpr int W = kLanes<Scalar>;
  const Index N = p.N, L = p.L;
  const int lanes = int(std::min<Index>(W, p.D - d0));
  alignas(64) Scalar A[kLaneStackStates * W];
  alignas(64) Scalar dt[kLaneBlock * W], du[kLaneBlock * W], y[kLaneBlock * W];
  alignas(64) Scalar Bl[kLaneStackStates * W], Cl[kLaneStackStates * W];
  // A, and the lane-wise B / C of constant operands, as [n][w].
  for (Index n = 0; n < nc; ++n)
    for (int w = 0; w < W; ++w) {
      const bool live = w < lanes;
      A[n * W + w] = live ? p.A[(d0 + w) * N + n0 + n] : Scalar(0);
      if (BL && p.B.constant) Bl[n * W + w] = live ? p.B.data[p.B.offset(d0 + w, N) + n0 + n] : Scalar(0);
      if (CL && p.C.constant) Cl[n * W + w] = live ? p.C.data[p.C.offset(d0 + w, N) + n0 + n] : Scalar(0);
    }
  for (Index t0 = 0; t0 < L; t0 += kLaneBlock) {
    const Index T = std::min(kLaneBlock, L - t0);
    // dt and dt * u as [t][w]: softplus vectorised along each channel's contiguous time.
    for (int w = 0; w < W; ++w) {
      if (w < lanes) {
        const Scalar* SSM_RESTRICT dl = p.delta + (d0 + w) * p.ld_delta + t0;
        const Scalar* SSM_RESTRICT ul = p.u + (d0 + w) * p.ld_u + t0;
        const Scalar bias = p.delta_bias ? p.delta_bias[d0 + w] : Scalar(0);
        Scalar tmp[kLaneBlock];
#ifdef SSM_SCAN_DISPATCH
        if constexpr (VB == 0 && std::is_same_v<Scalar, float>) {
          if (p.softplus) softplus_deltas_avx512(dl, T, bias, tmp);
          else scan_deltas(dl, T, bias, false, tmp);
        } else
#endif
        scan_deltas(dl, T, bias, p.softplus, tmp);
        for (Index t = 0; t < T; ++t) {
          dt[t * W + w] = tmp[t];
          du[t * W + w] = tmp[t] * ul[t];
        }
      } else {
        for (Index t = 0; t < T; ++t) dt[t * W + w] = du[t * W + w] = Scalar(0);
      }
    }
#ifdef SSM_SCAN_DISPATCH
    if constexpr (VB == 0 && !BL && !CL && std::is_same_v<Scalar, float>) {
      // The AVX-512 build with B and C shared by the lanes: the hand-written kernel.
      scan_block_shared_avx512(dt, du, A, x, nc, p.B.data + p.B.offset(d0, N) + t0 * p.B.stride + n0, p.B.stride,
                               p.C.data + p.C.offset(d0, N) + t0 * p.C.stride + n0, p.C.stride, T, y);
    } else
#endif
    for (Index t = 0; t < T; ++t) {
      const Index s = t0 + t;
      const Scalar* SSM_RESTRICT dtt = dt + t * W;
      const Scalar* SSM_RESTRICT dut = du + t * W;
      if (BL && !p.B.constant)
        for (Index n = 0; n < nc; ++n)
          for (int w = 0; w < W; ++w)
            Bl[n * W + w] = w < lanes ? p.B.data[p.B.offset(d0 + w, N) + s * p.B.stride + n0 + n] : Scalar(0);
      if (CL && !p.C.constant)
        for (Index n = 0; n < nc; ++n)
          for (int w = 0; w < W; ++w)
            Cl[n * W + w] = w < lanes ? p.C.data[p.C.offset(d0 + w, N) + s * p.C.stride + n0 + n] : Scalar(0);
      const Scalar* SSM_RESTRICT Bt = BL ? Bl : p.B.data + p.B.offset(d0, N) + s * p.B.stride + n0;
      const Scalar* SSM_RESTRICT Ct = CL ? Cl : p.C.data + p.C.offset(d0, N) + s * p.C.stride + n0;
      // Two accumulators (even and odd n) halve the length of the dependent chain of additions.
#ifdef SSM_SCAN_VECTOR_EXT
      if constexpr (VB > 0) {
        using V = typename LaneVector<Scalar, VB>::type;
        constexpr int S = int(VB / sizeof(Scalar));  // lanes per vector
        constexpr int K = W / S;                      // vectors per lane group
        V dtv[K], duv[K], acc[K];
        for (int k = 0; k < K; ++k) {
          load_lanes(dtv[k], dtt + k * S);
          load_lanes(duv[k], dut + k * S);
          acc[k] = V{} + Scalar(0);
        }
        for (Index n = 0; n < nc; ++n) {
          for (int k = 0; k < K; ++k) {
            V b, c, a, xo, e;
            if (BL) load_lanes(b, Bt + n * W + k * S);
            else b = V{} + Bt[n];
            if (CL) load_lanes(c, Ct + n * W + k * S);
            else c = V{} + Ct[n];
            load_lanes(a, A + n * W + k * S);
            load_lanes(xo, x + n * W + k * S);
            a *= dtv[k];
            fast_exp_lanes<Scalar, VB>(e, a);
            const V xv = e * xo + duv[k] * b;
            store_lanes(x + n * W + k * S, xv);
            acc[k] += c * xv;
          }
        }
        for (int k = 0; k < K; ++k) store_lanes(y + t * W + k * S, acc[k]);
        continue;
      }
#endif
      {
      Scalar acc0[W], acc1[W];
      for (int w = 0; w < W; ++w) acc0[w] = acc1[w] = Scalar(0);
      auto state_update = [&](Index n, Scalar* SSM_RESTRICT accn) SSM_SCAN_LAMBDA_INLINE {
        Scalar* SSM_RESTRICT xn = x + n * W;
        const Scalar* SSM_RESTRICT an = A + n * W;
        const Scalar bn = BL ? Scalar(0) : Bt[n];
        const Scalar cn = CL ? Scalar(0) : Ct[n];
        for (int w = 0; w < W; ++w) {
          const Scalar b = BL ? Bt[n * W + w] : bn;
          const Scalar c = CL ? Ct[n * W + w] : cn;
          const Scalar xv = fast_exp(dtt[w] * an[w]) * xn[w] + dut[w] * b;
          xn[w] = xv;
          accn[w] += c * xv;
        }
      };
      Index n = 0;
      for (; n + 1 < nc; n += 2) {
        state_update(n, acc0);
        state_update(n + 1, acc1);
      }
      if (n < nc) state_update(n, acc0);
      for (int w = 0; w < W; ++w) y[t * W + w] = acc0[w] + acc1[w];
      }
    }
    // Back to each channel's contiguous column, then skip and gate along time.
    for (int w = 0; w < lanes; ++w) {
      const Index d = d0 + w;
      Scalar* SSM_RESTRICT o = p.out + d * p.ld_out + t0;
      if (first) {
        for (Index t = 0; t < T; ++t) o[t] = y[t * W + w];
      } else {
        for (Index t = 0; t < T; ++t) o[t] += y[t * W + w];
      }
      if (last) {
        const Scalar* ud = p.u + d * p.ld_u + t0;
        const Scalar skip = p.skip ? p.skip[d] : Scalar(0);
        const Scalar* zd = p.z ? p.z + d * p.ld_z + t0 : nullptr;
#ifdef SSM_SCAN_DISPATCH
        if constexpr (VB == 0 && std::is_same_v<Scalar, float>) {
          if (zd) gate_outputs_avx512(ud, skip, zd, T, o);
          else scan_outputs(ud, skip, zd, T, o);
        } else
#endif
        scan_outputs(ud, skip, zd, T, o);
      }
    }
  }
}

/// One lane group, state chunk by state chunk, with the state copied in and out of the kernel's
/// [n][w] layout.
template <class Scalar, int VB>
SSM_SCAN_INLINE void scan_lanes(const RealScanProblem<Scalar>& p, Index d0) {
  constexpr int W = kLanes<Scalar>;
  const Index N = p.N;
  const int lanes = int(std::min<Index>(W, p.D - d0));
  alignas(64) Scalar x[kLaneStackStates * W];
  // Lanes share B (C) when they all read the same vector: per step with whole groups in the lanes.
  const bool b_shared = !p.B.constant && p.B.offset(d0, N) == p.B.offset(d0 + lanes - 1, N);
  const bool c_shared = !p.C.constant && p.C.offset(d0, N) == p.C.offset(d0 + lanes - 1, N);
  for (Index n0 = 0; n0 < N; n0 += kLaneStackStates) {
    const Index nc = std::min(kLaneStackStates, N - n0);
    const bool first = n0 == 0, last = n0 + nc == N;
    for (Index n = 0; n < nc; ++n)
      for (int w = 0; w < W; ++w)
        x[n * W + w] = w < lanes ? p.x[(d0 + w) * p.x_ld_d + (n0 + n) * p.x_ld_n] : Scalar(0);
    if (b_shared && c_shared) scan_lanes_impl<Scalar, false, false, VB>(p, d0, n0, nc, first, last, x);
    else if (b_shared) scan_lanes_impl<Scalar, false, true, VB>(p, d0, n0, nc, first, last, x);
    else if (c_shared) scan_lanes_impl<Scalar, true, false, VB>(p, d0, n0, nc, first, last, x);
    else scan_lanes_impl<Scalar, true, true, VB>(p, d0, n0, nc, first, last, x);
    for (Index n = 0; n < nc; ++n)
      for (int w = 0; w < lanes; ++w) p.x[(d0 + w) * p.x_ld_d + (n0 + n) * p.x_ld_n] = x[n * W + w];
  }
}

template <class Scalar>
void scan_lanes_baseline(const RealScanProblem<Scalar>& p, Index d0) {
  scan_lanes<Scalar, 16>(p, d0);  // SSE2 registers
}

// With GCC or Clang on x86-64 the kernel is also compiled for AVX2 + FMA and for AVX-512, and the
// widest one the CPU has is chosen at run time: the library stays header-only and portable, and a
// build without -march flags still runs at the machine's speed. (SSM_NO_RUNTIME_DISPATCH turns
// this off.)
#ifdef SSM_SCAN_DISPATCH
template <class Scalar>
__attribute__((target("avx2,fma"))) void scan_lanes_avx2(const RealScanProblem<Scalar>& p, Index d0) {
  scan_lanes<Scalar, 32>(p, d0);
}

template <class Scalar>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void scan_lanes_avx512(const RealScanProblem<Scalar>& p,
                                                                                    Index d0) {
  scan_lanes<Scalar, 0>(p, d0);  // plain loops (GCC vectorises them fully) or, fp32 with shared B / C, the intrinsics
}

/// Caps the instruction set `run_real_scan` uses (0 baseline, 1 AVX2, 2 AVX-512); -1, the default,
/// means no cap. For tests, which run every kernel on one machine.
inline int scan_isa_cap = -1;

/// 0: baseline, 1: AVX2 + FMA, 2: AVX-512 (the best the CPU has, determined once, and at most
/// `scan_isa_cap`).
inline int scan_isa() {
  static const int best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
      return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
  }();
  return scan_isa_cap >= 0 ? std::min(best, scan_isa_cap) : best;
}
#endif

#if defined(SSM_SCAN_VECTOR_EXT) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Work (channels x states x steps) below which threads cost more than they save.
inline constexpr Index kScanParallelWork = Index(1) << 16;

/// Runs a real scan: lane groups of channels spread across threads (OpenMP), each with the widest
/// kernel the CPU supports. Allocates nothing.
template <class Scalar>
void run_real_scan(const RealScanProblem<Scalar>& p) {
  constexpr int W = kLanes<Scalar>;
  const Index groups = (p.D + W - 1) / W;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (p.D * p.N * p.L >= kScanParallelWork)
#endif
  for (Index g = 0; g < groups; ++g) {
#ifdef SSM_SCAN_DISPATCH
    switch (scan_isa()) {
      case 2: scan_lanes_avx512(p, g * W); continue;
      case 1: scan_lanes_avx2(p, g * W); continue;
      default: break;
    }
#endif
    scan_lanes_baseline(p, g * W);
  }
}

/// The complex kernel: exp(delta A) = exp(delta Re A) (cos(delta Im A) + i sin(delta Im A)).
template <int NF, class Scalar>
void scan_channel_complex(const ComplexScanChannel<Scalar>& c, Scalar* re_buf, Scalar* im_buf, Scalar* dt_buf,
                          Index block) {
  using Arr = Eigen::Array<Scalar, NF, 1>;
  using Mat = Eigen::Array<Scalar, NF, Eigen::Dynamic>;
  using Flat = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  const Index N = c.N;
  const Eigen::Map<const Arr> Ar(c.A_re, N), Ai(c.A_im, N);
  Eigen::Map<Arr> state_re(c.x_re, N), state_im(c.x_im, N);
  Arr xr = state_re, xi = state_im;
  for (Index t0 = 0; t0 < c.L; t0 += block) {
    const Index T = std::min(block, c.L - t0);
    scan_deltas(c.delta + t0, T, c.delta_bias, c.softplus, dt_buf);
    Eigen::Map<Mat> dAr(re_buf, N, T), dAi(im_buf, N, T);
    for (Index t = 0; t < T; ++t) {
      dAr.col(t) = Ar * dt_buf[t];
      dAi.col(t) = Ai * dt_buf[t];
    }
    Eigen::Map<Flat> mag(re_buf, N * T), angle(im_buf, N * T);
    mag = mag.exp();
    for (Index k = 0; k < N * T; ++k) {  // in place: re = mag cos(angle), im = mag sin(angle)
      const Scalar m = mag[k], a = angle[k];
      mag[k] = m * std::cos(a);
      angle[k] = m * std::sin(a);
    }
    for (Index t = 0; t < T; ++t) {
      const Index s = t0 + t;
      const Scalar du = dt_buf[t] * c.u[s];
      const Eigen::Map<const Arr> Br(c.B_re + s * c.B_stride, N), Bi(c.B_im + s * c.B_stride, N);
      const Eigen::Map<const Arr> Cr(c.C_re + s * c.C_stride, N), Ci(c.C_im + s * c.C_stride, N);
      const Arr nr = dAr.col(t) * xr - dAi.col(t) * xi + du * Br;
      xi = dAr.col(t) * xi + dAi.col(t) * xr + du * Bi;
      xr = nr;
      c.out[s] = Scalar(2) * (Cr * xr - Ci * xi).sum();
    }
    scan_outputs(c.u + t0, c.D, c.z ? c.z + t0 : nullptr, T, c.out + t0);
  }
  state_re = xr;
  state_im = xi;
}

/// Runs one complex channel (stack scratch; the heap only for N > kScanBuffer).
template <class Scalar>
void scan_channel(const ComplexScanChannel<Scalar>& c) {
  if (c.N > kScanBuffer) {
    std::vector<Scalar> re(std::size_t(c.N)), im(std::size_t(c.N)), dt(1);
    scan_channel_complex<Eigen::Dynamic>(c, re.data(), im.data(), dt.data(), 1);
    return;
  }
  alignas(64) Scalar re[kScanBuffer];
  alignas(64) Scalar im[kScanBuffer];
  alignas(64) Scalar dt[kScanBuffer];
  const Index block = std::max<Index>(1, kScanBuffer / c.N);
  switch (c.N) {
    case 4: scan_channel_complex<4>(c, re, im, dt, block); break;
    case 8: scan_channel_complex<8>(c, re, im, dt, block); break;
    case 16: scan_channel_complex<16>(c, re, im, dt, block); break;
    default: scan_channel_complex<Eigen::Dynamic>(c, re, im, dt, block); break;
  }
}

/// B or C rearranged for the kernel: per step, one contiguous column of N values per step (and per
/// group); for complex E, real and imaginary parts apart.
template <class Scalar>
struct KernelMatrix {
  MatrixX<Scalar> re, im;  ///< (G N) x L per step, N x D constant.
  Index stride = 0;        ///< Scalars between step t and t + 1 (0 when constant).
  Index N = 0;             ///< Entries per channel vector.
  bool constant = false;
  Index groups = 1;

  /// Offset of channel d's vector at step 0.
  Index offset(Index d, Index D) const { return constant ? d * N : (d / (D / groups)) * N; }

  /// The real kernel's view of it.
  ScanOperand<Scalar> operand(Index D) const {
    ScanOperand<Scalar> o;
    o.data = re.data();
    o.stride = stride;
    o.constant = constant;
    o.group_size = D / groups;
    return o;
  }
};

template <class Scalar, class E>
KernelMatrix<Scalar> kernel_matrix(const ScanMatrix<E>& m, Index L, Index D, Index N, const char* where,
                                   const char* name) {
  using Kind = typename ScanMatrix<E>::Kind;
  KernelMatrix<Scalar> k;
  k.N = N;
  MatrixX<E> t;
  switch (m.kind) {
    case Kind::constant:
      check_shape(m.values, D, N, where, name, "D x N, constant");
      k.constant = true;
      t = m.values.transpose();
      break;
    case Kind::per_step:
      check_shape(m.values, L, N, where, name, "L x N, per step");
      t = m.values.transpose();
      break;
    case Kind::grouped: {
      check(m.groups >= 1 && D % m.groups == 0, where, name,
            concat("a group count G >= 1 dividing D = ", D), concat("G = ", m.groups));
      check_shape(m.values, L, m.groups * N, where, name, "L x (G N), grouped");
      k.groups = m.groups;
      t = m.values.transpose();
      break;
    }
  }
  k.stride = k.constant ? 0 : k.groups * N;
  if constexpr (std::is_same_v<E, Scalar>) {
    k.re = std::move(t);
  } else {
    k.re = t.real();
    k.im = t.imag();
  }
  return k;
}

}  // namespace detail

/// The selective scan (see the file comment for the math).
///
/// \param u      L x D input.
/// \param delta  L x D step sizes (before `delta_bias` and softplus).
/// \param A      D x N, real (`MatrixX<Scalar>`) or complex (`MatrixXc<Scalar>`, one mode of each
///               conjugate pair; the output is then 2 Re(C x)).
/// \param B, C   `ScanMatrix` over the same element type as A.
/// \param options D skip, gate z, delta_bias, delta_softplus and the initial state.
/// \returns out (L x D) and the final state x_L (D x N).
/// \throws ssm::error naming the argument when a shape does not fit.
template <class DU, class DD, class E>
SelectiveScanResult<typename DU::Scalar, E> selective_scan(
    const Eigen::MatrixBase<DU>& u, const Eigen::MatrixBase<DD>& delta, const MatrixX<E>& A, const ScanMatrix<E>& B,
    const ScanMatrix<E>& C, const SelectiveScanOptions<typename DU::Scalar, E>& options = {}) {
  using Scalar = typename DU::Scalar;
  static_assert(is_supported_scalar_v<Scalar>, "selective_scan: u must be float or double");
  static_assert(std::is_same_v<typename DD::Scalar, Scalar>, "selective_scan: delta must have u's scalar type");
  static_assert(std::is_same_v<E, Scalar> || std::is_same_v<E, std::complex<Scalar>>,
                "selective_scan: A must be real or complex over u's scalar type");
  constexpr bool is_complex = !std::is_same_v<E, Scalar>;
  constexpr const char* where = "selective_scan";
  using detail::concat;

  const Eigen::Ref<const MatrixX<Scalar>> U(u.derived());
  const Eigen::Ref<const MatrixX<Scalar>> Delta(delta.derived());
  const Index L = U.rows(), D = U.cols(), N = A.cols();
  check_shape(Delta, L, D, where, "delta", "L x D, as u");
  check(A.rows() == D && N >= 1, where, "A", concat("D x N with D = ", D, " (u's columns) and N >= 1"),
        shape_string(A.rows(), A.cols()));
  const auto Bk = detail::kernel_matrix<Scalar>(B, L, D, N, where, "B");
  const auto Ck = detail::kernel_matrix<Scalar>(C, L, D, N, where, "C");
  if (options.D.size() != 0) check_size(options.D, D, where, "options.D", "one per channel");
  if (options.delta_bias.size() != 0) check_size(options.delta_bias, D, where, "options.delta_bias", "one per channel");
  if (options.z.size() != 0) check_shape(options.z, L, D, where, "options.z", "L x D, as u");
  if (options.initial_state.size() != 0) check_shape(options.initial_state, D, N, where, "options.initial_state", "D x N");

  SelectiveScanResult<Scalar, E> r;
  r.out.resize(L, D);
  const bool has_D = options.D.size() != 0, has_bias = options.delta_bias.size() != 0, has_z = options.z.size() != 0;

  if constexpr (!is_complex) {
    // A: N x D, one contiguous column per channel; the state is written straight into last_state.
    const MatrixX<Scalar> At = A.transpose();
    if (options.initial_state.size()) r.last_state = options.initial_state;
    else r.last_state.setZero(D, N);
    detail::RealScanProblem<Scalar> p;
    p.L = L;
    p.D = D;
    p.N = N;
    p.u = U.data();
    p.ld_u = U.outerStride();
    p.delta = Delta.data();
    p.ld_delta = Delta.outerStride();
    p.z = has_z ? options.z.data() : nullptr;
    p.ld_z = L;
    p.delta_bias = has_bias ? options.delta_bias.data() : nullptr;
    p.skip = has_D ? options.D.data() : nullptr;
    p.softplus = options.delta_softplus;
    p.A = At.data();
    p.B = Bk.operand(D);
    p.C = Ck.operand(D);
    p.x = r.last_state.data();
    p.x_ld_d = 1;
    p.x_ld_n = D;
    p.out = r.out.data();
    p.ld_out = L;
    detail::run_real_scan(p);
  } else {
    // State, A: N x D, one contiguous column per channel, real and imaginary parts apart.
    MatrixX<Scalar> x_re(N, D), x_im(N, D);
    const MatrixX<Scalar> A_re = A.real().transpose(), A_im = A.imag().transpose();
    if (options.initial_state.size()) {
      x_re = options.initial_state.real().transpose();
      x_im = options.initial_state.imag().transpose();
    } else {
      x_re.setZero();
      x_im.setZero();
    }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (D * N * L >= detail::kScanParallelWork)
#endif
    for (Index d = 0; d < D; ++d) {
      const Index bo = Bk.offset(d, D), co = Ck.offset(d, D);
      detail::ComplexScanChannel<Scalar> c;
      c.L = L;
      c.N = N;
      c.u = U.col(d).data();
      c.delta = Delta.col(d).data();
      c.delta_bias = has_bias ? options.delta_bias[d] : Scalar(0);
      c.softplus = options.delta_softplus;
      c.A_re = A_re.col(d).data();
      c.A_im = A_im.col(d).data();
      c.B_re = Bk.re.data() + bo;
      c.B_im = Bk.im.data() + bo;
      c.B_stride = Bk.stride;
      c.C_re = Ck.re.data() + co;
      c.C_im = Ck.im.data() + co;
      c.C_stride = Ck.stride;
      c.D = has_D ? options.D[d] : Scalar(0);
      c.z = has_z ? options.z.col(d).data() : nullptr;
      c.x_re = x_re.col(d).data();
      c.x_im = x_im.col(d).data();
      c.out = r.out.col(d).data();
      detail::scan_channel(c);
    }
    r.last_state.resize(D, N);
    for (Index d = 0; d < D; ++d)
      for (Index n = 0; n < N; ++n) r.last_state(d, n) = E(x_re(n, d), x_im(n, d));
  }
  return r;
}

}  // namespace ssm
