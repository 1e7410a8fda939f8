#pragma once
/// \file ssd_scan.hpp
/// The SSD scan of Mamba-2 ("state space duality"): a linear recurrence whose state decays by one
/// scalar per head and step, computed either one step at a time or in chunks as matrix products.
///
/// Sizes: L steps, H heads of P channels (headdim) each, G groups of N states (dstate); the H / G
/// heads h of group g = floor(h / (H / G)) share that group's B and C (contiguous blocks of heads,
/// as einops "g -> (g h)"; not h mod G). For every head h and step t, with a state S (P x N):
///
///     delta_t = clamp(softplus(dt[t,h] + dt_bias[h]), dt_min, dt_max)   (softplus only if asked)
///     S_t     = exp(delta_t A_h) S_{t-1} + delta_t x_t B_t^T      x_t = x[t, hP:hP+P], B_t = B[t, gN:gN+N]
///     y_t     = S_t C_t + D_h x_t                                  (D_{h,p} x_{t,p} with a per-channel D)
///     out_t   = y_t * silu(z_t)                                    (only when a gate z is given)
///
/// A is ZOH-discretised (exp(delta A)), B is not (the Euler form delta B), as in the reference's
/// `mamba_chunk_scan_combined` / `selective_state_update`. softplus(v) = log(1 + e^v), and v for
/// v > 20 (PyTorch's threshold); silu(v) = v / (1 + e^-v). The clamp to [dt_min, dt_max] (the
/// reference's dt_limit, default [0, inf)) is applied always, after the softplus, as the reference's
/// chunked kernel does. (The reference's step() forgets the clamp; here both algorithms clamp, so
/// they agree.)
///
/// Layout (the library's: rows are time steps, column-major):
///  - x, z, out: L x (H P), column h P + p is channel p of head h;
///  - dt: L x H;  B, C: L x (G N), column g N + n;  A: H;  D: H or H P (or empty for none);
///  - the state: (H P) x N, entry (h P + p, n) = the reference's ssm_state[h, p, n].
///
/// Two algorithms, one answer (they differ by rounding only):
///  - `SsdAlgorithm::recurrent`: the recurrence above, one step at a time (the layer's step uses it).
///    Cost 2 L H P N multiply-adds, none of them in a matrix product.
///  - `SsdAlgorithm::chunked`: chunks of Q steps. With cs_l = sum_{l' <= l} delta_l' A_h inside a chunk
///    (the cumulative log-decay) and S_in the state entering it,
///
///        y_l   = sum_{s <= l} (C_l . B_s) exp(cs_l - cs_s) delta_s x_s      intra-chunk: (mask o decay o C B^T) X
///              + exp(cs_l) S_in C_l                                        inter-chunk: diag(exp cs) C S_in^T
///        S_out = exp(cs_{Q-1}) S_in + sum_s exp(cs_{Q-1} - cs_s) delta_s x_s B_s^T    (X^T diag(w) B)
///
///    C B^T (Q x Q) is formed once per chunk and group. Then every head runs on its own, chunk by chunk,
///    with its P x N state in a contiguous buffer: the inter-chunk output diag(exp cs) C S_in^T (Q x N
///    by N x P), the intra-chunk tri(M_h) X_h (Q x Q by Q x P) and the new state X_w^T B (P x Q by Q x N,
///    X_w = x with row s scaled by exp(cs_last - cs_s) delta_s) are each one Eigen GEMM. Cost about
///    L H (Q P / 2 + 2 P N) + L G Q N multiply-adds, nearly all in matrix products, and L H Q / 2
///    exponentials. The last chunk may be shorter; any Q >= 1 works (Q = 1 is the recurrence written as
///    products, Q >= L one chunk). Exponents are differences cs_l - cs_s <= 0 within one chunk, so
///    nothing overflows whatever the decay.
///
/// With OpenMP (`_OPENMP` defined) both algorithms give whole heads to threads, in one parallel region
/// per call with nothing shared between heads (no barrier per chunk: a thread descheduled by a busy
/// machine delays only its own heads; an earlier design with a parallel region per chunk ran 15-50x
/// slower on two threads sharing one core). Inside an enclosing parallel region everything runs on the
/// calling thread.
///
/// Example:
/// \code
///   ssm::SsdScanParams<float> p;            // headdim 64, ngroups 1, dstate 128, A (24), D (24), dt_bias (24)
///   p.headdim = 64; p.ngroups = 1; p.dstate = 128; p.A = A; p.D = D; p.dt_bias = dt_bias; p.dt_softplus = true;
///   ssm::SsdScan<float> scan(p);
///   auto r = scan.forward(x, dt, B, C);     // r.out: L x 1536, r.final_state: 1536 x 128
/// \endcode

