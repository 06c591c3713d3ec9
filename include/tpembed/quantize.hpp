// Per-row absmax quantisation of a float table into an int8, fp8 or int4 table plus row scales, so
// that dequantising (value * scale) approximates the original.
#pragma once

#include "tpembed/tensor.hpp"

namespace tpembed {

/// A quantised table: `weight` [rows, cols] of the target dtype and `scale` [rows].
struct QuantizedTable {
  Tensor weight;
  Tensor scale;
};

/// Quantises each row of a host float table (f32, f16 or bf16, shape [rows, cols]) to `target`
/// (i8, fp8_e4m3 or i4) with one scale per row of dtype `scale_dtype` (f32, f16 or bf16):
/// scale = absmax(row) / max_code (127, 448 or 7), code = round_to_nearest_even(x / scale),
/// clamped to the target's range. A row of zeros gets scale 1 and zero codes. A table holding Inf
/// or NaN is refused (InvalidArgumentError naming the first such row and column): no scale
/// represents it.
QuantizedTable quantize_rows(const TensorView& table, DType target, DType scale_dtype = DType::f32);

}  // namespace tpembed
