#pragma once
/// \file diagonal_scan.hpp
/// The engine of every diagonal state space layer: M independent complex linear recurrences
///
///     x_t[m] = a_t[m] x_{t-1}[m] + b_t[m],   t = 0 .. L-1,   x_{-1} = the given initial state,
///
/// over a whole sequence, either time-invariant (a_t = a, one value per mode) or time-varying
/// (a is L x M). Layout follows the library: b and the states are L x M, column-major (rows are
/// time steps, columns are modes), so each mode's sequence is contiguous. The engine works in place:
/// b comes in, the states x_t go out, and the state vector comes in as x_{-1} and leaves as x_{L-1}.
///
/// Two methods, same answer within rounding:
/// - sequential: one pass, modes interleaved eight at a time so the multiply-add chains overlap;
/// - chunked (parallel in time): the steps are split into P blocks. Each block's map
///   x -> A_p x + s_p (A_p = product of its a_t, s_p = its final state from zero) is found
///   independently; the maps are composed left to right with the associative operator
///   (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), giving every block's true initial state; then every
///   block is rescanned from its initial state. Twice the arithmetic of one pass, but P-way parallel
///   with OpenMP (when `_OPENMP` is defined): worth it for long sequences with few modes, where there
///   is no parallelism across channels to use.
///
/// Products are written out in real arithmetic (no NaN recovery of std::complex's operator*, which
/// compilers call out of line); a NaN in the input propagates to the outputs as usual.

#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <complex>
#include <cmath>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ssm {

/// How `diagonal_scan` runs through time.
enum class ScanMethod {
  automatic,   ///< chunked when OpenMP has >= 4 threads to give (outside a parallel region) and L >= 8192, else sequential
  sequential,  ///< one pass, step after step
  chunked,     ///< parallel in time over blocks (see the file comment); also correct without OpenMP
};

/// The states of a whole scan and its final state.
template <class T>
struct DiagonalScanResult {
  MatrixXc<T> states;       ///< L x M: row t is x_t
  VectorXc<T> final_state;  ///< M: x_{L-1} (the initial state when L = 0)
};