#include "ssm/core/activations.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ssm {

/// Which algorithm `SsdScan::run` uses; both give the same answer up to rounding.
enum class SsdAlgorithm {
  chunked,   ///< Chunks of Q steps as matrix products (fast for sequences; the default).
  recurrent  ///< One step at a time (what `step` does).
};

/// Default chunk size Q of the chunked SSD form. Measured with bench_mamba2 (fp32, H 24, P 64, N 128,
/// G 1, L 2048, one thread, GCC 12 -O3 -march=native, a shared 2-vCPU AMD EPYC VM under load, CPU
/// time): Q 32: 28.8 ms, Q 64: 23.9 ms, Q 128: 25.5 ms, Q 256: 30.0 ms; the recurrence 103 ms.
inline constexpr Index kSsdDefaultChunk = 64;


/// The per-head parameters and options of an SSD scan (what stays fixed across calls).
template <class T>
struct SsdScanParams {
  Index headdim = 0;         ///< P, channels per head.
  Index ngroups = 1;         ///< G, groups of B and C; must divide the number of heads.
  Index dstate = 0;          ///< N, states per channel.
  VectorX<T> A;              ///< H: one (negative, for a stable scan) decay rate per head. Sets H.
  VectorX<T> D;              ///< Skip y += D x: empty (none), H (per head) or H P (per channel, index h P + p).
  VectorX<T> dt_bias;        ///< H, added to dt before the softplus; empty means none.
  bool dt_softplus = false;  ///< Apply softplus to dt + dt_bias.
  /// The clamp of delta (the reference's dt_limit), applied after the softplus; the default [0, inf)
  /// is the reference's, which only matters without softplus (it zeroes negative steps).
  double dt_min = 0.0;
  double dt_max = std::numeric_limits<double>::infinity();

  /// The same parameters in another scalar type.
  template <class U>
  SsdScanParams<U> cast() const {
    SsdScanParams<U> r;
    r.headdim = headdim;
    r.ngroups = ngroups;
    r.dstate = dstate;
    r.A = A.template cast<U>();
    r.D = D.template cast<U>();
    r.dt_bias = dt_bias.template cast<U>();
    r.dt_softplus = dt_softplus;
    r.dt_min = dt_min;
    r.dt_max = dt_max;
    return r;
  }
};

/// What `SsdScan::forward` returns.
template <class T>
struct SsdScanResult {
  Sequence<T> out;         ///< L x (H P).
  MatrixX<T> final_state;  ///< (H P) x N: the state after the last step.
};

/// The SSD scan (see the file comment for the math): fixed parameters, and the sequence, state and
/// step operations over them.
/// Chunk size: see kSsdDefaultChunk (measured against the recurrence in the same run).
template <class T>
class SsdScan {
  static_assert(is_supported_scalar_v<T>, "SsdScan: T must be float or double");

 public:
  using Params = SsdScanParams<T>;

  /// Checks the parameters. \throws ssm::error naming the field (headdim, dstate, ngroups not
  /// dividing the heads, D / dt_bias of the wrong size, an empty or inverted dt clamp).
  SSM_NOINLINE explicit SsdScan(Params params) : p_(std::move(params)) {
    constexpr const char* where = "SsdScan";
    using detail::concat;
    const Index H = p_.A.size();
    check(H >= 1, where, "A", "one rate per head (at least 1)", concat("size ", H));
    check(p_.headdim >= 1, where, "headdim", "a size >= 1", concat(p_.headdim));
    check(p_.dstate >= 1, where, "dstate", "a size >= 1", concat(p_.dstate));
    check(p_.ngroups >= 1 && H % p_.ngroups == 0, where, "ngroups",
          concat("a divisor of nheads = ", H), concat(p_.ngroups));
    check(p_.D.size() == 0 || p_.D.size() == H || p_.D.size() == H * p_.headdim, where, "D",
          concat("empty, nheads = ", H, " or nheads * headdim = ", H * p_.headdim, " entries"),
          concat(p_.D.size(), " entries"));
    check(p_.dt_bias.size() == 0 || p_.dt_bias.size() == H, where, "dt_bias",
          concat("empty or nheads = ", H, " entries"), concat(p_.dt_bias.size(), " entries"));
    check(!(p_.dt_min > p_.dt_max) && !std::isnan(p_.dt_min) && !std::isnan(p_.dt_max), where, "dt_min, dt_max",
          "dt_min <= dt_max", concat(p_.dt_min, ", ", p_.dt_max));
    check_finite(p_.A, where, "A");
    for (Index h = 0; h < H; ++h)
      if (!(p_.A[h] <= 0))  // A = -exp(A_log) in the reference; a growing head would overflow the chunk exponents
        check(false, where, "A", "rates <= 0 (decaying heads)", concat("A(", h, ") = ", p_.A[h]));
    lo_ = static_cast<T>(p_.dt_min);
    hi_ = static_cast<T>(p_.dt_max);
  }

