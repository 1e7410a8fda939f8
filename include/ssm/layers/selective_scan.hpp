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
/// Layout follows the library: u, delta, z and out are L x D (rows are time). The computation is
/// per channel: each channel's state stays in registers, exp(delta A) is computed for a block of
/// steps at a time with Eigen's vectorised exp, and channels are spread across threads with OpenMP
/// when `_OPENMP` is defined.
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
#include <type_traits>
#include <vector>

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

/// One channel of a real selective scan, as raw pointers: what the kernel needs and nothing more.
/// B_t = B + t * B_stride (stride 0 for a constant B), likewise C.
template <class Scalar>
struct RealScanChannel {
  Index L = 0, N = 0;
  const Scalar* u = nullptr;      ///< L, contiguous.
  const Scalar* delta = nullptr;  ///< L, contiguous, before bias and softplus.
  Scalar delta_bias = 0;
  bool softplus = false;
  const Scalar* A = nullptr;  ///< N.
  const Scalar* B = nullptr;
  Index B_stride = 0;
  const Scalar* C = nullptr;
  Index C_stride = 0;
  Scalar D = 0;
  const Scalar* z = nullptr;  ///< L or nullptr.
  Scalar* x = nullptr;        ///< N, the state: read as x_0, written as x_L.
  Scalar* out = nullptr;      ///< L.
};

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

/// Scratch of the scan kernels: this many scalars per buffer live on the stack, so a step allocates
/// nothing. A block of max(1, kScanBuffer / N) steps is discretised at a time.
inline constexpr Index kScanBuffer = 2048;

template <class Scalar>
inline Scalar scan_delta(Scalar raw, Scalar bias, bool use_softplus) {
  const Scalar v = raw + bias;
  return use_softplus ? softplus(v) : v;
}

template <class Scalar>
inline Scalar scan_output(Scalar y, Scalar u, Scalar D, const Scalar* z, Index t) {
  y += D * u;
  return z ? y * silu(z[t]) : y;
}

/// The real kernel for a compile-time state size NF (or Eigen::Dynamic).
template <int NF, class Scalar>
void scan_channel_real(const RealScanChannel<Scalar>& c, Scalar* dA_buf, Scalar* dt_buf, Index block) {
  using Arr = Eigen::Array<Scalar, NF, 1>;
  using Mat = Eigen::Array<Scalar, NF, Eigen::Dynamic>;
  const Index N = c.N;
  const Eigen::Map<const Arr> A(c.A, N);
  Eigen::Map<Arr> state(c.x, N);
  Arr x = state;
  for (Index t0 = 0; t0 < c.L; t0 += block) {
    const Index T = std::min(block, c.L - t0);
    Eigen::Map<Mat> dA(dA_buf, N, T);
    for (Index t = 0; t < T; ++t) {
      dt_buf[t] = scan_delta(c.delta[t0 + t], c.delta_bias, c.softplus);
      dA.col(t) = A * dt_buf[t];
    }
    // One long contiguous exp: the vectorised exp runs at full throughput.
    Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>> flat(dA_buf, N * T);
    flat = flat.exp();
    for (Index t = 0; t < T; ++t) {
      const Index s = t0 + t;
      const Scalar du = dt_buf[t] * c.u[s];
      const Eigen::Map<const Arr> Bt(c.B + s * c.B_stride, N);
      const Eigen::Map<const Arr> Ct(c.C + s * c.C_stride, N);
      x = dA.col(t) * x + du * Bt;
      c.out[s] = scan_output((x * Ct).sum(), c.u[s], c.D, c.z, s);
    }
  }
  state = x;
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
    Eigen::Map<Mat> dAr(re_buf, N, T), dAi(im_buf, N, T);
    for (Index t = 0; t < T; ++t) {
      dt_buf[t] = scan_delta(c.delta[t0 + t], c.delta_bias, c.softplus);
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
      c.out[s] = scan_output(Scalar(2) * (Cr * xr - Ci * xi).sum(), c.u[s], c.D, c.z, s);
    }
  }
  state_re = xr;
  state_im = xi;
}

/// Runs one real channel, dispatching common state sizes to unrolled kernels. Allocates nothing
/// unless N > kScanBuffer.
template <class Scalar>
void scan_channel(const RealScanChannel<Scalar>& c) {
  if (c.N > kScanBuffer) {
    std::vector<Scalar> dA(std::size_t(c.N)), dt(1);
    scan_channel_real<Eigen::Dynamic>(c, dA.data(), dt.data(), 1);
    return;
  }
  alignas(64) Scalar dA[kScanBuffer];
  alignas(64) Scalar dt[kScanBuffer];
  const Index block = std::max<Index>(1, kScanBuffer / c.N);
  switch (c.N) {
    case 4: scan_channel_real<4>(c, dA, dt, block); break;
    case 8: scan_channel_real<8>(c, dA, dt, block); break;
    case 16: scan_channel_real<16>(c, dA, dt, block); break;
    case 32: scan_channel_real<32>(c, dA, dt, block); break;
    default: scan_channel_real<Eigen::Dynamic>(c, dA, dt, block); break;
  }
}

/// Runs one complex channel (see `scan_channel` for the real one).
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

/// Work (channels x states x steps) below which threads cost more than they save.
inline constexpr Index kScanParallelWork = Index(1) << 16;

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
  // State, A: N x D, one contiguous column per channel (real and imaginary parts apart if complex).
  MatrixX<Scalar> x_re(N, D), x_im, A_re(N, D), A_im;
  if constexpr (is_complex) {
    x_im.resize(N, D);
    A_re = A.real().transpose();
    A_im = A.imag().transpose();
    if (options.initial_state.size()) {
      x_re = options.initial_state.real().transpose();
      x_im = options.initial_state.imag().transpose();
    } else {
      x_re.setZero();
      x_im.setZero();
    }
  } else {
    A_re = A.transpose();
    if (options.initial_state.size()) x_re = options.initial_state.transpose();
    else x_re.setZero();
  }
  const bool has_D = options.D.size() != 0, has_bias = options.delta_bias.size() != 0, has_z = options.z.size() != 0;

#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (D * N * L >= detail::kScanParallelWork)
#endif
  for (Index d = 0; d < D; ++d) {
    const Index bo = Bk.offset(d, D), co = Ck.offset(d, D);
    if constexpr (is_complex) {
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
    } else {
      detail::RealScanChannel<Scalar> c;
      c.L = L;
      c.N = N;
      c.u = U.col(d).data();
      c.delta = Delta.col(d).data();
      c.delta_bias = has_bias ? options.delta_bias[d] : Scalar(0);
      c.softplus = options.delta_softplus;
      c.A = A_re.col(d).data();
      c.B = Bk.re.data() + bo;
      c.B_stride = Bk.stride;
      c.C = Ck.re.data() + co;
      c.C_stride = Ck.stride;
      c.D = has_D ? options.D[d] : Scalar(0);
      c.z = has_z ? options.z.col(d).data() : nullptr;
      c.x = x_re.col(d).data();
      c.out = r.out.col(d).data();
      detail::scan_channel(c);
    }
  }

  if constexpr (is_complex) {
    r.last_state.resize(D, N);
    for (Index d = 0; d < D; ++d)
      for (Index n = 0; n < N; ++n) r.last_state(d, n) = E(x_re(n, d), x_im(n, d));
  } else {
    r.last_state = x_re.transpose();
  }
  return r;
}

}  // namespace ssm
