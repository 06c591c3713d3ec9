// The row bodies every build has: plain C++ written so that the compiler vectorises it for the
// baseline of the target (SSE2 on x86-64), blocks of columns decoded into f32, then rounded.
// No branch depends on a value except through selects, and there is no subnormal f32 in the decode:
// elements.hpp's fp8 decoder multiplies subnormal f32 bit patterns by 2^120, which costs a
// microcode assist on x86 cores for one code in sixteen (the scalar fp8 lookup ran at 3% of memory
// speed); here an fp8 subnormal is its mantissa times 2^-9, a product of normal numbers.
#include <cstring>

#include "cpu/decode_rows.hpp"

namespace tpembed::cpu {

namespace {

constexpr std::int64_t kBlock = 64;  // columns per block: a few vectors, a small stack buffer

// fp8 e4m3fn as f32 without branches: normal codes rebiased in the exponent field, subnormal ones
// (exponent 0) converted from their mantissa, 0x7f (with either sign) the quiet NaN.
inline float fp8_to_f32(std::uint32_t code) {
  const std::uint32_t rest = code & 0x7fu;
  const std::uint32_t normal = (rest << 20) + (120u << 23);
  const std::uint32_t subnormal =
      f32_bits(static_cast<float>(static_cast<std::int32_t>(rest)) * 0x1p-9f);
  // All-ones masks rather than ?: keep the loop free of branches, so that it vectorises.
  const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(rest < 8);
  const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>(rest == 0x7fu);
  std::uint32_t magnitude = (subnormal & is_subnormal) | (normal & ~is_subnormal);
  magnitude = (0x7fc00000u & is_nan) | (magnitude & ~is_nan);
  return f32_from_bits(magnitude | ((code & 0x80u) << 24));
}

template <DType Table>
inline void decode_block(const std::uint8_t* src, std::int64_t first, float* values) {
  if constexpr (Table == DType::i8) {
    for (std::int64_t k = 0; k < kBlock; ++k) {
      values[k] = static_cast<float>(static_cast<std::int8_t>(src[first + k]));
    }
  } else if constexpr (Table == DType::fp8_e4m3) {
    for (std::int64_t k = 0; k < kBlock; ++k) values[k] = fp8_to_f32(src[first + k]);
  } else {
    static_assert(Table == DType::i4, "a quantized table dtype");
    const std::uint8_t* bytes = src + first / 2;
    for (std::int64_t k = 0; k < kBlock / 2; ++k) {
      // (nibble ^ 8) - 8 sign-extends a 4-bit two's complement value.
      values[2 * k] = static_cast<float>(static_cast<int>((bytes[k] & 0xfu) ^ 8u) - 8);
      values[2 * k + 1] = static_cast<float>(static_cast<int>((bytes[k] >> 4) ^ 8u) - 8);
    }
  }
}

// numeric.hpp's f32_to_bf16_bits with the NaN branch as a select.
inline std::uint16_t bf16_bits(float value) {
  const std::uint32_t bits = f32_bits(value);
  const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const std::uint32_t quiet = (bits >> 16) | 0x40u;
  return static_cast<std::uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// numeric.hpp's f32_to_f16_bits for values that are zero or in f16's normal range, without
// branches; `outside` is nonzero when the value is neither (subnormal in f16, rounding to Inf,
// NaN).
inline std::uint16_t f16_bits_normal(float value, std::uint32_t& outside) {
  const std::uint32_t bits = f32_bits(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  const std::uint32_t odd = (magnitude >> 13) & 1u;
  const std::uint32_t rounded = (magnitude + 0xc8000fffu + odd) >> 13;
  const std::uint32_t is_zero = 0u - static_cast<std::uint32_t>(magnitude == 0);
  outside |= static_cast<std::uint32_t>(magnitude != 0 &&
                                        (magnitude < 0x38800000u || magnitude >= 0x477ff000u));
  return static_cast<std::uint16_t>(sign | (rounded & ~is_zero));
}

template <DType Out>
inline void encode_block(const float* values, std::uint8_t* dst) {
  if constexpr (Out == DType::f32) {
    std::memcpy(dst, values, kBlock * 4);
  } else if constexpr (Out == DType::bf16) {
    std::uint16_t bits[kBlock];
    for (std::int64_t k = 0; k < kBlock; ++k) bits[k] = bf16_bits(values[k]);
    std::memcpy(dst, bits, sizeof bits);
  } else {
    static_assert(Out == DType::f16, "an output dtype");
    // f16's subnormals need a shift per element, which SSE2 does not have: a block with none
    // (nor Inf or NaN; the usual case) is rounded vector-wise, any other element by element.
    std::uint16_t bits[kBlock];
    std::uint32_t outside = 0;
    for (std::int64_t k = 0; k < kBlock; ++k) bits[k] = f16_bits_normal(values[k], outside);
    if (outside == 0) {
      std::memcpy(dst, bits, sizeof bits);
    } else {
      for (std::int64_t k = 0; k < kBlock; ++k) store_element<DType::f16>(dst, k, values[k]);
    }
  }
}

template <DType Table, DType Out, bool Scaled>
struct Body {
  static void run(std::uint8_t* dst, const std::uint8_t* src, std::int64_t count, float factor,
                  bool) {
    float values[kBlock];
    for (std::int64_t first = 0; first < count; first += kBlock) {
      decode_block<Table>(src, first, values);
      if (Scaled) {
        for (float& value : values) value *= factor;
      }
      encode_block<Out>(values, dst + first * row_bytes(Out, 1));
    }
  }
};

}  // namespace

RowBody portable_row_body(DType table, DType out, bool scaled) {
  // Exact for every factor: the careful body is the same one.
  return quantized_row_body<Body, Body>(table, out, scaled, RowBody{nullptr, nullptr, kBlock, 16});
}

}  // namespace tpembed::cpu