  const Params& params() const { return p_; }
  Index nheads() const { return p_.A.size(); }
  Index headdim() const { return p_.headdim; }
  Index ngroups() const { return p_.ngroups; }
  Index dstate() const { return p_.dstate; }
  /// H P: the columns of x, z and out, and the rows of the state.
  Index channels() const { return p_.A.size() * p_.headdim; }

  /// A zero state, (H P) x N.
  MatrixX<T> initial_state() const { return MatrixX<T>::Zero(channels(), p_.dstate); }

  /// delta = clamp(softplus(dt + dt_bias)) for head h (the first line of the recurrence).
  T delta(T dt, Index h) const {
    T v = p_.dt_bias.size() ? dt + p_.dt_bias[h] : dt;
    if (p_.dt_softplus) v = softplus(v);
    return std::min(std::max(v, lo_), hi_);
  }

  /// The scan from the zero state, or from `initial_state` ((H P) x N) when it is not empty.
  /// z (L x H P) is the optional gate: pass an empty matrix for none.
  SSM_NOINLINE SsdScanResult<T> forward(const Eigen::Ref<const MatrixX<T>>& x, const Eigen::Ref<const MatrixX<T>>& dt,
                           const Eigen::Ref<const MatrixX<T>>& B, const Eigen::Ref<const MatrixX<T>>& C,
                           const Eigen::Ref<const MatrixX<T>>& z = MatrixX<T>(),
                           const Eigen::Ref<const MatrixX<T>>& initial_state = MatrixX<T>(),
                           SsdAlgorithm algorithm = SsdAlgorithm::chunked, Index chunk_size = kSsdDefaultChunk) const {
    SsdScanResult<T> r;
    if (initial_state.size() == 0) {
      r.final_state = this->initial_state();
    } else {
      check_shape(initial_state, channels(), p_.dstate, "SsdScan::forward", "initial_state", "nheads*headdim x dstate");
      r.final_state = initial_state;
    }
    r.out.resize(x.rows(), channels());
    run(x, dt, B, C, z, r.final_state, r.out, algorithm, chunk_size);
    return r;
  }

  /// The scan of L steps from `state` ((H P) x N), which is left as the state after the last step;
  /// the output goes to `out` (L x H P; it must not overlap x or z). z: the gate, or empty for none.
  /// Every shape is checked (ssm::error naming the argument). chunk_size: Q >= 1 (chunked only).
  /// Allocates only scratch: the recurrence 2 L G N (B, C transposed), the chunked form L G Q (every
  /// chunk's C B^T) and per thread P N + Q^2 + Q P + 4 Q.
  SSM_NOINLINE void run(const Eigen::Ref<const MatrixX<T>>& x, const Eigen::Ref<const MatrixX<T>>& dt,
           const Eigen::Ref<const MatrixX<T>>& B, const Eigen::Ref<const MatrixX<T>>& C,
           const Eigen::Ref<const MatrixX<T>>& z, Eigen::Ref<MatrixX<T>> state, Eigen::Ref<MatrixX<T>> out,
           SsdAlgorithm algorithm = SsdAlgorithm::chunked, Index chunk_size = kSsdDefaultChunk) const {
    constexpr const char* where = "SsdScan::run";
    const Index L = x.rows(), H = nheads(), P = p_.headdim, G = p_.ngroups, N = p_.dstate;
    check_shape(x, L, H * P, where, "x", "L x nheads*headdim");
    check_shape(dt, L, H, where, "dt", "L x nheads");
    check_shape(B, L, G * N, where, "B", "L x ngroups*dstate");
    check_shape(C, L, G * N, where, "C", "L x ngroups*dstate");
    if (z.size() != 0) check_shape(z, L, H * P, where, "z", "L x nheads*headdim, or empty for no gate");
    check_shape(state, H * P, N, where, "state", "nheads*headdim x dstate");
    check_shape(out, L, H * P, where, "out", "L x nheads*headdim");
    check(chunk_size >= 1, where, "chunk_size", "a chunk size >= 1", detail::concat(chunk_size));
    if (L == 0) return;
    if (algorithm == SsdAlgorithm::recurrent) {
      recurrent(x, dt, B, C, z, state, out);
    } else {
      chunked(x, dt, B, C, z, state, out, std::min(chunk_size, L));
    }
  }

