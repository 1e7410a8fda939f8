#pragma once
/// \file scan_avx512.hpp
/// The selective scan's hottest loop written with AVX-512 intrinsics: fp32, 16 channels in the
/// lanes of one register, B and C shared by all lanes (Mamba's per-step and grouped B / C).
///
/// For T steps t and nc states n (lanes w = 0 .. 15):
///
///     x[n][w] = exp(dt[t][w] A[n][w]) x[n][w] + du[t][w] B[t b_stride + n]
///     y[t][w] = sum_n C[t c_stride + n] x[n][w]
///
/// with dt, du and y stored [t][w], A and x stored [n][w] (16 floats per row, 64-byte aligned);
/// and, per channel along time, softplus of the step sizes and the SiLU gate of the outputs.
///
/// Why separate kernels: the portable exp (`detail::fast_exp`) builds 2^k in the exponent bits and
/// then needs three selects for overflow, underflow and NaN; here vscalefps scales by 2^k and gets
/// all three right by itself, and vgetexpps / vgetmantps split log's argument. With N = 16 the
/// per-channel work (softplus, gate) is a third of the scan, so it matters as much as the
/// recurrence. Full registers use plain loads and stores; only a last partial register is masked
/// (masked stores are slow on some CPUs). Only included and called on x86-64 with GCC or Clang,
/// from the AVX-512 build of the lane kernel after a run-time CPU check.

#include <immintrin.h>

#include "ssm/core/types.hpp"

// GCC 12's AVX-512 min / max intrinsics pass an "undefined" register as the pass-through operand,
// which -Wmaybe-uninitialized reports at every use; the operand is never read (the mask is all ones).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ssm::detail {

#define SSM_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx2,fma")))

/// exp of 16 floats: k = round(v log2 e), r = v - k ln 2 (in two parts, so r is exact to float
/// precision), exp(r) by the same Cephes polynomial as `fast_exp` (degree 7, about 1 ulp on
/// |r| <= ln2 / 2), then 2^k by vscalefps. v is first clamped to [-104, 89], where exp is already 0
/// (below the smallest subnormal) or +inf; the clamp keeps +-inf out of the reduction, and its
/// operand order lets a NaN through, which the rest propagates.
SSM_AVX512_TARGET inline __attribute__((always_inline)) __m512 exp_avx512(__m512 v) {
  const __m512 clamped = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), v));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

/// softplus(v) = log(1 + e^v) of 16 floats, and v itself above 20 (PyTorch's threshold): the same
/// arithmetic as the portable `scan_softplus` (e = exp(min(v, 20)), u = 1 + e, log u from u's
/// exponent and the Cephes polynomial of its mantissa in [sqrt(1/2), sqrt(2)), minus the rounding
/// of 1 + e, ((u - 1) - e) / u), with exponent and mantissa read by vgetexpps / vgetmantps.
SSM_AVX512_TARGET inline __attribute__((always_inline)) __m512 softplus_avx512(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp_avx512(_mm512_min_ps(_mm512_set1_ps(20.0f), v));  // operand order: NaN passes
  const __m512 u = _mm512_add_ps(one, e);
  __m512 m = _mm512_getmant_ps(u, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);  // u = m 2^k, m in [1, 2)
  __m512 k = _mm512_getexp_ps(u);
  const __mmask16 high = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm512_mask_mul_ps(m, high, m, _mm512_set1_ps(0.5f));
  k = _mm512_mask_add_ps(k, high, k, one);
  const __m512 x = _mm512_sub_ps(m, one);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 y = _mm512_set1_ps(7.0376836292E-2f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.1514610310E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.1676998740E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.2420140846E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.4249322787E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.6668057665E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(2.0000714765E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-2.4999993993E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(3.3333331174E-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, x), z);
  y = _mm512_fmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
  const __m512 log_u = _mm512_fmadd_ps(k, _mm512_set1_ps(0.693359375f), _mm512_add_ps(x, y));
  const __m512 rounding = _mm512_div_ps(_mm512_sub_ps(_mm512_sub_ps(u, one), e), u);
  const __mmask16 linear = _mm512_cmp_ps_mask(v, _mm512_set1_ps(20.0f), _CMP_GT_OQ);
  return _mm512_mask_blend_ps(linear, _mm512_sub_ps(log_u, rounding), v);
}

/// dt[t] = softplus(delta[t] + bias) for t < T (the last partial register masked).
SSM_AVX512_TARGET inline void softplus_deltas_avx512(const float* delta, Index T, float bias, float* dt) {
  const __m512 b = _mm512_set1_ps(bias);
  Index t = 0;
  for (; t + 16 <= T; t += 16) _mm512_storeu_ps(dt + t, softplus_avx512(_mm512_add_ps(_mm512_loadu_ps(delta + t), b)));
  if (t < T) {
    const __mmask16 live = __mmask16((1u << (T - t)) - 1u);
    _mm512_mask_storeu_ps(dt + t, live, softplus_avx512(_mm512_add_ps(_mm512_maskz_loadu_ps(live, delta + t), b)));
  }
}

/// out[t] = (out[t] + D u[t]) silu(z[t]), silu(z) = z / (1 + e^-z), for t < T (masked tail).
SSM_AVX512_TARGET inline void gate_outputs_avx512(const float* u, float D, const float* z, Index T, float* out) {
  const __m512 d = _mm512_set1_ps(D), one = _mm512_set1_ps(1.0f);
  auto gated = [&](__m512 zt, __m512 ut, __m512 yt) SSM_AVX512_TARGET {
    const __m512 silu = _mm512_div_ps(zt, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), zt))));
    return _mm512_mul_ps(_mm512_fmadd_ps(d, ut, yt), silu);
  };
  Index t = 0;
  for (; t + 16 <= T; t += 16)
    _mm512_storeu_ps(out + t, gated(_mm512_loadu_ps(z + t), _mm512_loadu_ps(u + t), _mm512_loadu_ps(out + t)));
  if (t < T) {
    const __mmask16 live = __mmask16((1u << (T - t)) - 1u);
    _mm512_mask_storeu_ps(out + t, live,
                          gated(_mm512_maskz_loadu_ps(live, z + t), _mm512_maskz_loadu_ps(live, u + t),
                                _mm512_maskz_loadu_ps(live, out + t)));
  }
}

