#include <algorithm>
#include <limits>
#include <random>

#include "reference.hpp"

namespace tpembed::testing {

namespace {

// A random finite code of `dtype`: no NaN or Inf, signed zeros and subnormals included.
std::uint32_t random_code(DType dtype, std::mt19937_64& rng) {
  const std::uint64_t bits = rng();
  switch (dtype) {
    case DType::f32: {
      // Exponents spread over a range that products with scales keep finite; some subnormals.
      const std::uint32_t sign = static_cast<std::uint32_t>(bits >> 63) << 31;
      const std::uint32_t mantissa = static_cast<std::uint32_t>(bits) & 0x7fffffu;
      const std::uint32_t pick = static_cast<std::uint32_t>(bits >> 40) % 64;
      const std::uint32_t exponent = pick == 0 ? 0 : 127 - 40 + (static_cast<std::uint32_t>(bits >> 48) % 80);
      return sign | (exponent << 23) | mantissa;
    }
    case DType::f16: {
      std::uint32_t code = static_cast<std::uint32_t>(bits) & 0xffffu;
      if (((code >> 10) & 0x1fu) == 0x1fu) code &= ~0x4000u;  // Inf/NaN exponent -> finite
      return code;
    }
    case DType::bf16: {
      std::uint32_t code = static_cast<std::uint32_t>(bits) & 0xffffu;
      if (((code >> 7) & 0xffu) == 0xffu) code &= ~0x4000u;
      return code;
    }
    case DType::fp8_e4m3: {
      std::uint32_t code = static_cast<std::uint32_t>(bits) & 0xffu;
      if ((code & 0x7fu) == 0x7fu) code &= ~0x1u;  // NaN -> 448
      return code;
    }
    case DType::i4: return static_cast<std::uint32_t>(bits) & 0xfu;
    default: return static_cast<std::uint32_t>(bits) & 0xffu;
  }
}

}  // namespace

HostTable random_table(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostTable table(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) table.set_code(r, c, random_code(dtype, rng));
  }
  return table;
}

HostTable random_scales(DType dtype, std::int64_t length, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> magnitude(0.001f, 2.0f);
  HostTable scales = HostTable::vector_of(dtype, length);
  for (std::int64_t i = 0; i < length; ++i) {
    const float value = magnitude(rng);
    const std::uint32_t code = dtype == DType::f32   ? f32_bits(value)
                               : dtype == DType::f16 ? f32_to_f16_bits(value)
                                                     : f32_to_bf16_bits(value);
    scales.set_code(i, 0, code);
  }
  return scales;
}

Problem random_problem(DType table_dtype, std::int64_t vocab, std::int64_t hidden,
                       std::optional<DType> scale_dtype, std::int64_t padding_rows,
                       std::uint64_t seed) {
  Problem problem;
  problem.table = random_table(table_dtype, vocab, hidden, seed);
  if (is_quantized(table_dtype) && !scale_dtype) scale_dtype = DType::f32;
  if (scale_dtype) problem.scale = random_scales(*scale_dtype, vocab, seed + 1);
  if (padding_rows > 0) {
    problem.padding = random_table(table_dtype, padding_rows, hidden, seed + 2);
    if (scale_dtype) problem.padding_scale = random_scales(*scale_dtype, padding_rows, seed + 3);
  }
  return problem;
}

std::vector<std::int64_t> interesting_ids(std::int64_t vocab, std::int64_t padding_rows,
                                          const std::vector<std::int64_t>& boundaries,
                                          std::int64_t random_count, std::uint64_t seed) {
  std::vector<std::int64_t> ids = {0,
                                   vocab - 1,
                                   -1,
                                   -vocab,
                                   vocab,
                                   vocab + padding_rows,
                                   vocab + padding_rows + 1,
                                   std::numeric_limits<std::int32_t>::min(),
                                   std::numeric_limits<std::int32_t>::max()};
  if (padding_rows > 0) {
    ids.push_back(vocab + padding_rows - 1);
    ids.push_back(vocab);  // the first padding row, twice: repeats are fine
  }
  for (std::int64_t boundary : boundaries) {
    for (std::int64_t delta : {-1, 0, 1}) ids.push_back(boundary + delta);
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> any(0, std::max<std::int64_t>(0, vocab + padding_rows - 1));
  for (std::int64_t i = 0; i < random_count; ++i) ids.push_back(any(rng));
  return ids;
}

}  // namespace tpembed::testing
