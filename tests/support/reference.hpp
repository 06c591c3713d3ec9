// Test support: host tables stored as raw codes, random generators, slicing into shards, and the
// reference lookup computed element by element from the unsharded table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tpembed/tpembed.hpp"

namespace tpembed::testing {

/// A host matrix (or vector, with cols == 1 and `vector` set) of any dtype, as raw bytes.
struct HostTable {
  DType dtype = DType::f32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  bool vector = false;  ///< A 1-D tensor of `rows` elements (scales).
  std::vector<std::uint8_t> bytes;

  HostTable() = default;
  HostTable(DType dtype, std::int64_t rows, std::int64_t cols);
  /// A 1-D tensor of `length` elements.
  static HostTable vector_of(DType dtype, std::int64_t length);

  /// Raw code of element (row, col): the bits of a float, the byte of i8/fp8, the nibble of i4.
  std::uint32_t code(std::int64_t row, std::int64_t col) const;
  void set_code(std::int64_t row, std::int64_t col, std::uint32_t code);
  /// Element (row, col) as f32 (exact for every dtype).
  float value(std::int64_t row, std::int64_t col) const;

  std::int64_t row_stride_bytes() const { return row_bytes(dtype, cols); }
  TensorView view() const;
  /// Copy of rows [first, first + count) (rows past the end come out as zeros).
  HostTable slice_rows(std::int64_t first, std::int64_t count) const;
  /// Copy of columns [first, first + count), repacking i4 nibbles.
  HostTable slice_cols(std::int64_t first, std::int64_t count) const;
};

/// A random table: finite values of every magnitude for float dtypes (signed zeros and subnormals
/// included), every non-NaN code for quantized ones.
HostTable random_table(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed);

/// Random positive scales (a 1-D tensor of `length`), values that exercise rounding.
HostTable random_scales(DType dtype, std::int64_t length, std::uint64_t seed);

/// The whole, unsharded problem.
struct Problem {
  HostTable table;                       ///< [V, H]
  std::optional<HostTable> scale;        ///< [V]
  std::optional<HostTable> padding;      ///< [P, H]
  std::optional<HostTable> padding_scale;  ///< [P]
};

/// A random problem: V x H table of `table_dtype`, scales of `scale_dtype` when given (always for
/// quantized tables), `padding_rows` padding rows.
Problem random_problem(DType table_dtype, std::int64_t vocab, std::int64_t hidden,
                       std::optional<DType> scale_dtype, std::int64_t padding_rows,
                       std::uint64_t seed);

/// The reference: out row t = value(row) * scale(row) in f32, rounded once to `out_dtype`; zeros
/// for ids outside [0, valid_ids) and for padding rows when padding is not addressable.
/// `valid_ids` defaults to V + P. Returns the output bytes.
std::vector<std::uint8_t> reference_lookup(const Problem& problem, const std::vector<std::int64_t>& ids,
                                           DType out_dtype, std::optional<std::int64_t> valid_ids = {});

/// Ids as a tensor of `id_dtype`, raw bytes.
std::vector<std::uint8_t> encode_ids(const std::vector<std::int64_t>& ids, DType id_dtype);

/// Ids covering interesting cases for a table of `vocab` rows and `padding_rows` padding rows:
/// 0, V-1, every boundary in `boundaries` (and its neighbours), negatives, V, V+P, huge values,
/// plus `random_count` random in-range ids.
std::vector<std::int64_t> interesting_ids(std::int64_t vocab, std::int64_t padding_rows,
                                          const std::vector<std::int64_t>& boundaries,
                                          std::int64_t random_count, std::uint64_t seed);

/// Index and values of the first differing element (as f32) for a readable failure, or "".
std::string first_difference(const std::vector<std::uint8_t>& actual,
                             const std::vector<std::uint8_t>& expected, DType dtype,
                             std::int64_t cols);

}  // namespace tpembed::testing
