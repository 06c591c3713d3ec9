#include "tpembed/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "cpu/elements.hpp"
#include "tpembed/error.hpp"

namespace tpembed {

namespace {

float load_float(const TensorView& table, std::int64_t row, std::int64_t col) {
  const auto* bytes = static_cast<const std::uint8_t*>(table.data) + row * row_bytes(table.dtype, table.shape[1]);
  switch (table.dtype) {
    case DType::f16: return cpu::load_element<DType::f16>(bytes, col);
    case DType::bf16: return cpu::load_element<DType::bf16>(bytes, col);
    default: return cpu::load_element<DType::f32>(bytes, col);
  }
}

float max_code(DType target) {
  switch (target) {
    case DType::i8: return 127.0f;
    case DType::fp8_e4m3: return 448.0f;
    default: return 7.0f;
  }
}

}  // namespace

QuantizedTable quantize_rows(const TensorView& table, DType target, DType scale_dtype) {
  TPEMBED_EXPECTS(is_float(table.dtype), InvalidArgumentError, "quantize_rows: the table must be f32, f16 or bf16, not ",
                  dtype_name(table.dtype));
  TPEMBED_EXPECTS(table.ndim() == 2, ShapeError, "quantize_rows: the table must be 2-D, got ", table.describe());
  TPEMBED_EXPECTS(table.device.kind == DeviceKind::cpu, InvalidArgumentError,
                  "quantize_rows: the table must be in host memory, not on ", device_name(table.device));
  TPEMBED_EXPECTS(is_quantized(target), InvalidArgumentError, "quantize_rows: target must be i8, fp8_e4m3 or i4, not ",
                  dtype_name(target));
  TPEMBED_EXPECTS(is_float(scale_dtype), InvalidArgumentError,
                  "quantize_rows: scale dtype must be f32, f16 or bf16, not ", dtype_name(scale_dtype));
  TPEMBED_EXPECTS(table.data != nullptr || table.numel() == 0, InvalidArgumentError,
                  "quantize_rows: null table data with ", table.numel(), " elements");
  const std::int64_t rows = table.shape[0], cols = table.shape[1];
  QuantizedTable result;
  try {
    result = {Tensor(target, {rows, cols}), Tensor(scale_dtype, {rows})};
  } catch (const std::bad_alloc&) {
    throw BackendError(detail::concat("quantize_rows: out of memory: cannot allocate ",
                                      row_bytes(target, cols) * rows + row_bytes(scale_dtype, rows),
                                      " bytes for the ", dtype_name(target), " table [", rows, ", ", cols,
                                      "] and its scales"));
  }
  auto* codes = static_cast<std::uint8_t*>(result.weight.data());
  std::memset(codes, 0, static_cast<std::size_t>(result.weight.nbytes()));
  auto* scales = static_cast<std::uint8_t*>(result.scale.data());
  const float limit = max_code(target);
  for (std::int64_t r = 0; r < rows; ++r) {
    float absmax = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float value = load_float(table, r, c);
      // Inf has no scale that represents it and NaN none at all: a "quantised" row would come back
      // as other numbers with no word, so the table is refused.
      TPEMBED_EXPECTS(std::isfinite(value), InvalidArgumentError, "quantize_rows: row ", r, ", column ", c,
                      " holds ", value, "; only finite values can be quantised (fix or drop that row first)");
      absmax = std::max(absmax, std::fabs(value));
    }
    float scale = absmax > 0.0f ? absmax / limit : 1.0f;
    // Store the scale in its dtype first, and quantise against the stored value.
    switch (scale_dtype) {
      case DType::f16: cpu::store_element<DType::f16>(scales, r, scale); scale = cpu::load_element<DType::f16>(scales, r); break;
      case DType::bf16: cpu::store_element<DType::bf16>(scales, r, scale); scale = cpu::load_element<DType::bf16>(scales, r); break;
      default: cpu::store_element<DType::f32>(scales, r, scale); break;
    }
    std::uint8_t* row = codes + r * row_bytes(target, cols);
    for (std::int64_t c = 0; c < cols; ++c) {
      const float x = load_float(table, r, c) / scale;
      if (target == DType::fp8_e4m3) {
        row[c] = f32_to_fp8_e4m3_bits(std::clamp(x, -448.0f, 448.0f));
        continue;
      }
      const float q = std::clamp(std::nearbyint(x), target == DType::i4 ? -8.0f : -127.0f, limit);
      const int code = static_cast<int>(q);
      if (target == DType::i8) {
        row[c] = static_cast<std::uint8_t>(static_cast<std::int8_t>(code));
      } else {
        row[c >> 1] = static_cast<std::uint8_t>(row[c >> 1] | ((code & 0xf) << (4 * (c & 1))));
      }
    }
  }
  return result;
}

}  // namespace tpembed
