// Bit-exact conversions between f32 and the narrow float formats (f16, bf16, fp8 e4m3fn), and the
// int4 nibble decoder. The same inline functions run on the host and on the device, so the CPU and
// CUDA backends round identically. Every f32 -> narrow conversion rounds to nearest, ties to even.
#pragma once

#include <cstdint>
#include <cstring>

#include "tpembed/platform.hpp"

namespace tpembed {

/// Bits of an f32.
TPEMBED_HD inline std::uint32_t f32_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

/// The f32 with these bits.
TPEMBED_HD inline float f32_from_bits(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

/// f32 -> IEEE binary16 bits. NaN stays NaN (quieted, payload's top bits kept), +-Inf stays Inf,
/// values that round past 65504 become Inf, subnormals are produced exactly.
TPEMBED_HD inline std::uint16_t f32_to_f16_bits(float value) {
  std::uint32_t bits = f32_bits(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {  // NaN
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  if (magnitude >= 0x477ff000u) {  // >= 65520 rounds (ties to even) to Inf; Inf stays Inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (magnitude >= 0x38800000u) {  // normal in f16 (>= 2^-14): rebias 127 -> 15, round at bit 13
    const std::uint32_t odd = (magnitude >> 13) & 1u;
    magnitude += 0xc8000fffu + odd;  // -(112 << 23) + half-ulp - 1 + odd
    return static_cast<std::uint16_t>(sign | (magnitude >> 13));
  }
  const std::uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
  // Subnormal: count units of 2^-24.
  const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126 - exponent;  // 14..24
  std::uint32_t result = mantissa >> shift;
  const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;
  return static_cast<std::uint16_t>(sign | result);
}

/// IEEE binary16 bits -> f32 (exact). Exponent and mantissa are placed under f32's and scaled by
/// 2^(127 - 15): one multiply rebiases normals and subnormals alike, with no loop or branch for
/// subnormals (the multiply is exact; it needs subnormal support, which is the default on the host
/// and on the device without fast-math flushing).
TPEMBED_HD inline float f16_bits_to_f32(std::uint16_t half_bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half_bits & 0x8000u) << 16;
  const std::uint32_t rest = half_bits & 0x7fffu;
  if (rest >= 0x7c00u) return f32_from_bits(sign | 0x7f800000u | ((rest & 0x3ffu) << 13));
  const float magnitude = f32_from_bits(rest << 13) * 0x1p112f;
  return f32_from_bits(f32_bits(magnitude) | sign);
}

/// f32 -> bfloat16 bits. NaN stays NaN (quieted), values that round past the largest finite
/// bfloat16 become Inf.
TPEMBED_HD inline std::uint16_t f32_to_bf16_bits(float value) {
  const std::uint32_t bits = f32_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t odd = (bits >> 16) & 1u;
  return static_cast<std::uint16_t>((bits + 0x7fffu + odd) >> 16);
}

/// bfloat16 bits -> f32 (exact).
TPEMBED_HD inline float bf16_bits_to_f32(std::uint16_t bf16_bits) {
  return f32_from_bits(static_cast<std::uint32_t>(bf16_bits) << 16);
}

/// f32 -> fp8 e4m3fn bits. The format has no Inf: NaN, +-Inf and values that round past 448
/// (|x| > 464, i.e. rounding to 480 and beyond) all become NaN (0x7f, with the sign), as PyTorch
/// does. Subnormals (multiples of 2^-9) are produced exactly.
TPEMBED_HD inline std::uint8_t f32_to_fp8_e4m3_bits(float value) {
  std::uint32_t bits = f32_bits(value);
  const std::uint32_t sign = (bits >> 24) & 0x80u;
  std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);
  if (magnitude >= 0x43f00000u) return static_cast<std::uint8_t>(sign | 0x7fu);  // >= 480, Inf
  if (magnitude >= 0x3c800000u) {  // normal (>= 2^-6): rebias 127 -> 7, round at bit 20
    const std::uint32_t odd = (magnitude >> 20) & 1u;
    magnitude += 0xc407ffffu + odd;  // -(120 << 23) + half-ulp - 1 + odd
    return static_cast<std::uint8_t>(sign | (magnitude >> 20));
  }
  const std::uint32_t exponent = magnitude >> 23;
  if (exponent < 117) return static_cast<std::uint8_t>(sign);  // below half the smallest subnormal
  const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 141 - exponent;  // 21..24: count units of 2^-9
  std::uint32_t result = mantissa >> shift;
  const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;
  return static_cast<std::uint8_t>(sign | result);
}

/// fp8 e4m3fn bits -> f32 (exact; 0x7f and 0xff are NaN). As for f16: the bits go under f32's
/// and one multiply by 2^(127 - 7) rebiases normals and subnormals alike.
TPEMBED_HD inline float fp8_e4m3_bits_to_f32(std::uint8_t fp8_bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(fp8_bits & 0x80u) << 24;
  const std::uint32_t rest = fp8_bits & 0x7fu;
  if (rest == 0x7fu) return f32_from_bits(sign | 0x7fc00000u);
  const float magnitude = f32_from_bits(rest << 20) * 0x1p120f;
  return f32_from_bits(f32_bits(magnitude) | sign);
}

/// Signed value (-8..7) of column `col` of an int4 row: two per byte, low nibble first.
TPEMBED_HD inline int int4_at(const std::uint8_t* row, std::int64_t col) {
  const std::uint8_t packed = row[col >> 1];
  const int nibble = (col & 1) ? (packed >> 4) : (packed & 0xf);
  return nibble >= 8 ? nibble - 16 : nibble;
}

}  // namespace tpembed
