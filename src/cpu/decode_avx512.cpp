// The row bodies for CPUs with AVX-512 (F), 32 columns a step: decode_avx2.cpp's conversions (see
// there for why each is exact, and for the fast and careful bodies) on 16 lanes, with mask
// registers for the selects and vpmovdw for the bf16 pack. And the avx512bf16 level's bodies
// (AVX512_BF16 and VBMI besides): fp8 decoded by byte-table lookups (Fp8TableBody), and bf16
// rounded by vcvtne2ps2bf16. That instruction rounds to nearest even and quiets NaN as
// numeric.hpp does (bits >> 16 | 0x40), but reads subnormal inputs as zero: its bodies are guarded
// to rows whose products cannot be subnormal, |scale| >= 2^-117 (the smallest nonzero decoded
// value is fp8's 2^-9, and 2^-9 * 2^-117 is f32's smallest normal). Only these functions carry
// the target attribute.
#include <cstring>

#include "cpu/decode_rows.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

// GCC 12 warns inside its own AVX-512 headers, where intrinsics start from a deliberately
// undefined register (_mm512_undefined_*); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "cpu/decode_x86.hpp"

#define TPEMBED_AVX512 __attribute__((target("avx512f,avx2,f16c")))
#define TPEMBED_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512bf16,avx2,f16c")))

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

template <DType Table, bool Careful>
TPEMBED_AVX512 inline Pair load_step(const std::uint8_t* src, std::int64_t col) {
  if constexpr (Table == DType::i8) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + col));
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(bytes))),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(bytes, 1)))};
  } else if constexpr (Table == DType::fp8_e4m3 && Careful) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + col));
    return {fp8_to_f32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes))),
            fp8_to_f32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)))};
  } else if constexpr (Table == DType::fp8_e4m3) {
    const auto* bytes = reinterpret_cast<const __m128i*>(src + col);
    return {_mm512_cvtph_ps(fp8_to_f16_scaled_down(_mm_loadu_si128(bytes))),
            _mm512_cvtph_ps(fp8_to_f16_scaled_down(_mm_loadu_si128(bytes + 1)))};
  } else {
    static_assert(Table == DType::i4, "a quantized table dtype");
    __m128i first, second;
    int4_to_int8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + col / 2)), first, second);
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(first)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(second))};
  }
}

template <bool Careful>
TPEMBED_AVX512 inline __m256i bf16_bits(__m512 values) {
  const __m512i bits = _mm512_castps_si512(values);
  const __m512i high_half = _mm512_srli_epi32(bits, 16);
  const __m512i odd = _mm512_and_si512(high_half, _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), odd), 16);
  if (Careful) {
    const __m512i quiet = _mm512_or_si512(high_half, _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    rounded = _mm512_mask_mov_epi32(rounded, nan, quiet);
  }
  return _mm512_cvtepi32_epi16(rounded);
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

template <DType Out, bool Careful>
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
    store_64_bytes(dst + col * 2,
                   join(bf16_bits<Careful>(values.low), bf16_bits<Careful>(values.high)),
                   streaming);
  }
}

// A step's columns times the row's factor. The fast fp8 decode leaves out a factor of 2^8
// (decode_x86.hpp), which goes into the step's scale.
template <DType Table, bool Scaled, bool Careful>
struct Scaling {
  static constexpr bool scaled_down = Table == DType::fp8_e4m3 && !Careful;

  TPEMBED_AVX512 static __m512 scale(float factor) {
    return _mm512_set1_ps((Scaled ? factor : 1.0f) * (scaled_down ? 0x1p8f : 1.0f));
  }

  TPEMBED_AVX512 static Pair step(const std::uint8_t* src, std::int64_t col, __m512 scale) {
    Pair values = load_step<Table, Careful>(src, col);
    if (Scaled || scaled_down) {
      values.low = _mm512_mul_ps(values.low, scale);
      values.high = _mm512_mul_ps(values.high, scale);
    }
    return values;
  }
};

template <DType Table, DType Out, bool Scaled, bool Careful>
struct Body {
  TPEMBED_AVX512 static void run(std::uint8_t* dst, const std::uint8_t* src, std::int64_t count,
                                 float factor, bool streaming) {
    using Steps = Scaling<Table, Scaled, Careful>;
    const __m512 scale = Steps::scale(factor);
    for (std::int64_t col = 0; col < count; col += kColumns) {
      store_step<Out, Careful>(dst, col, Steps::step(src, col, scale), streaming);
    }
  }
};

template <DType Table, DType Out, bool Scaled>
using FastBody = Body<Table, Out, Scaled, false>;
template <DType Table, DType Out, bool Scaled>
using CarefulBody = Body<Table, Out, Scaled, true>;

// 32 columns as bf16 by vcvtne2ps2bf16 (the second operand goes to the low half: in order).
TPEMBED_AVX512_BF16 inline __m512i bf16_instruction(Pair values) {
  const __m512bh rounded = _mm512_cvtne2ps_pbh(values.high, values.low);
  __m512i bits;
  std::memcpy(&bits, &rounded, sizeof bits);
  return bits;
}

// Into bf16 with vcvtne2ps2bf16 (Out is always bf16 here; the template shape is the tables').
template <DType Table, DType, bool Scaled>
struct Bf16Body {
  TPEMBED_AVX512_BF16 static void run(std::uint8_t* dst, const std::uint8_t* src,
                                      std::int64_t count, float factor, bool streaming) {
    using Steps = Scaling<Table, Scaled, false>;
    const __m512 scale = Steps::scale(factor);
    for (std::int64_t col = 0; col < count; col += kColumns) {
      store_64_bytes(dst + col * 2, bf16_instruction(Steps::step(src, col, scale)), streaming);
    }
  }
};

