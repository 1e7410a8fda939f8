#pragma once
/// \file state_sums.hpp
/// What the convolution mode of a time-invariant layer needs besides the kernel: the state the
/// recurrence would have reached, and the response to a nonzero starting state. For the linear
/// recurrence x_t = G x_{t-1} + b v_t over t = 0 .. L-1, started from x_{-1} = x0,
///
///     final state     x_{L-1} = G^L x0 + sum_{k < L} G^k b v_{L-1-k}          (the kernel, transposed)
///     free response   y_t     = c^T G^{t+1} x0,  t < L                          (outputs owed to x0)
///
/// Both are computed by blocks of Bk steps, k = j + Bk i (j < Bk), so that almost all the work is one
/// matrix product:
///     sum_k G^k b v_{L-1-k} = sum_i G^{Bk i} P_i,   P = [G^j b]_{j < Bk} (n x Bk) * V (Bk x ceil(L/Bk)),
/// with V(j, i) = v_{L-1-j-Bk i} (zero past the start), and sum_i G^{Bk i} P_i by Horner's rule; the
/// free response is [c^T G^j]_{j < Bk} (Bk x n) * [G^{Bk i + 1} x0]_i (n x ceil(L/Bk)), read column by
/// column. Work: about 4 n L flops in the products plus (L / Bk) n^2 for the Horner steps, where the
/// recurrence itself costs O(L n) sequential updates.
///
/// Two forms of G:
/// - diagonal with complex entries z_m given by their logarithms (S4D, LRU): `diagonal_state_sum`. The
///   powers z^j (j < Bk) come from one exact exp and at most Bk - 1 products, the block powers z^{Bk i}
///   from an exact exp(Bk i log z) every 32 blocks (as in the Vandermonde kernel), so the error does not
///   grow with L beyond the sum itself;
/// - dense real n x n (the real 2M x 2M matrix of a DPLR system, S4): `DenseBlockPowers`, with G^Bk
///   formed once by squaring.
/// Everything is computed in double and returned in double; callers round to their scalar.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/kernels/vandermonde.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <complex>

namespace ssm {
namespace kernels {

/// Block length of the state sums: a power of two, so G^Bk is Bk's binary squarings.
inline constexpr Index kStateSumBlock = 64;

namespace detail {

/// V(j, i) = v[L-1-j-Bk i] as doubles (zero before the start of the sequence): Bk x ceil(L / Bk).
template <class T>
MatrixX<double> reversed_blocks(const T* v, Index stride, Index L, Index Bk) {
  const Index nb = (L + Bk - 1) / Bk;
  MatrixX<double> V = MatrixX<double>::Zero(Bk, nb);
  for (Index i = 0; i < nb; ++i)
    for (Index j = 0; j < Bk; ++j) {
      const Index t = L - 1 - j - Bk * i;
      if (t < 0) break;
      V(j, i) = double(v[t * stride]);
    }
  return V;
}

}  // namespace detail

/// The final state of M independent complex modes driven by one real input per channel:
///
///     S(m, c) = sum_{t < L} z(m, c)^{L-1-t} v(t, c),      z = exp(log_z),
///
/// i.e. x_{L-1} of x_t = z x_{t-1} + v_t from x_{-1} = 0 (multiply by the input weight b afterwards;
/// add z^L x0 for a nonzero start, see `diagonal_power`). log_z: M x C (column c: channel c's modes),
/// v: L x C (L >= 0). Returns M x C. Cost 4 M L flops per channel in a real GEMM, in double.
template <class T>
MatrixXc<double> diagonal_state_sum(const MatrixXc<double>& log_z, const Eigen::Ref<const MatrixX<T>>& v) {
  const Index M = log_z.rows(), C = log_z.cols(), L = v.rows();
  check(v.cols() == C, "diagonal_state_sum", "v", ssm::detail::concat("L x ", C, " (one column per channel)"),
        shape_string(v.rows(), v.cols()));
  MatrixXc<double> S = MatrixXc<double>::Zero(M, C);
  if (L == 0 || M == 0) return S;
  constexpr Index exact_every_block = 32;
  const Index Bk = std::min(kStateSumBlock, L), nb = (L + Bk - 1) / Bk;
  MatrixX<double> Z(2 * M, Bk);  // column j: [Re z^j; Im z^j]
  VectorX<double> zr(M), zi(M), pr(M), pi(M), ones = VectorX<double>::Ones(M), zeros = VectorX<double>::Zero(M);
  VectorX<double> br(M), bi(M);
  for (Index c = 0; c < C; ++c) {
    const std::complex<double>* lz = log_z.col(c).data();
    ssm::detail::exact_powers(lz, 1.0, ones, zeros, zr, zi);
    for (Index j = 0; j < Bk; ++j) {
      if (j == 0) {
        pr.setOnes();
        pi.setZero();
      } else {
        ssm::detail::multiply_powers(zr, zi, pr, pi);
      }
      Z.col(j).head(M) = pr;
      Z.col(j).tail(M) = pi;
    }
    const MatrixX<double> P = Z * detail::reversed_blocks(v.data() + c * v.outerStride(), 1, L, Bk);  // 2M x nb
    // sum_i z^{Bk i} P_i: block powers exactly every 32 blocks, by products with z^Bk in between.
    ssm::detail::exact_powers(lz, double(Bk), ones, zeros, zr, zi);
    for (Index i = 0; i < nb; ++i) {
      if (i % exact_every_block == 0) {
        ssm::detail::exact_powers(lz, double(Bk * i), ones, zeros, br, bi);
      } else {
        ssm::detail::multiply_powers(zr, zi, br, bi);
      }
      for (Index m = 0; m < M; ++m)
        S(m, c) += std::complex<double>(br(m), bi(m)) * std::complex<double>(P(m, i), P(M + m, i));
    }
  }
  return S;
}

/// z^s = exp(s log z) for every entry, exactly (one exp each): M x C.
inline MatrixXc<double> diagonal_power(const MatrixXc<double>& log_z, double s) {
  return (s * log_z.array()).exp().matrix();
}

/// Powers of one dense real transition matrix G (n x n), as the blocked sums need them.
struct DenseBlockPowers {
  MatrixX<double> G;        ///< n x n
  MatrixX<double> G_block;  ///< G^Bk, n x n (Bk = kStateSumBlock), by log2(Bk) squarings

