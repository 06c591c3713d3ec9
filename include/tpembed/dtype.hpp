// Element types tpembed understands: table, scale, id and output dtypes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "tpembed/platform.hpp"

namespace tpembed {

/// Element type of a tensor.
///
/// Tables may be any of f32, f16, bf16, i8, fp8_e4m3 or i4; scales f32, f16 or bf16; ids i32 or
/// i64; outputs f32, f16 or bf16. `i4` packs two signed values (-8..7) per byte, low nibble first,
/// and each table row starts on a fresh byte (a row of H columns takes ceil(H/2) bytes).
enum class DType : std::uint8_t {
  f32,
  f16,
  bf16,
  i8,
  fp8_e4m3,  ///< OCP fp8 e4m3fn: 4 exponent bits, 3 mantissa bits, no infinities, max 448.
  i4,
  i32,
  i64,
};

/// Short lower-case name of a dtype ("f32", "bf16", "fp8_e4m3", ...).
const char* dtype_name(DType dtype);

/// Parses a name produced by dtype_name(); throws InvalidArgumentError on an unknown name.
DType dtype_from_name(const std::string& name);

/// True for the dtypes a table may hold that need a per-row scale (i8, fp8_e4m3, i4).
TPEMBED_HD constexpr bool is_quantized(DType dtype) {
  return dtype == DType::i8 || dtype == DType::fp8_e4m3 || dtype == DType::i4;
}

/// True for f32, f16 and bf16: the dtypes an output or a scale may have.
TPEMBED_HD constexpr bool is_float(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
}

/// True for i32 and i64: the dtypes ids may have.
TPEMBED_HD constexpr bool is_index(DType dtype) {
  return dtype == DType::i32 || dtype == DType::i64;
}

/// True for every dtype a table may hold.
TPEMBED_HD constexpr bool is_table_dtype(DType dtype) { return is_float(dtype) || is_quantized(dtype); }

/// Bytes taken by one row of `cols` elements of `dtype` (i4 rounds up to whole bytes).
TPEMBED_HD constexpr std::int64_t row_bytes(DType dtype, std::int64_t cols) {
  switch (dtype) {
    case DType::f32:
    case DType::i32:
      return cols * 4;
    case DType::f16:
    case DType::bf16:
      return cols * 2;
    case DType::i8:
    case DType::fp8_e4m3:
      return cols;
    case DType::i4:
      return (cols + 1) / 2;
    case DType::i64:
      return cols * 8;
  }
  return 0;
}

/// Size in bytes of one element; 0 for i4, which is smaller than a byte (use row_bytes()).
TPEMBED_HD constexpr std::size_t element_size(DType dtype) {
  return dtype == DType::i4 ? 0 : static_cast<std::size_t>(row_bytes(dtype, 1));
}

}  // namespace tpembed
