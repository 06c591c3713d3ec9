#include "reference.hpp"

#include <cstring>
#include <sstream>

namespace tpembed::testing {

namespace {

std::uint32_t code_bits(DType dtype) {
  switch (dtype) {
    case DType::f32: case DType::i32: return 32;
    case DType::f16: case DType::bf16: return 16;
    case DType::i4: return 4;
    case DType::i64: return 64;
    default: return 8;
  }
}

std::uint32_t encode_out(float value, DType out_dtype) {
  switch (out_dtype) {
    case DType::f32: return f32_bits(value);
    case DType::f16: return f32_to_f16_bits(value);
    case DType::bf16: return f32_to_bf16_bits(value);
    default: throw InvalidArgumentError("reference: bad output dtype");
  }
}

}  // namespace

HostTable::HostTable(DType dtype_, std::int64_t rows_, std::int64_t cols_)
    : dtype(dtype_), rows(rows_), cols(cols_),
      bytes(static_cast<std::size_t>(rows_ * row_bytes(dtype_, cols_)), 0) {}

HostTable HostTable::vector_of(DType dtype, std::int64_t length) {
  HostTable table(dtype, length, 1);
  table.vector = true;
  return table;
}

std::uint32_t HostTable::code(std::int64_t row, std::int64_t col) const {
  const std::uint8_t* base = bytes.data() + row * row_stride_bytes();
  switch (code_bits(dtype)) {
    case 32: { std::uint32_t v; std::memcpy(&v, base + col * 4, 4); return v; }
    case 16: { std::uint16_t v; std::memcpy(&v, base + col * 2, 2); return v; }
    case 4: return (base[col / 2] >> (4 * (col % 2))) & 0xfu;
    default: return base[col];
  }
}

void HostTable::set_code(std::int64_t row, std::int64_t col, std::uint32_t value) {
  std::uint8_t* base = bytes.data() + row * row_stride_bytes();
  switch (code_bits(dtype)) {
    case 32: std::memcpy(base + col * 4, &value, 4); break;
    case 16: { const auto v = static_cast<std::uint16_t>(value); std::memcpy(base + col * 2, &v, 2); break; }
    case 4: {
      const int shift = 4 * (col % 2);
      base[col / 2] = static_cast<std::uint8_t>((base[col / 2] & ~(0xf << shift)) | ((value & 0xf) << shift));
      break;
    }
    default: base[col] = static_cast<std::uint8_t>(value);
  }
}

float HostTable::value(std::int64_t row, std::int64_t col) const {
  const std::uint32_t c = code(row, col);
  switch (dtype) {
    case DType::f32: return f32_from_bits(c);
    case DType::f16: return f16_bits_to_f32(static_cast<std::uint16_t>(c));
    case DType::bf16: return f32_from_bits(c << 16);
    case DType::i8: return static_cast<float>(static_cast<std::int8_t>(c));
    case DType::fp8_e4m3: return fp8_e4m3_bits_to_f32(static_cast<std::uint8_t>(c));
    case DType::i4: return static_cast<float>(c >= 8 ? static_cast<int>(c) - 16 : static_cast<int>(c));
    default: throw InvalidArgumentError("reference: not a table dtype");
  }
}

TensorView HostTable::view() const {
  if (vector) return TensorView(bytes.data(), dtype, {rows});
  return TensorView(bytes.data(), dtype, {rows, cols});
}

HostTable HostTable::slice_rows(std::int64_t first, std::int64_t count) const {
  HostTable out(dtype, count, cols);
  out.vector = vector;
  for (std::int64_t r = 0; r < count && first + r < rows; ++r) {
    std::memcpy(out.bytes.data() + r * row_stride_bytes(), bytes.data() + (first + r) * row_stride_bytes(),
                static_cast<std::size_t>(row_stride_bytes()));
  }
  return out;
}

HostTable HostTable::slice_cols(std::int64_t first, std::int64_t count) const {
  HostTable out(dtype, rows, count);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < count; ++c) out.set_code(r, c, code(r, first + c));
  }
  return out;
}

std::vector<std::uint8_t> reference_lookup(const Problem& problem, const std::vector<std::int64_t>& ids,
                                           DType out_dtype, std::optional<std::int64_t> valid_ids) {
  const HostTable& table = problem.table;
  const std::int64_t vocab = table.rows, hidden = table.cols;
  const std::int64_t padding_rows = problem.padding ? problem.padding->rows : 0;
  const std::int64_t limit = valid_ids ? *valid_ids : vocab + padding_rows;
  const std::int64_t out_row = row_bytes(out_dtype, hidden);
  std::vector<std::uint8_t> out(ids.size() * static_cast<std::size_t>(out_row), 0);
  HostTable rows(out_dtype, static_cast<std::int64_t>(ids.size()), hidden);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const std::int64_t id = ids[t];
    const HostTable* source = nullptr;
    const HostTable* scales = nullptr;
    std::int64_t row = 0;
    if (id >= 0 && id < limit && id < vocab) {
      source = &table;
      scales = problem.scale ? &*problem.scale : nullptr;
      row = id;
    } else if (id >= vocab && id < limit && id < vocab + padding_rows) {
      source = &*problem.padding;
      scales = problem.padding_scale ? &*problem.padding_scale : nullptr;
      row = id - vocab;
    }
    for (std::int64_t c = 0; c < hidden; ++c) {
      float value = 0.0f;
      if (source != nullptr) {
        value = source->value(row, c);
        if (scales != nullptr) value = value * scales->value(row, 0);
      }
      rows.set_code(static_cast<std::int64_t>(t), c, encode_out(value, out_dtype));
    }
  }
  return rows.bytes;
}

std::vector<std::uint8_t> encode_ids(const std::vector<std::int64_t>& ids, DType id_dtype) {
  std::vector<std::uint8_t> bytes(ids.size() * element_size(id_dtype));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (id_dtype == DType::i32) {
      const auto v = static_cast<std::int32_t>(ids[i]);
      std::memcpy(bytes.data() + i * 4, &v, 4);
    } else {
      std::memcpy(bytes.data() + i * 8, &ids[i], 8);
    }
  }
  return bytes;
}

std::string first_difference(const std::vector<std::uint8_t>& actual,
                             const std::vector<std::uint8_t>& expected, DType dtype,
                             std::int64_t cols) {
  if (actual.size() != expected.size()) {
    return "sizes differ: " + std::to_string(actual.size()) + " vs " + std::to_string(expected.size());
  }
  if (cols == 0 || actual == expected) return "";
  HostTable a(dtype, static_cast<std::int64_t>(actual.size()) / row_bytes(dtype, cols), cols);
  HostTable e = a;
  a.bytes = actual;
  e.bytes = expected;
  for (std::int64_t r = 0; r < a.rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      if (a.code(r, c) != e.code(r, c)) {
        std::ostringstream text;
        text << "first difference at [" << r << ", " << c << "]: got " << a.value(r, c) << " (0x"
             << std::hex << a.code(r, c) << "), expected " << std::dec << e.value(r, c) << " (0x"
             << std::hex << e.code(r, c) << ")";
        return text.str();
      }
    }
  }
  return "";
}

}  // namespace tpembed::testing
