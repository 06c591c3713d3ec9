// Loading one table element as f32 and storing one f32 as an output element, on the host.
#pragma once

#include <cstdint>
#include <cstring>

#include "tpembed/dtype.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::cpu {

template <typename T>
inline T read_unaligned(const std::uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof value);
  return value;
}

/// Element `col` of a row of dtype `Table`, as f32 (exact for every table dtype).
template <DType Table>
inline float load_element(const std::uint8_t* row, std::int64_t col) {
  if constexpr (Table == DType::f32) {
    return read_unaligned<float>(row + col * 4);
  } else if constexpr (Table == DType::f16) {
    return f16_bits_to_f32(read_unaligned<std::uint16_t>(row + col * 2));
  } else if constexpr (Table == DType::bf16) {
    return bf16_bits_to_f32(read_unaligned<std::uint16_t>(row + col * 2));
  } else if constexpr (Table == DType::i8) {
    return static_cast<float>(static_cast<std::int8_t>(row[col]));
  } else if constexpr (Table == DType::fp8_e4m3) {
    return fp8_e4m3_bits_to_f32(row[col]);
  } else {
    static_assert(Table == DType::i4, "not a table dtype");
    return static_cast<float>(int4_at(row, col));
  }
}

/// Stores `value` rounded once (nearest even) as element `col` of an `Out` row.
template <DType Out>
inline void store_element(std::uint8_t* row, std::int64_t col, float value) {
  if constexpr (Out == DType::f32) {
    std::memcpy(row + col * 4, &value, 4);
  } else if constexpr (Out == DType::f16) {
    const std::uint16_t bits = f32_to_f16_bits(value);
    std::memcpy(row + col * 2, &bits, 2);
  } else {
    static_assert(Out == DType::bf16, "not an output dtype");
    const std::uint16_t bits = f32_to_bf16_bits(value);
    std::memcpy(row + col * 2, &bits, 2);
  }
}

/// Scale `index` of a scale vector of dtype f32, f16 or bf16, as f32.
inline float load_scale(const void* scales, DType dtype, std::int64_t index) {
  const auto* bytes = static_cast<const std::uint8_t*>(scales);
  switch (dtype) {
    case DType::f16: return load_element<DType::f16>(bytes, index);
    case DType::bf16: return load_element<DType::bf16>(bytes, index);
    default: return load_element<DType::f32>(bytes, index);
  }
}

}  // namespace tpembed::cpu
