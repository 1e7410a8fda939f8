#pragma once
/// \file complex_arith.hpp
/// Complex products written in real arithmetic, once for the whole library.
///
///     (ar + i ai)(br + i bi) = (ar br - ai bi) + i (ar bi + ai br)
///
/// Why not std::complex's operator*: it follows C's Annex G (a NaN result is re-examined by an out-of-line
/// library call, __mulsc3 / __muldc3, to recover infinities). That branch keeps loops from vectorising and
/// costs a call per product; products of finite values never need it. The functions here are the textbook
/// formula: a NaN or inf in an input still propagates (as NaN), which is all the library needs.
///
/// The scalar forms take the real and imaginary parts separately and are templates on the part type `V`,
/// so the same formula serves plain `float` / `double` and Eigen arrays of lanes (fixed-size
/// `Eigen::Array<T, W, 1>`): loops written with them vectorise. Outputs may alias inputs.

#include "ssm/core/types.hpp"

#include <complex>

namespace ssm {

/// (re, im) = (ar + i ai)(br + i bi). `re`, `im` may alias any input.
template <class V>
inline void cmul(const V& ar, const V& ai, const V& br, const V& bi, V& re, V& im) {
  const V r = ar * br - ai * bi;
  const V i = ar * bi + ai * br;
  re = r;
  im = i;
}

/// (xr, xi) <- (ar + i ai)(xr + i xi) + (br + i bi): one step of a linear recurrence, in place.
template <class V>
inline void cmuladd(const V& ar, const V& ai, V& xr, V& xi, const V& br, const V& bi) {
  const V r = ar * xr - ai * xi + br;
  const V i = ar * xi + ai * xr + bi;
  xr = r;
  xi = i;
}

/// a b for std::complex values, in real arithmetic (no Annex G library call).
template <class T>
inline std::complex<T> cmul(const std::complex<T>& a, const std::complex<T>& b) {
  return std::complex<T>(a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real());
}

/// a x + b for std::complex values, in real arithmetic.
template <class T>
inline std::complex<T> cmuladd(const std::complex<T>& a, const std::complex<T>& x, const std::complex<T>& b) {
  return std::complex<T>(a.real() * x.real() - a.imag() * x.imag() + b.real(),
                         a.real() * x.imag() + a.imag() * x.real() + b.imag());
}

/// Re(a b) = ar br - ai bi: the real part of a product, e.g. one term of the output 2 Re(C x).
template <class T>
inline T re_mul(const std::complex<T>& a, const std::complex<T>& b) {
  return a.real() * b.real() - a.imag() * b.imag();
}

/// Re(conj(a) b) = ar br + ai bi: one term of the real inner product Re(a^* b).
template <class T>
inline T re_conj_mul(const std::complex<T>& a, const std::complex<T>& b) {
  return a.real() * b.real() + a.imag() * b.imag();
}

/// a[i] *= b[i] for i < count, in real arithmetic over the interleaved (real, imaginary) layout of
/// std::complex<T> ([complex.numbers.general]: laid out as T[2]), a loop compilers vectorise.
/// a and b may not overlap (unless a == b).
template <class T>
inline void cmul_inplace(std::complex<T>* a, const std::complex<T>* b, Index count) {
  T* x = reinterpret_cast<T*>(a);
  const T* y = reinterpret_cast<const T*>(b);
  for (Index i = 0; i < count; ++i) {
    const T ar = x[2 * i], ai = x[2 * i + 1], br = y[2 * i], bi = y[2 * i + 1];
    x[2 * i] = ar * br - ai * bi;
    x[2 * i + 1] = ar * bi + ai * br;
  }
}

}  // namespace ssm
