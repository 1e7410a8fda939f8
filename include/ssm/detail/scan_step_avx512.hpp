#pragma once
/// \file scan_step_avx512.hpp
/// The selective scan over a single step (L = 1: a recurrent layer's `step`), fp32 with AVX-512, 16
/// channels in the lanes of one register and B, C shared by them (Mamba's per-step B and C):
///
///     dt[w] = softplus(delta[w] + bias[w]),  du[w] = dt[w] u[w]
///     x[n][w] = exp(dt[w] A[n][w]) x[n][w] + du[w] B[n],   y[w] = sum_n C[n] x[n][w]
///     out[w] = (y[w] + D[w] u[w]) silu(z[w])
///
/// Why its own kernel: the lane kernel (scan_lanes.hpp) is built for sequences. It copies A and the
/// state into its [n][w] layout and back, and vectorises softplus and the gate along each channel's
/// time; over one step those copies are scalar loops over all D N entries and the time vectors have
/// one live element, so a step cost about ten times the per-entry work of a long scan. Here everything
/// is a vector over channels, read where it lies, which needs the state and A with the channels
/// contiguous for each n (x_ld_d = A_ld_d = 1) and u, delta, z and out with the channels contiguous.
///
/// The arithmetic is the lane kernel's, operation for operation (exp_avx512, softplus_avx512, the same
/// fused multiply-adds, the state sums in chunks of kLaneStackStates with even and odd accumulators),
/// so a step gives the bits a one-step sequence gives.

#include <immintrin.h>

#include "ssm/core/types.hpp"
#include "ssm/detail/scan_avx512.hpp"
#include "ssm/detail/scan_lanes.hpp"

#include <algorithm>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see scan_avx512.hpp
#endif

namespace ssm::detail {

#define SSM_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx2,fma")))

/// True when `scan_step_avx512` can run p: one step, the layouts above, B and C per step or grouped.
inline bool scan_step_fits(const RealScanProblem<float>& p) {
  const bool contiguous = p.ld_u == 1 && p.ld_delta == 1 && p.ld_out == 1 && (p.z == nullptr || p.ld_z == 1);
  return p.L == 1 && contiguous && p.x_ld_d == 1 && p.A_ld_d == 1 && !p.B.constant && !p.C.constant;
}

/// The step for channels d0 .. d0 + 15 (lanes past D masked off). B and C must be shared by the
/// group's lanes (offset(d0) == offset(last lane)); the caller checks.
SSM_AVX512_TARGET inline void scan_step_avx512(const RealScanProblem<float>& p, Index d0) {
  const Index lanes = std::min<Index>(16, p.D - d0);
  const __mmask16 live = lanes == 16 ? __mmask16(0xffff) : __mmask16((1u << lanes) - 1u);
  auto load = [&](const float* v) SSM_AVX512_TARGET { return _mm512_maskz_loadu_ps(live, v); };

  __m512 dtv = load(p.delta + d0);
  if (p.delta_bias) dtv = _mm512_add_ps(dtv, load(p.delta_bias + d0));
  else dtv = _mm512_add_ps(dtv, _mm512_setzero_ps());  // the lane kernel adds a zero bias too
  if (p.softplus) dtv = softplus_avx512(dtv);
  const __m512 uv = load(p.u + d0);
  const __m512 duv = _mm512_mul_ps(dtv, uv);

  const float* B = p.B.data + p.B.offset(d0, p.N);
  const float* C = p.C.data + p.C.offset(d0, p.N);
  __m512 y = _mm512_setzero_ps();
  for (Index n0 = 0; n0 < p.N; n0 += kLaneStackStates) {
    const Index nc = std::min(kLaneStackStates, p.N - n0);
    __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
    auto update = [&](Index n, __m512& acc) SSM_AVX512_TARGET {
      const float* a = p.A + n * p.A_ld_n + d0;
      float* x = p.x + n * p.x_ld_n + d0;
      const __m512 decay = exp_avx512(_mm512_mul_ps(dtv, load(a)));
      const __m512 xv = _mm512_fmadd_ps(decay, load(x), _mm512_mul_ps(duv, _mm512_set1_ps(B[n])));
      _mm512_mask_storeu_ps(x, live, xv);
      acc = _mm512_fmadd_ps(_mm512_set1_ps(C[n]), xv, acc);
    };
    Index n = n0;
    for (; n + 1 < n0 + nc; n += 2) {
      update(n, even);
      update(n + 1, odd);
    }
    if (n < n0 + nc) update(n, even);
    const __m512 chunk = _mm512_add_ps(even, odd);
    y = n0 == 0 ? chunk : _mm512_add_ps(y, chunk);
  }

  const __m512 skip = p.skip ? load(p.skip + d0) : _mm512_setzero_ps();
  __m512 out = _mm512_fmadd_ps(skip, uv, y);
  if (p.z) {
    const __m512 z = load(p.z + d0);
    const __m512 silu =
        _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), z))));
    out = _mm512_mul_ps(out, silu);
  }
  _mm512_mask_storeu_ps(p.out + d0, live, out);
}

#undef SSM_AVX512_TARGET

}  // namespace ssm::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
