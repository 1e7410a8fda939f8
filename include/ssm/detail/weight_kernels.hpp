#pragma once
/// \file weight_kernels.hpp
/// Matrix-vector products y = W x with W in a compact storage format (core/weight_matrix.hpp), every
/// product and sum in the scalar T of x and y (float for float models):
///
///     y[m] = sum_k w(m, k) x[k],   m = 0 .. M - 1
///
/// where w(m, k) is the stored weight decoded exactly: a bfloat16 or IEEE half value, or q s with q an
/// int8 and s the float scale of its block of 32 weights along k. The weights are stored row-major
/// (M rows of K), 16-bit ones densely (row stride K), int8 ones with each row padded with zeros to a
/// whole number of blocks (row stride ceil(K / 32) 32) and the scales as an M x ceil(K / 32) row-major
/// array.
///
/// Decoding is bound by reading the weights, not by arithmetic: per 16 weights the AVX-512 kernels do one
/// load, one or two conversions (bfloat16: zero-extend and shift by 16, which is exact; half: vcvtph2ps;
/// int8: sign-extend and convert) and one fused multiply-add, a few cycles per 32 or 16 bytes read, well
/// above one core's memory bandwidth (bench_mamba's BM_WeightGemv measures both). The products are those
/// of the decoded weights with x in full precision; the CPU's BF16 dot product (vdpbf16ps) and VNNI
/// (vpdpbusd) instructions are not used because they multiply x rounded to bfloat16 or quantised to int8,
/// which would add an error the memory-bound kernel has no need for.
///
/// With GCC or Clang on x86-64 the float kernels are also compiled for AVX-512 (F, BW, VL) and chosen at
/// run time when the CPU has it; otherwise, and for double, a portable loop runs (decoding a few hundred
/// weights at a time into a buffer on the stack and summing with Eigen).

#include "ssm/core/number_formats.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SSM_NO_RUNTIME_DISPATCH)
#define SSM_WEIGHT_DISPATCH 1
#include <immintrin.h>
#endif

namespace ssm::detail {

/// Weights per int8 block (one scale each).
inline constexpr Index kQ8Block = 32;

/// Stored weight -> T, exactly.
template <class T>
inline T decode_bf16(std::uint16_t h) { return T(bfloat16_to_float(h)); }
template <class T>
inline T decode_f16(std::uint16_t h) { return T(half_to_float(h)); }

/// The portable product: each row decoded `chunk` weights at a time by decode(row, k0, count, out) and
/// summed with Eigen. y[m] = sum over the row's chunks of their dot products with x.
template <class T, class Decode>
void gemv_portable(Index M, Index K, const T* x, T* y, const Decode& decode) {
  constexpr Index chunk = 256;
  T buffer[chunk];
  for (Index m = 0; m < M; ++m) {
    T sum = 0;
    for (Index k0 = 0; k0 < K; k0 += chunk) {
      const Index n = std::min(chunk, K - k0);
      decode(m, k0, n, buffer);
      sum += Eigen::Map<const VectorX<T>>(buffer, n).dot(Eigen::Map<const VectorX<T>>(x + k0, n));
    }
    y[m] = sum;
  }
}

#ifdef SSM_WEIGHT_DISPATCH
#define SSM_AVX512_WEIGHTS __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

/// Caps the instruction set of the float kernels (0: portable, 1 and up: AVX-512 where the CPU has it);
/// -1, the default, means no cap. For tests, which run both kernels on one machine.
inline int weight_isa_cap = -1;

/// True when the AVX-512 kernels run: the CPU has AVX-512 F, BW, VL and DQ, and no cap forbids them.
inline bool weight_kernels_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
  }();
  return has && weight_isa_cap != 0;
}

/// 16 stored 16-bit weights (the first `mask` bits' lanes; the others 0) as floats.
template <bool Bfloat16>
SSM_AVX512_WEIGHTS inline __m512 load16_as_float(const std::uint16_t* p, __mmask16 mask) {
  const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
  if constexpr (Bfloat16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  else return _mm512_cvtph_ps(h);
}

/// y = W x for 16-bit W (M x K row-major), four rows at a time so that each x packet serves four rows.
template <bool Bfloat16>
SSM_AVX512_WEIGHTS void gemv16_avx512(const std::uint16_t* w, Index M, Index K, const float* x, float* y) {
  const Index full = K / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (K - full)) - 1u);
  Index m = 0;
  for (; m + 4 <= M; m += 4) {
    const std::uint16_t* r = w + m * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (Index k = 0; k < full; k += 16) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      a0 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + k, 0xffff), xv, a0);
      a1 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + K + k, 0xffff), xv, a1);
      a2 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + 2 * K + k, 0xffff), xv, a2);
      a3 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + 3 * K + k, 0xffff), xv, a3);
    }
    if (tail) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + full);
      a0 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + full, tail), xv, a0);
      a1 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + K + full, tail), xv, a1);
      a2 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + 2 * K + full, tail), xv, a2);
      a3 = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + 3 * K + full, tail), xv, a3);
    }
    y[m] = _mm512_reduce_add_ps(a0);
    y[m + 1] = _mm512_reduce_add_ps(a1);
    y[m + 2] = _mm512_reduce_add_ps(a2);
    y[m + 3] = _mm512_reduce_add_ps(a3);
  }
  for (; m < M; ++m) {
    const std::uint16_t* r = w + m * K;
    __m512 a = _mm512_setzero_ps();
    for (Index k = 0; k < full; k += 16)
      a = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + k, 0xffff), _mm512_loadu_ps(x + k), a);
    if (tail) a = _mm512_fmadd_ps(load16_as_float<Bfloat16>(r + full, tail), _mm512_maskz_loadu_ps(tail, x + full), a);
    y[m] = _mm512_reduce_add_ps(a);
  }
}

