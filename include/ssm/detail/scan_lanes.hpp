#pragma once
/// \file scan_lanes.hpp
/// The real selective scan's kernel: W channels at once, one per SIMD lane (16 floats or 8 doubles),
/// so that every operation of the recurrence is a full-width vector operation with no horizontal
/// sums. For one lane group, per step t and state n:
///
///     x[n][w] = exp(dt[w] A[n][w]) x[n][w] + dt[w] u[w] B_t[n];     y[w] += C_t[n] x[n][w]
///
/// with B_t[n] and C_t[n] one broadcast value when the lanes share B / C (per step, or grouped with
/// whole groups in the lanes: Mamba's case), else one value per lane.
///
/// The kernel is one template, `scan_lanes<Scalar, VB>`, compiled once per instruction set (see
/// scan_dispatch.hpp); VB is the width in bytes of the vectors the build writes by hand:
///  - 16 (baseline, SSE2) and 32 (AVX2 + FMA): the state update with GCC / Clang generic vectors
///    (their auto-vectorisers leave exp's selects as branches);
///  - 0 (AVX-512): plain loops, which GCC vectorises fully; and for fp32 with B and C shared by the
///    lanes, the hand-written intrinsics of scan_avx512.hpp (exp by vscalefps, softplus
///    and the gate on whole registers).
/// Everything that differs between the instruction sets is in the three hooks `lane_deltas`,
/// `lane_outputs` and `lane_block`; the rest of the kernel is shared. It allocates nothing (its
/// scratch is on the stack).

#include "ssm/core/types.hpp"
#include "ssm/detail/fast_math.hpp"

#include <algorithm>
#include <type_traits>

// With GCC or Clang on x86-64 the kernel is also built for AVX2 + FMA and AVX-512 and chosen at run
// time (scan_dispatch.hpp); SSM_NO_RUNTIME_DISPATCH turns this off.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SSM_NO_RUNTIME_DISPATCH)
#define SSM_SCAN_DISPATCH 1
#include "ssm/detail/scan_avx512.hpp"
#endif

#if defined(SSM_SCAN_VECTOR_EXT) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inline helpers: no ABI involved
#endif

