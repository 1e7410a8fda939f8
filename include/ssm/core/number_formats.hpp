#pragma once
/// \file number_formats.hpp
/// The 16-bit floating formats of stored weights, to and from float, bit-exact and portable:
///  - IEEE binary16 ("F16", "half"): 1 sign, 5 exponent (bias 15), 10 mantissa bits; subnormals below
///    2^-14, largest finite 65504.
///  - bfloat16 ("BF16"): the upper 16 bits of an IEEE float (1 sign, 8 exponent, 7 mantissa bits).
/// Decoding is exact (every value of both formats is a float). Encoding rounds to nearest, ties to
/// even, as PyTorch's `.to(torch.float16)` / `.to(torch.bfloat16)` do: finite values beyond a format's
/// range become infinities, NaN stays NaN (quiet).

#include <cstdint>
#include <cstring>

namespace ssm {

/// IEEE half to float, exactly.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {  // inf or NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal half: renormalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    bits = sign | (std::uint32_t(113 - shift) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// bfloat16 to float: the upper 16 bits of a float.
inline float bfloat16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// float to bfloat16, rounded to nearest even; NaN stays a (quiet) NaN of the same sign.
inline std::uint16_t float_to_bfloat16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((bits >> 16) | 0x40u);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // carries into the exponent where it must (up to infinity)
  return std::uint16_t(bits >> 16);
}

/// float to IEEE half, rounded to nearest even (subnormal halves included); overflow gives infinity,
/// NaN a quiet NaN of the same sign.
inline std::uint16_t float_to_half(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const std::uint16_t sign = std::uint16_t((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);  // NaN
  if (magnitude >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to >= 65520: infinity
  const int exponent = int(magnitude >> 23) - 127;                      // unbiased
  std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;         // 24 bits with the implicit one
  if (exponent < -25) return sign;  // below half the smallest subnormal (float subnormals included)
  // The half's units: 2^-24 for subnormals (exponent < -14), else 2^(exponent - 10). Shift the 24-bit
  // mantissa (units 2^(exponent - 23)) right by `shift` and round to nearest even.
  const int shift = exponent < -14 ? -exponent - 1 : 13;
  const std::uint32_t kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), half_unit = 1u << (shift - 1);
  std::uint32_t rounded = kept + ((rest > half_unit || (rest == half_unit && (kept & 1u))) ? 1u : 0u);
  if (exponent < -14) return std::uint16_t(sign | rounded);  // subnormal (a carry to 0x400 is the smallest normal)
  // Normal: rounded has 11 bits (or 12 after a carry, which bumps the exponent).
  std::uint32_t e = std::uint32_t(exponent + 15);
  if (rounded & 0x800u) {
    rounded >>= 1;
    ++e;
  }
  return std::uint16_t(sign | (e << 10) | (rounded & 0x3ffu));  // e = 31 only from the overflow case above
}

}  // namespace ssm
