// The row bodies for CPUs with AVX2 and F16C, 32 columns a step. Only the functions here carry the
// target attribute (the rest of the library stays baseline x86-64); decode_rows.cpp calls them only
// where the CPU has both. The conversions, and why each is exact:
//  - i8, i4 -> f32: sign-extended integers, converted exactly (|v| <= 128);
//  - fp8 e4m3 -> f32, fast: the code's bits moved under an f16's are the value times 2^-8 (e4m3's
//    exponent bias is 7, f16's 15; e4m3 subnormals land on f16 subnormals), which vcvtph2ps widens
//    exactly; the 2^8 goes into the scale. (v * 2^-8) * (s * 2^8) is the same real number as
//    v * s, so its one rounding is the same, wherever s * 2^8 is exact: |s| < 2^120 (the guard);
//  - fp8 e4m3 -> f32, careful: normal codes rebiased in the exponent field, subnormals as
//    mantissa * 2^-9 (no subnormal f32 anywhere, so no microcode assists), 0x7f/0xff the quiet NaN;
//  - the scale: one multiply (nothing to fuse it with, so no FMA contraction);
//  - f32 -> f16: vcvtps2ph with imm 0, round to nearest even whatever MXCSR says; it makes
//    subnormals and Inf as numeric.hpp does, and quiets NaN keeping the payload's top bits;
//  - f32 -> bf16: numeric.hpp's integer rounding. Its NaN branch matters only for NaNs with
//    nonzero low 16 bits: with a finite scale (the guard) the only NaN is the decoded 0x7fc00000
//    (x86 multiplies keep a NaN operand's bits), which rounds to 0x7fc0 either way, so the fast
//    body leaves the branch out and the careful one blends it in.
#include "cpu/decode_rows.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include "cpu/decode_x86.hpp"

namespace tpembed::cpu {

namespace {

constexpr std::int64_t kColumns = 32;  // a step: two Pairs (int4 unpacks 16 bytes at once)

struct Pair {
  __m256 low, high;  // 16 columns: 0..7 and 8..15
};

// 16 signed bytes as f32.
TPEMBED_AVX2 inline Pair widen(__m128i values) {
  return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(values)),
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(values, 8)))};
}

TPEMBED_AVX2 inline __m256 fp8_to_f32(__m256i codes) {
  const __m256i rest = _mm256_and_si256(codes, _mm256_set1_epi32(0x7f));
  const __m256i normal =
      _mm256_add_epi32(_mm256_slli_epi32(rest, 20), _mm256_set1_epi32(120 << 23));
  const __m256i subnormal =
      _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(rest), _mm256_set1_ps(0x1p-9f)));
  __m256i magnitude =
      _mm256_blendv_epi8(normal, subnormal, _mm256_cmpgt_epi32(_mm256_set1_epi32(8), rest));
  magnitude = _mm256_blendv_epi8(magnitude, _mm256_set1_epi32(0x7fc00000),
                                 _mm256_cmpeq_epi32(rest, _mm256_set1_epi32(0x7f)));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x80)), 24);
  return _mm256_castsi256_ps(_mm256_or_si256(magnitude, sign));
}

// 16 columns of an i8 or fp8 row.
template <DType Table, bool Careful>
TPEMBED_AVX2 inline Pair load_half(const std::uint8_t* src, std::int64_t col) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + col));
  if constexpr (Table == DType::i8) {
    return widen(bytes);
  } else if constexpr (Careful) {
    static_assert(Table == DType::fp8_e4m3, "a byte table dtype");
    return {fp8_to_f32(_mm256_cvtepu8_epi32(bytes)),
            fp8_to_f32(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)))};
  } else {
    static_assert(Table == DType::fp8_e4m3, "a byte table dtype");
    const __m256i half = fp8_to_f16_scaled_down(bytes);
    return {_mm256_cvtph_ps(_mm256_castsi256_si128(half)),
            _mm256_cvtph_ps(_mm256_extracti128_si256(half, 1))};
  }
}