namespace ssm::detail {

/// Channels scanned together, one per SIMD lane (16 floats or 8 doubles: one AVX-512 register, two
/// AVX2 or four SSE registers).
template <class Scalar>
inline constexpr int kLanes = std::is_same_v<Scalar, float> ? 16 : 8;

/// B or C as the real kernel reads it: channel d's N-vector at step t is at
/// data + offset(d) + t * stride (N contiguous values), with offset(d) = d * channel_stride for a
/// constant operand (stride 0) and (d / group_size) N for a per-step or grouped one.
template <class Scalar>
struct ScanOperand {
  const Scalar* data = nullptr;
  Index stride = 0;          ///< Scalars from step t to t + 1; 0 for a constant operand.
  bool constant = false;     ///< One vector per channel, the same at every step.
  Index channel_stride = 0;  ///< Constant only: scalars from channel d's vector to channel d + 1's.
  Index group_size = 1;      ///< Per step: channels sharing one vector (D for per-step, D / G grouped).
  Index offset(Index d, Index N) const { return constant ? d * channel_stride : (d / group_size) * N; }
};

/// A whole real selective scan over D channels, as raw column pointers (column d of u is
/// u + d * ld_u, contiguous over time).
template <class Scalar>
struct RealScanProblem {
  Index L = 0, D = 0, N = 0;
  const Scalar* u = nullptr;
  Index ld_u = 0;
  const Scalar* delta = nullptr;  ///< Before bias and softplus.
  Index ld_delta = 0;
  const Scalar* z = nullptr;  ///< Gate or nullptr.
  Index ld_z = 0;
  const Scalar* delta_bias = nullptr;  ///< D contiguous, or nullptr.
  const Scalar* skip = nullptr;        ///< D contiguous (the "D" vector), or nullptr.
  bool softplus = false;
  const Scalar* A = nullptr;  ///< Entry (d, n) at A + d * A_ld_d + n * A_ld_n.
  Index A_ld_d = 0, A_ld_n = 0;
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

// ---- The per-instruction-set hooks -------------------------------------------------------------

/// True in the AVX-512 build (VB = 0) for fp32: the intrinsics of scan_avx512.hpp.
template <class Scalar, int VB>
inline constexpr bool kAvx512Intrinsics =
#ifdef SSM_SCAN_DISPATCH
    VB == 0 && std::is_same_v<Scalar, float>;
#else
    false;
#endif

/// dt[t] = softplus(delta[t] + bias) (or delta[t] + bias) for T steps of one channel.
template <class Scalar, int VB>
SSM_SCAN_INLINE void lane_deltas(const Scalar* delta, Index T, Scalar bias, bool use_softplus, Scalar* dt) {
#ifdef SSM_SCAN_DISPATCH
  if constexpr (kAvx512Intrinsics<Scalar, VB>) {
    if (use_softplus) softplus_deltas_avx512(delta, T, bias, dt);
    else scan_deltas(delta, T, bias, false, dt);
    return;
  }
#endif
  scan_deltas(delta, T, bias, use_softplus, dt);
}

/// out[t] = (out[t] + D u[t]) silu(z[t]) (z may be null: no gate) for T steps of one channel.
template <class Scalar, int VB>
SSM_SCAN_INLINE void lane_outputs(const Scalar* u, Scalar D, const Scalar* z, Index T, Scalar* out) {
#ifdef SSM_SCAN_DISPATCH
  if constexpr (kAvx512Intrinsics<Scalar, VB>) {
    if (z) gate_outputs_avx512(u, D, z, T, out);
    else scan_outputs(u, D, z, T, out);
    return;
  }
#endif
  scan_outputs(u, D, z, T, out);
}

/// One step of the recurrence for the W lanes and the nc states of the chunk: x (nc x W, [n][w]) in
/// place, y_t (W) written. Bt / Ct: nc values (shared) or nc x W (lane-wise, BL / CL).
template <class Scalar, bool BL, bool CL, int VB>
SSM_SCAN_INLINE void lane_step(Index nc, const Scalar* SSM_RESTRICT A, Scalar* SSM_RESTRICT x,
                               const Scalar* SSM_RESTRICT dtt, const Scalar* SSM_RESTRICT dut,
                               const Scalar* SSM_RESTRICT Bt, const Scalar* SSM_RESTRICT Ct, Scalar* SSM_RESTRICT yt) {
  constexpr int W = kLanes<Scalar>;
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
    for (int k = 0; k < K; ++k) store_lanes(yt + k * S, acc[k]);
    return;
  }
#endif
  // Plain loops over the lanes (vectorised by the compiler in the AVX-512 build). Two accumulators
  // (even and odd n) halve the length of the dependent chain of additions.
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
  for (int w = 0; w < W; ++w) yt[w] = acc0[w] + acc1[w];
}

/// T steps from t0 of one lane group's state chunk (states n0 .. n0 + nc - 1): x in place, y ([t][w])
/// written. Bl / Cl: stack room for lane-wise B / C (already filled when the operand is constant).
template <class Scalar, bool BL, bool CL, int VB>
SSM_SCAN_INLINE void lane_block(const RealScanProblem<Scalar>& p, Index d0, int lanes, Index n0, Index nc, Index t0,
                                Index T, const Scalar* A, const Scalar* dt, const Scalar* du, Scalar* Bl, Scalar* Cl,
                                Scalar* SSM_RESTRICT x, Scalar* y) {
  constexpr int W = kLanes<Scalar>;
  const Index N = p.N;
#ifdef SSM_SCAN_DISPATCH
  if constexpr (kAvx512Intrinsics<Scalar, VB> && !BL && !CL) {
    // B and C shared by the lanes: the hand-written kernel.
    scan_block_shared_avx512(dt, du, A, x, nc, p.B.data + p.B.offset(d0, N) + t0 * p.B.stride + n0, p.B.stride,
                             p.C.data + p.C.offset(d0, N) + t0 * p.C.stride + n0, p.C.stride, T, y);
    return;
  }
#endif
  for (Index t = 0; t < T; ++t) {
    const Index s = t0 + t;
    if (BL && !p.B.constant)
      for (Index n = 0; n < nc; ++n)
        for (int w = 0; w < W; ++w)
          Bl[n * W + w] = w < lanes ? p.B.data[p.B.offset(d0 + w, N) + s * p.B.stride + n0 + n] : Scalar(0);
    if (CL && !p.C.constant)
      for (Index n = 0; n < nc; ++n)
        for (int w = 0; w < W; ++w)
          Cl[n * W + w] = w < lanes ? p.C.data[p.C.offset(d0 + w, N) + s * p.C.stride + n0 + n] : Scalar(0);
    const Scalar* Bt = BL ? Bl : p.B.data + p.B.offset(d0, N) + s * p.B.stride + n0;
    const Scalar* Ct = CL ? Cl : p.C.data + p.C.offset(d0, N) + s * p.C.stride + n0;
    lane_step<Scalar, BL, CL, VB>(nc, A, x, dt + t * W, du + t * W, Bt, Ct, y + t * W);
  }
}

// ---- The kernel, shared by every instruction set -------------------------------------------------

/// The real kernel for W channels d0 .. d0 + W - 1 (lanes past D are padding: zero input, results
/// dropped) and the states n0 .. n0 + nc - 1, with x that chunk of the state as [n][w]. B_t[n] is
/// one value for all lanes when the lanes share B (BL false), else one per lane (BL true); likewise C.
/// The first chunk writes its part of y, later ones add theirs, and the last applies the skip and
/// the gate.
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
      A[n * W + w] = live ? p.A[(d0 + w) * p.A_ld_d + (n0 + n) * p.A_ld_n] : Scalar(0);
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
        lane_deltas<Scalar, VB>(dl, T, bias, p.softplus, tmp);
        for (Index t = 0; t < T; ++t) {
          dt[t * W + w] = tmp[t];
          du[t * W + w] = tmp[t] * ul[t];
        }
      } else {
        for (Index t = 0; t < T; ++t) dt[t * W + w] = du[t * W + w] = Scalar(0);
      }
    }
    lane_block<Scalar, BL, CL, VB>(p, d0, lanes, n0, nc, t0, T, A, dt, du, Bl, Cl, x, y);
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
        lane_outputs<Scalar, VB>(ud, skip, zd, T, o);
      }
    }
  }
}

/// One lane group (channels d0 .. d0 + W - 1), state chunk by state chunk, with the state copied in
/// and out of the kernel's [n][w] layout.
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

}  // namespace ssm::detail

#if defined(SSM_SCAN_VECTOR_EXT) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
