#pragma once
/// \file complex_scan.hpp
/// The selective scan with complex A (one mode of each conjugate pair, output 2 Re(C x)), one channel
/// at a time with A, B, C and the state split in real and imaginary parts:
///
///     exp(dt A) = exp(dt Re A) (cos(dt Im A) + i sin(dt Im A))
///     x_t = exp(dt A) x_{t-1} + dt u_t B_t;     y_t = 2 Re(C_t . x_t) (+ skip, gate)
///
/// exp, cos and sin of a block of steps are computed together (Eigen's vectorised exp, the standard
/// library's cos and sin), then the recurrence runs along the block. Not the throughput target.

#include "ssm/core/types.hpp"
#include "ssm/detail/fast_math.hpp"
#include "ssm/detail/scan_dispatch.hpp"  // kScanParallelWork

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

namespace ssm::detail {

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

/// The complex kernel for one channel, NF = N when N is fixed at compile time (else Dynamic).
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

/// Complex B or C split for the kernel: channel d's N real (imaginary) parts at step t are at
/// re (im) + offset(d) + t * stride.
template <class Scalar>
struct ComplexOperand {
  const Scalar* re = nullptr;
  const Scalar* im = nullptr;
  Index stride = 0;       ///< Scalars from step t to t + 1; 0 when constant.
  bool constant = false;  ///< One vector per channel, at d N.
  Index group_size = 1;   ///< Per step: channels sharing one vector.
  Index offset(Index d, Index N) const { return constant ? d * N : (d / group_size) * N; }
};

/// A whole complex selective scan over D channels (u, delta, z, out: column d at + d * ld, contiguous
/// over time; A and the state: N x D, channel d's N values contiguous).
template <class Scalar>
struct ComplexScanProblem {
  Index L = 0, D = 0, N = 0;
  const Scalar* u = nullptr;
  Index ld_u = 0;
  const Scalar* delta = nullptr;
  Index ld_delta = 0;
  const Scalar* z = nullptr;  ///< Gate or nullptr.
  Index ld_z = 0;
  const Scalar* delta_bias = nullptr;  ///< D contiguous, or nullptr.
  const Scalar* skip = nullptr;        ///< D contiguous, or nullptr.
  bool softplus = false;
  const Scalar* A_re = nullptr;
  const Scalar* A_im = nullptr;
  ComplexOperand<Scalar> B, C;
  Scalar* x_re = nullptr;  ///< x_0 in, x_L out.
  Scalar* x_im = nullptr;
  Scalar* out = nullptr;
  Index ld_out = 0;
};

/// Runs channel d of a complex scan.
template <class Scalar>
void run_complex_channel(const ComplexScanProblem<Scalar>& p, Index d) {
  const Index N = p.N;
  const Index bo = p.B.offset(d, N), co = p.C.offset(d, N);
  ComplexScanChannel<Scalar> c;
  c.L = p.L;
  c.N = N;
  c.u = p.u + d * p.ld_u;
  c.delta = p.delta + d * p.ld_delta;
  c.delta_bias = p.delta_bias ? p.delta_bias[d] : Scalar(0);
  c.softplus = p.softplus;
  c.A_re = p.A_re + d * N;
  c.A_im = p.A_im + d * N;
  c.B_re = p.B.re + bo;
  c.B_im = p.B.im + bo;
  c.B_stride = p.B.stride;
  c.C_re = p.C.re + co;
  c.C_im = p.C.im + co;
  c.C_stride = p.C.stride;
  c.D = p.skip ? p.skip[d] : Scalar(0);
  c.z = p.z ? p.z + d * p.ld_z : nullptr;
  c.x_re = p.x_re + d * N;
  c.x_im = p.x_im + d * N;
  c.out = p.out + d * p.ld_out;
  scan_channel(c);
}

/// Runs a complex scan, channels spread across threads (OpenMP). With N > kScanBuffer a channel's
/// scratch is on the heap, and an allocation that throws must not be inside an OpenMP region (it would
/// terminate the program): those channels run on the calling thread.
template <class Scalar>
void run_complex_scan(const ComplexScanProblem<Scalar>& p) {
  if (p.N > kScanBuffer) {
    for (Index d = 0; d < p.D; ++d) run_complex_channel(p, d);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (p.D * p.N * p.L >= kScanParallelWork)
#endif
  for (Index d = 0; d < p.D; ++d) run_complex_channel(p, d);  // stack scratch only
}

}  // namespace ssm::detail