namespace detail {

/// Real scalar of a (complex) Eigen expression.
template <class Derived>
using real_scalar_t = typename Eigen::NumTraits<typename Derived::Scalar>::Real;

/// Below this many steps, or with fewer threads, the automatic method never splits time.
inline constexpr Index scan_parallel_min_length = 8192;
inline constexpr int scan_parallel_min_threads = 4;

/// Scans rows [t0, t1) of modes [m0, m1) from the states `s` (updated to the last step).
/// `a` points at the M mode factors (Varying = false) or an L x M column-major array with leading
/// dimension `lda` (Varying = true). `x` is L x M with leading dimension `ldx`; Store = false only
/// runs the recurrence (reads x, writes nothing but `s`).
template <class T, bool Varying, bool Store>
void scan_rows(const std::complex<T>* a, Index lda, std::complex<T>* x, Index ldx, Index t0, Index t1, Index m0,
               Index m1, std::complex<T>* s) {
  constexpr Index G = 8;  // modes advanced together: eight independent multiply-add chains
  Index m = m0;
  for (; m + G <= m1; m += G) {
    T sr[G], si[G], ar[G], ai[G];
    for (Index g = 0; g < G; ++g) {
      sr[g] = s[m + g].real();
      si[g] = s[m + g].imag();
      if (!Varying) {
        ar[g] = a[m + g].real();
        ai[g] = a[m + g].imag();
      }
    }
    for (Index t = t0; t < t1; ++t) {
      for (Index g = 0; g < G; ++g) {
        if (Varying) {
          const std::complex<T> at = a[t + (m + g) * lda];
          ar[g] = at.real();
          ai[g] = at.imag();
        }
        std::complex<T>& xt = x[t + (m + g) * ldx];
        ssm::cmuladd<T>(ar[g], ai[g], sr[g], si[g], xt.real(), xt.imag());
        if (Store) xt = std::complex<T>(sr[g], si[g]);
      }
    }
    for (Index g = 0; g < G; ++g) s[m + g] = std::complex<T>(sr[g], si[g]);
  }
  for (; m < m1; ++m) {
    T sr = s[m].real(), si = s[m].imag();
    const T ar0 = a[m].real(), ai0 = a[m].imag();
    for (Index t = t0; t < t1; ++t) {
      T ar = ar0, ai = ai0;
      if (Varying) {
        ar = a[t + m * lda].real();
        ai = a[t + m * lda].imag();
      }
      std::complex<T>& xt = x[t + m * ldx];
      ssm::cmuladd<T>(ar, ai, sr, si, xt.real(), xt.imag());
      if (Store) xt = std::complex<T>(sr, si);
    }
    s[m] = std::complex<T>(sr, si);
  }
}

/// A wider type than T for the block transitions: double for float, long double for double.
template <class T>
using wider_t = std::conditional_t<std::is_same_v<T, float>, double, long double>;

/// a^n = exp(n log a), in the wider type and rounded once to T. (Repeated squaring is not enough: each
/// squaring doubles the relative error already there, so it ends at ~n eps, where the sequential scan's
/// own error grows only like eps sqrt(n).)
template <class T>
std::complex<T> power(std::complex<T> a, Index n) {
  using W = wider_t<T>;
  if (a == std::complex<T>(0, 0)) return n == 0 ? std::complex<T>(1, 0) : a;
  return std::complex<T>(std::exp(W(n) * std::log(std::complex<W>(a))));
}

inline int scan_threads() {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

template <class T, bool Varying>
void scan_chunked(const std::complex<T>* a, Index lda, std::complex<T>* x, Index ldx, Index L, Index M,
                  std::complex<T>* state, Index blocks) {
  const Index P = std::max<Index>(1, std::min<Index>(blocks, L));
  // Block p covers rows [start(p), start(p + 1)).
  auto start = [L, P](Index p) { return (L / P) * p + std::min(p, L % P); };
  std::vector<std::complex<T>> transition(std::size_t(P * M)), local(std::size_t(P * M), std::complex<T>(0, 0));
  // Phase 1: each block's map x -> A_p x + s_p, independently.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (P > 1 && scan_threads() > 1)
#endif
  for (Index p = 0; p < P; ++p) {
    const Index t0 = start(p), t1 = start(p + 1);
    std::complex<T>* s = local.data() + p * M;
    std::complex<T>* A = transition.data() + p * M;
    scan_rows<T, Varying, false>(a, lda, x, ldx, t0, t1, 0, M, s);
    for (Index m = 0; m < M; ++m) {
      if (Varying) {
        std::complex<wider_t<T>> prod(1, 0);  // n products, each rounded in the wider type
        for (Index t = t0; t < t1; ++t) prod = ssm::cmul(prod, std::complex<wider_t<T>>(a[t + m * lda]));
        A[m] = std::complex<T>(prod);
      } else {
        A[m] = power(a[m], t1 - t0);
      }
    }
  }
  // Phase 2: compose the maps left to right; `local` becomes each block's initial state.
  for (Index m = 0; m < M; ++m) {
    std::complex<T> carry = state[m];
    for (Index p = 0; p < P; ++p) {
      const std::complex<T> next = ssm::cmuladd(transition[std::size_t(p * M + m)], carry, local[std::size_t(p * M + m)]);
      local[std::size_t(p * M + m)] = carry;
      carry = next;
    }
  }
  // Phase 3: rescan every block from its true initial state, storing the states.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (P > 1 && scan_threads() > 1)
#endif
  for (Index p = 0; p < P; ++p) {
    scan_rows<T, Varying, true>(a, lda, x, ldx, start(p), start(p + 1), 0, M, local.data() + p * M);
  }
  // The last block's final state is x_{L-1}, rescanned exactly as the stored states were.
  for (Index m = 0; m < M; ++m) state[m] = local[std::size_t((P - 1) * M + m)];
}

template <class T, bool Varying>
void scan_dispatch(const std::complex<T>* a, Index lda, std::complex<T>* x, Index ldx, Index L, Index M,
                   std::complex<T>* state, ScanMethod method, Index blocks) {
  if (L == 0 || M == 0) return;
  if (method == ScanMethod::automatic) {
    const int threads = scan_threads();
    // Two passes over P blocks on P threads: a clear gain only from about 4 threads on.
    method = (threads >= scan_parallel_min_threads && L >= scan_parallel_min_length) ? ScanMethod::chunked
                                                                                      : ScanMethod::sequential;
    if (blocks <= 0) blocks = threads;
  }
  if (method == ScanMethod::sequential) {
    scan_rows<T, Varying, true>(a, lda, x, ldx, 0, L, 0, M, state);
    return;
  }
  if (blocks <= 0) blocks = std::max(2, scan_threads());
  scan_chunked<T, Varying>(a, lda, x, ldx, L, M, state, blocks);
}

inline void check_scan_options(ScanMethod method, Index blocks, const char* where) {
  check(method == ScanMethod::automatic || method == ScanMethod::sequential || method == ScanMethod::chunked, where,
        "method", "automatic, sequential or chunked", "an invalid value");
  check(blocks >= 0, where, "blocks", ">= 0 (0: one per thread)", ssm::detail::concat(blocks));
}

}  // namespace detail

/// Time-invariant scan in place: x_t = a .* x_{t-1} + b_t for t = 0 .. L-1.
/// - `a`: M complex mode factors (any vector expression);
/// - `x`: L x M; holds b on entry and the states x_t on return (row t);
/// - `state`: M; holds x_{-1} on entry and x_{L-1} on return (unchanged when L = 0);
/// - `method`, `blocks`: see `ScanMethod`; blocks = 0 lets the chunked method use one block per thread.
/// Throws ssm::error if the sizes disagree. Allocates only for the chunked method (P x M values).
template <class DA>
void diagonal_scan_inplace(const Eigen::MatrixBase<DA>& a, Eigen::Ref<MatrixXc<detail::real_scalar_t<DA>>> x,
                           Eigen::Ref<VectorXc<detail::real_scalar_t<DA>>> state,
                           ScanMethod method = ScanMethod::automatic, Index blocks = 0) {
  using T = detail::real_scalar_t<DA>;
  static_assert(is_supported_scalar_v<T>, "diagonal_scan: a must hold std::complex<float> or std::complex<double>");
  static_assert(Eigen::NumTraits<typename DA::Scalar>::IsComplex, "diagonal_scan: a must be complex");
  const char* where = "diagonal_scan_inplace";
  check_size(a, x.cols(), where, "a", "one factor per mode (column of x)");
  check_size(state, x.cols(), where, "state", "one value per mode (column of x)");
  detail::check_scan_options(method, blocks, where);
  const VectorXc<T> factors = a;  // M values: a contiguous copy costs nothing next to the scan
  detail::scan_dispatch<T, false>(factors.data(), 0, x.data(), x.outerStride(), x.rows(), x.cols(), state.data(),
                                  method, blocks);
}

/// Time-varying scan in place: x_t = a_t .* x_{t-1} + b_t, with `a` L x M (row t is a_t) and
/// `x`, `state` as in `diagonal_scan_inplace`. Throws ssm::error if the shapes disagree.
template <class DA>
void diagonal_scan_varying_inplace(const Eigen::MatrixBase<DA>& a, Eigen::Ref<MatrixXc<detail::real_scalar_t<DA>>> x,
                                   Eigen::Ref<VectorXc<detail::real_scalar_t<DA>>> state,
                                   ScanMethod method = ScanMethod::automatic, Index blocks = 0) {
  using T = detail::real_scalar_t<DA>;
  static_assert(is_supported_scalar_v<T>, "diagonal_scan: a must hold std::complex<float> or std::complex<double>");
  static_assert(Eigen::NumTraits<typename DA::Scalar>::IsComplex, "diagonal_scan: a must be complex");
  const char* where = "diagonal_scan_varying_inplace";
  check_shape(a, x.rows(), x.cols(), where, "a", "L x M, the shape of x");
  check_size(state, x.cols(), where, "state", "one value per mode (column of x)");
  detail::check_scan_options(method, blocks, where);
  const Eigen::Ref<const MatrixXc<T>> factors(a.derived());  // no copy when `a` is already column-major
  detail::scan_dispatch<T, true>(factors.data(), factors.outerStride(), x.data(), x.outerStride(), x.rows(), x.cols(),
                                 state.data(), method, blocks);
}

/// x_t = a .* x_{t-1} + b_t from x_{-1} = `initial` (M): returns the L x M states and x_{L-1}.
/// `a` has M entries, `b` is L x M.
template <class DA, class DB, class DX>
DiagonalScanResult<detail::real_scalar_t<DA>> diagonal_scan(const Eigen::MatrixBase<DA>& a,
                                                            const Eigen::MatrixBase<DB>& b,
                                                            const Eigen::MatrixBase<DX>& initial,
                                                            ScanMethod method = ScanMethod::automatic,
                                                            Index blocks = 0) {
  using T = detail::real_scalar_t<DA>;
  check_size(initial, b.cols(), "diagonal_scan", "initial", "one value per mode (column of b)");
  DiagonalScanResult<T> r{b.template cast<std::complex<T>>(), initial.template cast<std::complex<T>>()};
  diagonal_scan_inplace(a, r.states, r.final_state, method, blocks);
  return r;
}

/// x_t = a_t .* x_{t-1} + b_t from x_{-1} = `initial` (M): `a` and `b` are L x M; returns the states and x_{L-1}.
template <class DA, class DB, class DX>
DiagonalScanResult<detail::real_scalar_t<DA>> diagonal_scan_varying(const Eigen::MatrixBase<DA>& a,
                                                                    const Eigen::MatrixBase<DB>& b,
                                                                    const Eigen::MatrixBase<DX>& initial,
                                                                    ScanMethod method = ScanMethod::automatic,
                                                                    Index blocks = 0) {
  using T = detail::real_scalar_t<DA>;
  check_size(initial, b.cols(), "diagonal_scan_varying", "initial", "one value per mode (column of b)");
  DiagonalScanResult<T> r{b.template cast<std::complex<T>>(), initial.template cast<std::complex<T>>()};
  diagonal_scan_varying_inplace(a, r.states, r.final_state, method, blocks);
  return r;
}

}  // namespace ssm