  /// One step of the recurrence: x_t (H P), dt_t (H), B_t and C_t (G N), z_t (H P, or empty for no
  /// gate), the state ((H P) x N) updated in place, y_t (H P) written (it must not overlap x_t or z_t).
  /// Allocates nothing for contiguous vectors (a strided argument would be copied by Eigen::Ref: the
  /// Mamba-2 layer's `step`, which takes strided rows, passes its own contiguous scratch).
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>>& x, const Eigen::Ref<const VectorX<T>>& dt,
            const Eigen::Ref<const VectorX<T>>& B, const Eigen::Ref<const VectorX<T>>& C,
            const Eigen::Ref<const VectorX<T>>& z, Eigen::Ref<MatrixX<T>> state, Eigen::Ref<VectorX<T>> y) const {
    constexpr const char* where = "SsdScan::step";
    const Index H = nheads(), P = p_.headdim, G = p_.ngroups, N = p_.dstate;
    if (x.size() != H * P) check_size(x, H * P, where, "x", "nheads*headdim");
    if (dt.size() != H) check_size(dt, H, where, "dt", "nheads");
    if (B.size() != G * N) check_size(B, G * N, where, "B", "ngroups*dstate");
    if (C.size() != G * N) check_size(C, G * N, where, "C", "ngroups*dstate");
    if (z.size() != 0 && z.size() != H * P) check_size(z, H * P, where, "z", "nheads*headdim, or empty");
    if (state.rows() != H * P || state.cols() != N)
      check_shape(state, H * P, N, where, "state", "nheads*headdim x dstate");
    if (y.size() != H * P) check_size(y, H * P, where, "y", "nheads*headdim");
    for (Index h = 0; h < H; ++h) {
      step_head(h, x.data() + h * P, dt[h], B.data(), C.data(), z.size() ? z.data() + h * P : nullptr, state,
                y.data() + h * P);
    }
  }

 private:
  /// Head h's skip coefficient for channel p.
  T skip(Index h, Index p) const {
    if (p_.D.size() == 0) return T(0);
    return p_.D.size() == nheads() ? p_.D[h] : p_.D[h * p_.headdim + p];
  }

  /// One step of head h: contiguous x (P), B and C (G N, the group's N read here), z (P) or null.
  void step_head(Index h, const T* x, T dt, const T* B, const T* C, const T* z, Eigen::Ref<MatrixX<T>>& state,
                 T* y) const {
    const Index P = p_.headdim, N = p_.dstate, g = h / (nheads() / p_.ngroups);
    const T d = delta(dt, h);
    const T a = std::exp(d * p_.A[h]);
    using Vec = Eigen::Map<VectorX<T>>;
    using CVec = Eigen::Map<const VectorX<T>>;
    CVec xv(x, P);
    Vec yv(y, P);
    yv.setZero();
    for (Index n = 0; n < N; ++n) {
      Vec s(state.data() + n * state.outerStride() + h * P, P);
      s = a * s + (d * B[g * N + n]) * xv;
      yv += C[g * N + n] * s;
    }
    finish(h, xv.data(), 1, z, 1, y, 1);
  }

  /// y = (y + D x) * silu(z) for the P channels of head h (strided views).
  void finish(Index h, const T* x, Index sx, const T* z, Index sz, T* y, Index sy) const {
    const Index P = p_.headdim;
    if (p_.D.size() != 0)
      for (Index p = 0; p < P; ++p) y[p * sy] += skip(h, p) * x[p * sx];
    if (z)
      for (Index p = 0; p < P; ++p) y[p * sy] *= silu(z[p * sz]);
  }

  /// The recurrence over L steps, head by head (a head's P x N state stays in cache for all L steps).
  SSM_NOINLINE void recurrent(const Eigen::Ref<const MatrixX<T>>& x, const Eigen::Ref<const MatrixX<T>>& dt,
                 const Eigen::Ref<const MatrixX<T>>& B, const Eigen::Ref<const MatrixX<T>>& C,
                 const Eigen::Ref<const MatrixX<T>>& z, Eigen::Ref<MatrixX<T>>& state,
                 Eigen::Ref<MatrixX<T>>& out) const {
    const Index L = x.rows(), H = nheads(), P = p_.headdim;
    // Per-step B and C contiguous: (G N) x L.
    const MatrixX<T> Bt = B.transpose(), Ct = C.transpose();
    const Index threads = thread_count(H);
    std::vector<VectorX<T>> bufs(threads, VectorX<T>(3 * P));
    std::exception_ptr failure;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (Index h = 0; h < H; ++h) {
      try {
        VectorX<T>& buf = bufs[thread_id()];
        T* xt = buf.data();
        T* zt = buf.data() + P;
        T* yt = buf.data() + 2 * P;
        for (Index t = 0; t < L; ++t) {
          for (Index p = 0; p < P; ++p) xt[p] = x(t, h * P + p);
          if (z.size())
            for (Index p = 0; p < P; ++p) zt[p] = z(t, h * P + p);
          step_head(h, xt, dt(t, h), Bt.col(t).data(), Ct.col(t).data(), z.size() ? zt : nullptr, state, yt);
          for (Index p = 0; p < P; ++p) out(t, h * P + p) = yt[p];
        }
      } catch (...) {
        record(failure);
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  /// The chunked matrix form (see the file comment). Heads are independent, so each thread takes whole
  /// heads and runs them chunk by chunk with the head's P x N state in a contiguous buffer (it stays
  /// in cache for the whole sequence). Per chunk of q steps, with the group's C and B rows C_c, B_c:
  ///   inter  Y   = diag(exp cs) C_c S^T                    (q x N by N x P)
  ///   intra  Y  += tril(C_c B_c^T o decay o delta) X_c      (q x q by q x P; C_c B_c^T formed once per
  ///                                                         group and chunk, before the heads)
  ///   state  S   = exp(cs_last) S + (diag(w) X_c)^T B_c     (P x q by q x N)
  SSM_NOINLINE void chunked(const Eigen::Ref<const MatrixX<T>>& x, const Eigen::Ref<const MatrixX<T>>& dt,
               const Eigen::Ref<const MatrixX<T>>& B, const Eigen::Ref<const MatrixX<T>>& C,
               const Eigen::Ref<const MatrixX<T>>& z, Eigen::Ref<MatrixX<T>>& state, Eigen::Ref<MatrixX<T>>& out,
               Index Q) const {
    const Index L = x.rows(), H = nheads(), P = p_.headdim, G = p_.ngroups, N = p_.dstate;
    const Index chunks = (L + Q - 1) / Q;
    // C_c B_c^T of every chunk and group: chunk c of group g is the Q x Q block at column (g chunks + c) Q.
    MatrixX<T> CB(Q, G * chunks * Q);
    std::exception_ptr failure;
    const Index threads = thread_count(std::max(H, G * chunks));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (Index gc = 0; gc < G * chunks; ++gc) {
      try {
        const Index g = gc / chunks, t0 = (gc % chunks) * Q, q = std::min(Q, L - t0);
        CB.block(0, gc * Q, q, q).noalias() = C.block(t0, g * N, q, N) * B.block(t0, g * N, q, N).transpose();
      } catch (...) {
        record(failure);
      }
    }
    if (failure) std::rethrow_exception(failure);
    std::vector<HeadScratch> scratch(threads, HeadScratch(Q, P, N));  // allocated before the parallel region
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (Index h = 0; h < H; ++h) {
      try {
        chunked_head(h, x, dt, B, C, z, CB, chunks, state, out, Q, scratch[thread_id()]);
      } catch (...) {
        record(failure);
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  /// What one thread reuses across heads in the chunked form.
  struct HeadScratch {
    HeadScratch(Index Q, Index P, Index N) : S(P, N), M(Q, Q), Xw(Q, P), delta(Q), cs(Q), e(Q), w(Q) {}
    MatrixX<T> S;   ///< P x N: the head's state.
    MatrixX<T> M;   ///< q x q: tril(C B^T o decay o delta).
    MatrixX<T> Xw;  ///< q x P: the chunk's x, row s scaled by w_s.
    VectorX<T> delta, cs, e, w;  ///< Per step of the chunk: delta, cumulative log decay, exp(cs), weights.
  };

  /// Head h over the whole sequence, chunk by chunk (see `chunked`), skip and gate included.
  SSM_NOINLINE void chunked_head(Index h, const Eigen::Ref<const MatrixX<T>>& x, const Eigen::Ref<const MatrixX<T>>& dt,
                    const Eigen::Ref<const MatrixX<T>>& B, const Eigen::Ref<const MatrixX<T>>& C,
                    const Eigen::Ref<const MatrixX<T>>& z, const MatrixX<T>& CB,
                    Index chunks, Eigen::Ref<MatrixX<T>>& state, Eigen::Ref<MatrixX<T>>& out, Index Q,
                    HeadScratch& s) const {
    const Index L = x.rows(), P = p_.headdim, N = p_.dstate, g = h / (nheads() / p_.ngroups);
    const T A = p_.A[h];
    s.S = state.middleRows(h * P, P);
    for (Index c = 0; c < chunks; ++c) {
      const Index t0 = c * Q, q = std::min(Q, L - t0);
      T acc = 0;
      for (Index l = 0; l < q; ++l) {
        s.delta[l] = delta(dt(t0 + l, h), h);
        acc += s.delta[l] * A;
        s.cs[l] = acc;
      }
      const auto cs = s.cs.head(q);
      s.e.head(q).array() = cs.array().exp();
      s.w.head(q).array() = (cs[q - 1] - cs.array()).exp() * s.delta.head(q).array();
      const auto Cc = C.block(t0, g * N, q, N);
      const auto Xc = x.block(t0, h * P, q, P);
      auto Yc = out.block(t0, h * P, q, P);
      Yc.noalias() = Cc * s.S.transpose();
      Yc = s.e.head(q).asDiagonal() * Yc;
      // M(l, j) = (C_l . B_j) exp(cs_l - cs_j) delta_j for j <= l (the upper triangle is never read).
      const auto CBc = CB.block(0, (g * chunks + c) * Q, q, q);
      auto M = s.M.topLeftCorner(q, q);
      for (Index j = 0; j < q; ++j) {
        M.col(j).segment(j, q - j).array() =
            CBc.col(j).segment(j, q - j).array() * ((cs.segment(j, q - j).array() - cs[j]).exp() * s.delta[j]);
      }
      Yc.noalias() += M.template triangularView<Eigen::Lower>() * Xc;
      if (p_.D.size() == nheads()) Yc += p_.D[h] * Xc;
      else if (p_.D.size() != 0) Yc += Xc * p_.D.segment(h * P, P).asDiagonal();
      if (z.size()) {
        const auto Z = z.block(t0, h * P, q, P).array();
        Yc.array() *= Z / (T(1) + (-Z).exp());
      }
      auto Xw = s.Xw.topRows(q);
      Xw = s.w.head(q).asDiagonal() * Xc;
      s.S *= std::exp(cs[q - 1]);
      s.S.noalias() += Xw.transpose() * B.block(t0, g * N, q, N);
    }
    state.middleRows(h * P, P) = s.S;
  }

  static void record(std::exception_ptr& failure) {
#if defined(_OPENMP)
#pragma omp critical(ssm_ssd_failure)
#endif
    failure = std::current_exception();
  }

  /// Threads for `work_items` independent heads: all OpenMP threads, at most one per head; 1 without
  /// OpenMP or inside an enclosing parallel region.
  static Index thread_count(Index work_items) {
#if defined(_OPENMP)
    if (omp_in_parallel()) return 1;
    return std::max<Index>(1, std::min<Index>(work_items, omp_get_max_threads()));
#else
    (void)work_items;
    return 1;
#endif
  }
  static Index thread_id() {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
  }

  Params p_;
  T lo_ = 0, hi_ = std::numeric_limits<T>::infinity();
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(SsdScan)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