/// out[i] = exp_avx512(in[i]) for i < count (the last partial register masked): the kernel's exp
/// on its own, so that it can be checked against std::exp.
SSM_AVX512_TARGET inline void exp_avx512_array(const float* in, float* out, Index count) {
  for (Index i = 0; i < count; i += 16) {
    const Index rest = count - i;
    const __mmask16 live = rest >= 16 ? __mmask16(0xffff) : __mmask16((1u << rest) - 1u);
    _mm512_mask_storeu_ps(out + i, live, exp_avx512(_mm512_maskz_loadu_ps(live, in + i)));
  }
}

/// One state n of one step: x = exp(dt A) x + du b (16 lanes, in place), acc += c x.
SSM_AVX512_TARGET inline __attribute__((always_inline)) void update_state_avx512(__m512 dtv, __m512 duv, const float* A,
                                                                               float* x, float b, float c,
                                                                               __m512& acc) {
  const __m512 decay = exp_avx512(_mm512_mul_ps(dtv, _mm512_load_ps(A)));
  const __m512 xv = _mm512_fmadd_ps(decay, _mm512_load_ps(x), _mm512_mul_ps(duv, _mm512_set1_ps(b)));
  _mm512_store_ps(x, xv);
  acc = _mm512_fmadd_ps(_mm512_set1_ps(c), xv, acc);
}

/// The recurrence above for one lane group of 16 channels over T steps; x is read and written in
/// place. Two accumulators (even and odd n) halve the dependent chain of additions into y.
SSM_AVX512_TARGET inline void scan_block_shared_avx512(const float* dt, const float* du, const float* A, float* x,
                                                       Index nc, const float* B, Index b_stride, const float* C,
                                                       Index c_stride, Index T, float* y) {
  for (Index t = 0; t < T; ++t) {
    const __m512 dtv = _mm512_load_ps(dt + t * 16);
    const __m512 duv = _mm512_load_ps(du + t * 16);
    const float* Bt = B + t * b_stride;
    const float* Ct = C + t * c_stride;
    __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
    Index n = 0;
    for (; n + 1 < nc; n += 2) {
      update_state_avx512(dtv, duv, A + n * 16, x + n * 16, Bt[n], Ct[n], even);
      update_state_avx512(dtv, duv, A + (n + 1) * 16, x + (n + 1) * 16, Bt[n + 1], Ct[n + 1], odd);
    }
    if (n < nc) update_state_avx512(dtv, duv, A + n * 16, x + n * 16, Bt[n], Ct[n], even);
    _mm512_store_ps(y + t * 16, _mm512_add_ps(even, odd));
  }
}

#undef SSM_AVX512_TARGET

}  // namespace ssm::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
