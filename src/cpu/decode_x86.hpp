// Pieces both x86 row-body files use (decode_avx2.cpp, decode_avx512.cpp): AVX2 code, which
// GCC and Clang inline into AVX-512 functions too (their target is a superset). Include it after
// <immintrin.h>, on x86-64 with GCC or Clang only; every function has internal linkage, so no
// out-of-line copy compiled for AVX2 can stand in for a baseline one elsewhere.
#pragma once

#include <immintrin.h>

#define TPEMBED_AVX2 __attribute__((target("avx2,f16c")))

namespace tpembed::cpu {
namespace {

// 16 fp8 e4m3 codes as f16 bits of value * 2^-8 (e4m3's exponent bias is 7, f16's 15, and e4m3's
// subnormals land on f16's), which vcvtph2ps widens exactly; the NaN code's 0x3f80 becomes the
// quiet NaN 0x7e00, which widens to 0x7fc00000 as numeric.hpp decodes it.
TPEMBED_AVX2 inline __m256i fp8_to_f16_scaled_down(__m128i bytes) {
  const __m256i codes = _mm256_cvtepu8_epi16(bytes);
  const __m256i rest = _mm256_and_si256(codes, _mm256_set1_epi16(0x7f));
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(codes, _mm256_set1_epi16(0x80)), 8);
  const __m256i half = _mm256_or_si256(_mm256_slli_epi16(rest, 7), sign);
  const __m256i nan = _mm256_cmpeq_epi16(rest, _mm256_set1_epi16(0x7f));
  return _mm256_xor_si256(half, _mm256_and_si256(nan, _mm256_set1_epi16(0x3f80 ^ 0x7e00)));
}

// 16 bytes of int4 pairs as 32 signed bytes in column order: `first` columns 0..15, `second`
// 16..31. Low nibble first, so interleaving the nibbles orders them; (n ^ 8) - 8 signs them.
TPEMBED_AVX2 inline void int4_to_int8(__m128i packed, __m128i& first, __m128i& second) {
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i low = _mm_and_si128(packed, mask);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
  const __m128i eight = _mm_set1_epi8(8);
  first = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(low, high), eight), eight);
  second = _mm_sub_epi8(_mm_xor_si128(_mm_unpackhi_epi8(low, high), eight), eight);
}

}  // namespace
}  // namespace tpembed::cpu
