// The row bodies for CPUs with AVX-512 (F), 32 columns a step: decode_avx2.cpp's conversions (see
// there for why each is exact) on 16 lanes, with mask registers for the selects and vpmovdw for
// the bf16 pack. Only these functions carry the target attribute.
#include "cpu/decode_rows.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

// GCC 12 warns inside its own AVX-512 headers, where intrinsics start from a deliberately
// undefined register (_mm512_undefined_*); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define TPEMBED_AVX512 __attribute__((target("avx512f,avx2,f16c")))

namespace tpembed::cpu {

namespace {

constexpr std::int64_t kColumns = 32;

struct Pair {
  __m512 low, high;  // columns 0..15 and 16..31 of a step
};

TPEMBED_AVX512 inline __m512 fp8_to_f32(__m512i codes) {
  const __m512i rest = _mm512_and_si512(codes, _mm512_set1_epi32(0x7f));
  const __m512i normal =
      _mm512_add_epi32(_mm512_slli_epi32(rest, 20), _mm512_set1_epi32(120 << 23));
  const __m512i subnormal =
      _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(rest), _mm512_set1_ps(0x1p-9f)));
  __m512i magnitude = _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(rest, _mm512_set1_epi32(8)),
                                              normal, subnormal);
  magnitude =
      _mm512_mask_mov_epi32(magnitude, _mm512_cmpeq_epi32_mask(rest, _mm512_set1_epi32(0x7f)),
                            _mm512_set1_epi32(0x7fc00000));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(codes, _mm512_set1_epi32(0x80)), 24);
  return _mm512_castsi512_ps(_mm512_or_si512(magnitude, sign));
}

template <DType Table>
TPEMBED_AVX512 inline Pair load_step(const std::uint8_t* src, std::int64_t col) {
  if constexpr (Table == DType::i8) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + col));
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(bytes))),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(bytes, 1)))};
  } else if constexpr (Table == DType::fp8_e4m3) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + col));
    return {fp8_to_f32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes))),
            fp8_to_f32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)))};
  } else {
    static_assert(Table == DType::i4, "a quantized table dtype");
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + col / 2));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i low = _mm_and_si128(packed, mask);
    const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    const __m128i eight = _mm_set1_epi8(8);
    const __m128i first = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(low, high), eight), eight);
    const __m128i second = _mm_sub_epi8(_mm_xor_si128(_mm_unpackhi_epi8(low, high), eight), eight);
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(first)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(second))};
  }
}

TPEMBED_AVX512 inline __m256i bf16_bits(__m512 values) {
  const __m512i bits = _mm512_castps_si512(values);
  const __m512i high_half = _mm512_srli_epi32(bits, 16);
  const __m512i odd = _mm512_and_si512(high_half, _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), odd), 16);
  const __m512i quiet = _mm512_or_si512(high_half, _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}

TPEMBED_AVX512 inline void store_64_bytes(std::uint8_t* dst, __m512i bytes, bool streaming) {
  if (streaming) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), bytes);
  } else {
    _mm512_storeu_si512(dst, bytes);
  }
}

TPEMBED_AVX512 inline __m512i join(__m256i low, __m256i high) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}

template <DType Out>
TPEMBED_AVX512 inline void store_step(std::uint8_t* dst, std::int64_t col, Pair values,
                                      bool streaming) {
  if constexpr (Out == DType::f32) {
    store_64_bytes(dst + col * 4, _mm512_castps_si512(values.low), streaming);
    store_64_bytes(dst + col * 4 + 64, _mm512_castps_si512(values.high), streaming);
  } else if constexpr (Out == DType::f16) {
    store_64_bytes(dst + col * 2,
                   join(_mm512_cvtps_ph(values.low, _MM_FROUND_TO_NEAREST_INT),
                        _mm512_cvtps_ph(values.high, _MM_FROUND_TO_NEAREST_INT)),
                   streaming);
  } else {
    static_assert(Out == DType::bf16, "an output dtype");
    store_64_bytes(dst + col * 2, join(bf16_bits(values.low), bf16_bits(values.high)), streaming);
  }
}

template <DType Table, DType Out, bool Scaled>
struct Body {
  TPEMBED_AVX512 static void run(std::uint8_t* dst, const std::uint8_t* src, std::int64_t count,
                                 float factor, bool streaming) {
    const __m512 scale = _mm512_set1_ps(factor);
    for (std::int64_t col = 0; col < count; col += kColumns) {
      Pair values = load_step<Table>(src, col);
      if (Scaled) {
        values.low = _mm512_mul_ps(values.low, scale);
        values.high = _mm512_mul_ps(values.high, scale);
      }
      store_step<Out>(dst, col, values, streaming);
    }
  }
};

}  // namespace

RowBody avx512_row_body(DType table, DType out, bool scaled) {
  return quantized_row_body<Body>(table, out, scaled, kColumns, 64);
}

}  // namespace tpembed::cpu

#else  // not x86-64: no AVX-512 bodies

namespace tpembed::cpu {
RowBody avx512_row_body(DType, DType, bool) {
  return {};
}
}  // namespace tpembed::cpu

#endif