  explicit DenseBlockPowers(MatrixX<double> g) : G(std::move(g)), G_block(G) {
    for (Index p = 1; p < kStateSumBlock; p *= 2) G_block = (G_block * G_block).eval();
  }

  Index size() const { return G.rows(); }

  /// x_{L-1} = G^L x0 + sum_{k < L} G^k b v[(L-1-k) stride]: the state after running the L inputs
  /// v[0], v[stride], ... through x_t = G x_{t-1} + b v_t from x0 (n entries; pass zeros for none).
  template <class T>
  VectorX<double> final_state(const VectorX<double>& b, const T* v, Index stride, Index L,
                              const VectorX<double>& x0) const {
    const Index n = size();
    if (L == 0) return x0;
    const Index Bk = kStateSumBlock, nb = (L + Bk - 1) / Bk;
    MatrixX<double> W(n, Bk);  // column j: G^j b
    W.col(0) = b;
    for (Index j = 1; j < Bk; ++j) W.col(j).noalias() = G * W.col(j - 1);
    const MatrixX<double> P = W * detail::reversed_blocks(v, stride, L, Bk);  // n x nb
    // The oldest block (i = nb - 1) is partial: it covers L - Bk (nb - 1) steps, and x0 is older still.
    VectorX<double> acc = x0;
    for (Index s = 0; s < L - Bk * (nb - 1); ++s) acc = (G * acc).eval();
    acc += P.col(nb - 1);
    for (Index i = nb - 2; i >= 0; --i) acc = (G_block * acc + P.col(i)).eval();
    return acc;
  }

  /// y[t out_stride] = c^T G^{t+1} x0 for t < L: what a start x0 adds to the outputs (c: n entries).
  template <class T>
  void free_response(const Eigen::RowVectorXd& c, const VectorX<double>& x0, Index L, T* y, Index out_stride) const {
    const Index n = size();
    if (L == 0) return;
    const Index Bk = kStateSumBlock, nb = (L + Bk - 1) / Bk;
    MatrixX<double> Ct(Bk, n);  // row j: c^T G^j
    Ct.row(0) = c;
    for (Index j = 1; j < Bk; ++j) Ct.row(j).noalias() = Ct.row(j - 1) * G;
    MatrixX<double> S(n, nb);  // column i: G^{Bk i + 1} x0
    S.col(0).noalias() = G * x0;
    for (Index i = 1; i < nb; ++i) S.col(i).noalias() = G_block * S.col(i - 1);
    const MatrixX<double> Y = Ct * S;  // Y(j, i) = y[Bk i + j]
    for (Index t = 0; t < L; ++t) y[t * out_stride] += T(Y(t % Bk, t / Bk));
  }
};

}  // namespace kernels
}  // namespace ssm
