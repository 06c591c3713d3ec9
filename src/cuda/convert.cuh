// The gather kernel's arithmetic: table bits -> fp32 values (times the row's scale) -> 16 bytes of
// output, in as few instructions as Hopper allows, and exact.
//
// Each function computes what the CPU backend computes (numeric.hpp): out = round_once(float(code)
// * scale), rounded to nearest even. The fast forms are exact by construction:
//   - int8: the biased byte (code + 128) is permuted (PRMT) under the exponent of 2^23, so the f32
//     with those bits is 2^23 + code + 128 exactly; one subtraction leaves the code, exact.
//   - int4: the biased nibble (code + 8) at bit 4s (s = 0..4) is OR-ed under 2^23's exponent: the f32
//     is 2^23 + (code + 8) * 16^s; one FFMA by 16^-s with the (power-of-two scaled, hence exact)
//     bias gives the exact integer code in a single rounding that has nothing to round.
//   - fp8 e4m3: the hardware pair conversion (cvt.rn.f16x2.e4m3x2, sm_89+) is exact (every e4m3
//     value is an f16), and f16 -> f32 is exact.
//   - f16/bf16 tables: exact widening; f32 -> bf16/f16 outputs: the hardware pair conversions
//     (cvt.rn.bf16x2.f32, cvt.rn.f16x2.f32) round to nearest even with subnormals and overflow to
//     Inf, as the CPU's integer rounding does.
// One difference is allowed and documented: a NaN output is a NaN, but its payload is the GPU's
// canonical NaN where the value was computed (a bit-exact copy keeps every payload).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "tpembed/dtype.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::cuda_kernels {

template <DType D>
__host__ __device__ constexpr int bits_of() {
  return D == DType::f32 ? 32 : (D == DType::f16 || D == DType::bf16) ? 16 : D == DType::i4 ? 4 : 8;
}

/// Scale `index` of a scale vector of dtype f32, f16 or bf16, as f32 (exact).
__device__ __forceinline__ float load_scale(const void* scales, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::f16: return f16_bits_to_f32(static_cast<const std::uint16_t*>(scales)[index]);
    case DType::bf16: return __uint_as_float(static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(scales)[index]) << 16);
    default: return static_cast<const float*>(scales)[index];
  }
}

/// Outputs per 16-byte output vector.
template <DType Out>
__host__ __device__ constexpr int outputs_per_vector() {
  return 128 / bits_of<Out>();
}

/// Table bytes behind one output vector.
template <DType Table, DType Out>
__host__ __device__ constexpr int input_bytes_per_vector() {
  return outputs_per_vector<Out>() * bits_of<Table>() / 8;
}

/// Value of code `k` (0-based, in the table's element order) of the 32-bit words `words`, as an
/// exact f32 (before the scale). Called in fully unrolled loops: `k` is a constant there, and the
/// branches and selectors below fold away.
template <DType Table>
__device__ __forceinline__ float decode_code(const std::uint32_t* words, int k) {
  constexpr int kPerWord = 32 / bits_of<Table>();
  const std::uint32_t word = words[k / kPerWord];
  const int position = k % kPerWord;
  if constexpr (Table == DType::f32) {
    return __uint_as_float(word);
  } else if constexpr (Table == DType::bf16) {
    return __uint_as_float(position == 0 ? word << 16 : word & 0xffff0000u);
  } else if constexpr (Table == DType::f16) {
    __half2 pair;
    static_assert(sizeof pair == sizeof word, "a half2 is a word");
    memcpy(&pair, &word, sizeof word);
    return position == 0 ? __low2float(pair) : __high2float(pair);
  } else if constexpr (Table == DType::i8) {
    // 0x4B000000 is 2^23; byte position of the biased word goes under its exponent (selector: byte 0
    // from x's byte position, bytes 1-2 zero, byte 3 = 0x4B).
    const std::uint32_t biased = word ^ 0x80808080u;
    const float shifted = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7440u | static_cast<unsigned>(position)));
    return shifted - 8388736.0f;  // 2^23 + 128, exact
  } else if constexpr (Table == DType::fp8_e4m3) {
    const auto pair_bits = static_cast<__nv_fp8x2_storage_t>(position < 2 ? word & 0xffffu : word >> 16);
    const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(pair_bits, __NV_E4M3);
    __half2 pair;
    memcpy(&pair, &raw, sizeof raw);
    return position % 2 == 0 ? __low2float(pair) : __high2float(pair);
  } else {
    static_assert(Table == DType::i4, "unknown table dtype");
    // Nibbles 0-4 stay where they are, nibbles 5-7 come from the word shifted by 12 (positions 2-4):
    // a nibble at bit 4s with s <= 4 sits inside f32's 23-bit mantissa.
    const std::uint32_t biased = word ^ 0x88888888u;
    const int shift = position <= 4 ? position : position - 3;
    const std::uint32_t source = position <= 4 ? biased : biased >> 12;
    const float shifted = __uint_as_float((source & (0xfu << (4 * shift))) | 0x4B000000u);
    const float unit = 1.0f / static_cast<float>(1u << (4 * shift));  // 16^-s, exact
    const float bias = 8388608.0f * unit + 8.0f;                      // (2^23 + 8 * 16^s) * 16^-s, exact
    return __fmaf_rn(shifted, unit, -bias);
  }
}

/// Packs two f32 values into one 32-bit word of the output dtype (low half first), rounded once.
template <DType Out>
__device__ __forceinline__ std::uint32_t pack_pair(float low, float high) {
  std::uint32_t word;
  if constexpr (Out == DType::bf16) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
    memcpy(&word, &pair, sizeof word);
  } else {
    static_assert(Out == DType::f16, "pairs are 16-bit outputs");
    const __half2 pair = __floats2half2_rn(low, high);
    memcpy(&word, &pair, sizeof word);
  }
  return word;
}

/// One 16-byte output vector from the table bits behind it (input_bytes_per_vector bytes, as words;
/// int4 -> f32 uses the low 16 bits of one word): value * scale, rounded once to Out.
template <DType Table, DType Out, bool kScaled>
__device__ __forceinline__ uint4 convert_vector(const std::uint32_t* words, float scale) {
  constexpr int kOutputs = outputs_per_vector<Out>();
  float values[kOutputs];
#pragma unroll
  for (int k = 0; k < kOutputs; ++k) {
    values[k] = decode_code<Table>(words, k);
    if constexpr (kScaled) values[k] *= scale;
  }
  std::uint32_t packed[4];
  if constexpr (Out == DType::f32) {
#pragma unroll
    for (int k = 0; k < 4; ++k) packed[k] = __float_as_uint(values[k]);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) packed[k] = pack_pair<Out>(values[2 * k], values[2 * k + 1]);
  }
  return make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

/// One output element from one raw code (the path for any width and alignment).
template <DType Table>
__device__ __forceinline__ float decode_single(std::uint32_t code) {
  const std::uint32_t word = code;  // the code in the low bits of a word, as element 0
  return decode_code<Table>(&word, 0);
}

/// The bits of one output element of dtype Out for an f32 value, rounded once.
template <DType Out>
__device__ __forceinline__ std::uint32_t encode_single(float value) {
  if constexpr (Out == DType::f32) {
    return __float_as_uint(value);
  } else {
    return pack_pair<Out>(value, 0.0f) & 0xffffu;
  }
}

}  // namespace tpembed::cuda_kernels