// The 32 columns of a step from `col` on.
template <DType Table, bool Careful>
TPEMBED_AVX2 inline void load_step(const std::uint8_t* src, std::int64_t col, Pair& first,
                                   Pair& second) {
  if constexpr (Table == DType::i4) {
    __m128i low, high;
    int4_to_int8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + col / 2)), low, high);
    first = widen(low);
    second = widen(high);
  } else {
    first = load_half<Table, Careful>(src, col);
    second = load_half<Table, Careful>(src, col + 16);
  }
}

template <bool Careful>
TPEMBED_AVX2 inline __m256i bf16_bits(__m256 values) {
  const __m256i bits = _mm256_castps_si256(values);
  const __m256i high_half = _mm256_srli_epi32(bits, 16);
  const __m256i odd = _mm256_and_si256(high_half, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), odd), 16);
  if (!Careful) return rounded;
  const __m256i quiet = _mm256_or_si256(high_half, _mm256_set1_epi32(0x40));
  const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

TPEMBED_AVX2 inline void store_32_bytes(std::uint8_t* dst, __m256i bytes, bool streaming) {
  if (streaming) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst), bytes);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), bytes);
  }
}

template <DType Out, bool Careful>
TPEMBED_AVX2 inline void store_step(std::uint8_t* dst, std::int64_t col, Pair values,
                                    bool streaming) {
  if constexpr (Out == DType::f32) {
    store_32_bytes(dst + col * 4, _mm256_castps_si256(values.low), streaming);
    store_32_bytes(dst + col * 4 + 32, _mm256_castps_si256(values.high), streaming);
  } else if constexpr (Out == DType::f16) {
    const __m128i low = _mm256_cvtps_ph(values.low, _MM_FROUND_TO_NEAREST_INT);
    const __m128i high = _mm256_cvtps_ph(values.high, _MM_FROUND_TO_NEAREST_INT);
    store_32_bytes(dst + col * 2, _mm256_set_m128i(high, low), streaming);
  } else {
    static_assert(Out == DType::bf16, "an output dtype");
    // packus works within 128-bit lanes (and every value fits 16 bits, so nothing saturates):
    // 0xd8 puts the four 64-bit quarters back in column order.
    const __m256i packed =
        _mm256_packus_epi32(bf16_bits<Careful>(values.low), bf16_bits<Careful>(values.high));
    store_32_bytes(dst + col * 2, _mm256_permute4x64_epi64(packed, 0xd8), streaming);
  }
}

template <DType Table, DType Out, bool Scaled, bool Careful>
struct Body {
  TPEMBED_AVX2 static void run(std::uint8_t* dst, const std::uint8_t* src, std::int64_t count,
                               float factor, bool streaming) {
    // The fast fp8 decode leaves out a factor of 2^8 (see the top of the file).
    constexpr bool scaled_down = Table == DType::fp8_e4m3 && !Careful;
    const bool multiply = Scaled || scaled_down;
    const __m256 scale = _mm256_set1_ps((Scaled ? factor : 1.0f) * (scaled_down ? 0x1p8f : 1.0f));
    for (std::int64_t col = 0; col < count; col += kColumns) {
      Pair first, second;
      load_step<Table, Careful>(src, col, first, second);
      if (multiply) {
        first = {_mm256_mul_ps(first.low, scale), _mm256_mul_ps(first.high, scale)};
        second = {_mm256_mul_ps(second.low, scale), _mm256_mul_ps(second.high, scale)};
      }
      store_step<Out, Careful>(dst, col, first, streaming);
      store_step<Out, Careful>(dst, col + 16, second, streaming);
    }
  }
};

template <DType Table, DType Out, bool Scaled>
using FastBody = Body<Table, Out, Scaled, false>;
template <DType Table, DType Out, bool Scaled>
using CarefulBody = Body<Table, Out, Scaled, true>;

}  // namespace

RowBody avx2_row_body(DType table, DType out, bool scaled) {
  RowBody shape{nullptr, nullptr, kColumns, 32};
  shape.max_factor = 0x1p120f;  // factor * 2^8 finite (and not NaN)
  return quantized_row_body<FastBody, CarefulBody>(table, out, scaled, shape);
}

}  // namespace tpembed::cpu

#else  // not x86-64: no AVX2 bodies

namespace tpembed::cpu {
RowBody avx2_row_body(DType, DType, bool) {
  return {};
}
}  // namespace tpembed::cpu

#endif