// fp8 e4m3 codes 0..127 as bf16 bits (exact: 3 mantissa bits, exponents 2^-9..2^8), in two byte
// tables, the high byte and the low one; 0x7f is the quiet NaN 0x7fc0, as numeric.hpp decodes it.
struct Fp8Tables {
  alignas(64) std::uint8_t high[128];
  alignas(64) std::uint8_t low[128];
};

const Fp8Tables& fp8_tables() {
  static const Fp8Tables tables = [] {
    Fp8Tables made{};
    for (std::uint32_t code = 0; code < 128; ++code) {
      const std::uint32_t bits = f32_bits(fp8_e4m3_bits_to_f32(static_cast<std::uint8_t>(code)));
      made.high[code] = static_cast<std::uint8_t>(bits >> 24);
      made.low[code] = static_cast<std::uint8_t>(bits >> 16);
    }
    return made;
  }();
  return tables;
}

// fp8 e4m3 by table, 64 columns a step, into any output dtype: two vpermt2b look the bf16 bytes
// up (the sign bit goes straight across), and unpacking them under zero words makes the f32s.
// The unpacks work within 128-bit lanes, so the codes are first permuted (4-byte groups, a 4 x 4
// transpose) so that the four f32 vectors come out holding columns 0..15, 16..31, 32..47, 48..63.
template <DType Out, bool Scaled>
struct Fp8TableBody {
  TPEMBED_AVX512_BF16 static void run(std::uint8_t* dst, const std::uint8_t* src,
                                      std::int64_t count, float factor, bool streaming) {
    const Fp8Tables& tables = fp8_tables();
    const __m512i high_0 = _mm512_load_si512(tables.high),
                  high_1 = _mm512_load_si512(tables.high + 64);
    const __m512i low_0 = _mm512_load_si512(tables.low), low_1 = _mm512_load_si512(tables.low + 64);
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i zero = _mm512_setzero_si512();
    const __m512 scale = _mm512_set1_ps(factor);
    for (std::int64_t col = 0; col < count; col += 64) {
      const __m512i codes = _mm512_permutexvar_epi32(order, _mm512_loadu_si512(src + col));
      const __m512i low = _mm512_permutex2var_epi8(low_0, codes, low_1);  // index bit 7 unused
      // high | (codes & 0x80)
      const __m512i high = _mm512_ternarylogic_epi32(
          _mm512_permutex2var_epi8(high_0, codes, high_1), codes, sign, 0xf8);
      const __m512i words_a = _mm512_unpacklo_epi8(low, high);
      const __m512i words_b = _mm512_unpackhi_epi8(low, high);
      Pair first{_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, words_a)),
                 _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, words_a))};
      Pair second{_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, words_b)),
                  _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, words_b))};
      if (Scaled) {
        first = {_mm512_mul_ps(first.low, scale), _mm512_mul_ps(first.high, scale)};
        second = {_mm512_mul_ps(second.low, scale), _mm512_mul_ps(second.high, scale)};
      }
      if constexpr (Out == DType::bf16) {
        store_64_bytes(dst + col * 2, bf16_instruction(first), streaming);
        store_64_bytes(dst + col * 2 + 64, bf16_instruction(second), streaming);
      } else {
        store_step<Out, false>(dst, col, first, streaming);
        store_step<Out, false>(dst, col + 32, second, streaming);
      }
    }
  }
};

template <DType Out>
RowBody fp8_table_body(bool scaled) {
  RowBody body{scaled ? &Fp8TableBody<Out, true>::run : &Fp8TableBody<Out, false>::run,
               scaled ? &CarefulBody<DType::fp8_e4m3, Out, true>::run
                      : &CarefulBody<DType::fp8_e4m3, Out, false>::run,
               64, 64};
  // A NaN factor meets the NaN codes: the careful body, like every other path, for one rule.
  if (Out == DType::bf16) body.min_factor = 0x1p-117f;  // no subnormal product
  return body;
}

}  // namespace

RowBody avx512_row_body(DType table, DType out, bool scaled) {
  RowBody shape{nullptr, nullptr, kColumns, 64};
  shape.max_factor = 0x1p120f;  // factor * 2^8 finite (and not NaN)
  return quantized_row_body<FastBody, CarefulBody>(table, out, scaled, shape);
}

RowBody avx512bf16_row_body(DType table, DType out, bool scaled) {
  if (table == DType::fp8_e4m3) {
    switch (out) {
      case DType::f32:
        return fp8_table_body<DType::f32>(scaled);
      case DType::f16:
        return fp8_table_body<DType::f16>(scaled);
      case DType::bf16:
        return fp8_table_body<DType::bf16>(scaled);
      default:
        return {};
    }
  }
  if (out != DType::bf16) return {};
  RowBody shape{nullptr, nullptr, kColumns, 64};
  shape.min_factor = 0x1p-117f;  // no subnormal product
  return quantized_row_body<Bf16Body, CarefulBody>(table, out, scaled, shape);
}

}  // namespace tpembed::cpu

#else  // not x86-64: no AVX-512 bodies

namespace tpembed::cpu {
RowBody avx512_row_body(DType, DType, bool) {
  return {};
}
RowBody avx512bf16_row_body(DType, DType, bool) {
  return {};
}
}  // namespace tpembed::cpu

#endif