/// Block j of an int8 row (32 weights from q) against x packets x0, x1, into acc with the block's scale:
/// acc += s (q[0 .. 15] x0 + q[16 .. 31] x1).
SSM_AVX512_WEIGHTS inline __m512 q8_block(const std::int8_t* q, __m512 x0, __m512 x1, float s, __m512 acc) {
  const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
  const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16))));
  return _mm512_fmadd_ps(_mm512_fmadd_ps(w1, x1, _mm512_mul_ps(w0, x0)), _mm512_set1_ps(s), acc);
}

/// y = W x for int8 W: rows of `stride` = ceil(K / 32) 32 int8 (zero-padded past K), scales M x
/// (stride / 32). x is read only up to K (the last block's x packets are masked; its padded weights are 0).
SSM_AVX512_WEIGHTS inline void gemv_q8_avx512(const std::int8_t* q, const float* scales, Index M, Index K, Index stride,
                                             const float* x, float* y) {
  const Index blocks = stride / kQ8Block, whole = K / kQ8Block;
  const Index rest = K - whole * kQ8Block;  // 0 .. 31 weights of x in the last, partial block
  const __mmask16 lo = __mmask16(rest >= 16 ? 0xffffu : (1u << rest) - 1u);
  const __mmask16 hi = __mmask16(rest > 16 ? (1u << (rest - 16)) - 1u : 0u);
  Index m = 0;
  for (; m + 4 <= M; m += 4) {
    const std::int8_t* r = q + m * stride;
    const float* s = scales + m * blocks;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (Index j = 0; j < whole; ++j) {
      const Index k = j * kQ8Block;
      const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
      a0 = q8_block(r + k, x0, x1, s[j], a0);
      a1 = q8_block(r + stride + k, x0, x1, s[blocks + j], a1);
      a2 = q8_block(r + 2 * stride + k, x0, x1, s[2 * blocks + j], a2);
      a3 = q8_block(r + 3 * stride + k, x0, x1, s[3 * blocks + j], a3);
    }
    if (rest) {
      const Index k = whole * kQ8Block;
      const __m512 x0 = _mm512_maskz_loadu_ps(lo, x + k), x1 = _mm512_maskz_loadu_ps(hi, x + k + 16);
      a0 = q8_block(r + k, x0, x1, s[whole], a0);
      a1 = q8_block(r + stride + k, x0, x1, s[blocks + whole], a1);
      a2 = q8_block(r + 2 * stride + k, x0, x1, s[2 * blocks + whole], a2);
      a3 = q8_block(r + 3 * stride + k, x0, x1, s[3 * blocks + whole], a3);
    }
    y[m] = _mm512_reduce_add_ps(a0);
    y[m + 1] = _mm512_reduce_add_ps(a1);
    y[m + 2] = _mm512_reduce_add_ps(a2);
    y[m + 3] = _mm512_reduce_add_ps(a3);
  }
  for (; m < M; ++m) {
    const std::int8_t* r = q + m * stride;
    const float* s = scales + m * blocks;
    __m512 a = _mm512_setzero_ps();
    for (Index j = 0; j < whole; ++j)
      a = q8_block(r + j * kQ8Block, _mm512_loadu_ps(x + j * kQ8Block), _mm512_loadu_ps(x + j * kQ8Block + 16), s[j], a);
    if (rest) {
      const Index k = whole * kQ8Block;
      a = q8_block(r + k, _mm512_maskz_loadu_ps(lo, x + k), _mm512_maskz_loadu_ps(hi, x + k + 16), s[whole], a);
    }
    y[m] = _mm512_reduce_add_ps(a);
  }
}
#undef SSM_AVX512_WEIGHTS
#endif  // SSM_WEIGHT_DISPATCH

/// y = W x for 16-bit W (M x K row-major; bfloat16 when `bfloat16`, else IEEE half).
template <class T>
void gemv16(bool bfloat16, const std::uint16_t* w, Index M, Index K, const T* x, T* y) {
#ifdef SSM_WEIGHT_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (weight_kernels_avx512()) {
      if (bfloat16) gemv16_avx512<true>(w, M, K, x, y);
      else gemv16_avx512<false>(w, M, K, x, y);
      return;
    }
  }
#endif
  gemv_portable<T>(M, K, x, y, [&](Index m, Index k0, Index n, T* out) {
    const std::uint16_t* r = w + m * K + k0;
    if (bfloat16) for (Index i = 0; i < n; ++i) out[i] = decode_bf16<T>(r[i]);
    else for (Index i = 0; i < n; ++i) out[i] = decode_f16<T>(r[i]);
  });
}

/// y = W x for int8 W in blocks of 32 (layout in the file comment).
template <class T>
void gemv_q8(const std::int8_t* q, const float* scales, Index M, Index K, Index stride, const T* x, T* y) {
#ifdef SSM_WEIGHT_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (weight_kernels_avx512()) {
      gemv_q8_avx512(q, scales, M, K, stride, x, y);
      return;
    }
  }
#endif
  const Index blocks = stride / kQ8Block;
  gemv_portable<T>(M, K, x, y, [&](Index m, Index k0, Index n, T* out) {
    for (Index i = 0; i < n; ++i) {
      const Index k = k0 + i;
      out[i] = T(q[m * stride + k]) * T(scales[m * blocks + k / kQ8Block]);
    }
  });
}

}  // namespace ssm::detail
