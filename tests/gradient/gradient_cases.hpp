// The backward's test matrix, shared by the CPU and GPU tests: id patterns (empty, one id, one row
// hit many times, uniform, skewed, shard edges, bad ids, the ignored id, padding) x widths x dtypes
// x modes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gradient_reference.hpp"

namespace tpembed::testing {

enum class IdPattern { empty, one, one_row, uniform, skewed, shard_edges, bad_ids, ignored, padding, tile_edges };

inline const char* pattern_name(IdPattern pattern) {
  switch (pattern) {
    case IdPattern::empty: return "empty";
    case IdPattern::one: return "one";
    case IdPattern::one_row: return "one_row";
    case IdPattern::uniform: return "uniform";
    case IdPattern::skewed: return "skewed";
    case IdPattern::shard_edges: return "shard_edges";
    case IdPattern::bad_ids: return "bad_ids";
    case IdPattern::ignored: return "ignored";
    case IdPattern::padding: return "padding";
    case IdPattern::tile_edges: return "tile_edges";
  }
  return "?";
}

struct GradientCase {
  IdPattern pattern;
  std::int64_t cols;
  DType grad_out;
  DType grad;
  bool accumulate;
  bool scaled;
  DType id = DType::i64;
  std::int64_t column_offset = 0;
};

inline std::ostream& operator<<(std::ostream& os, const GradientCase& c) {
  return os << pattern_name(c.pattern) << "_H" << c.cols << "_" << dtype_name(c.grad_out) << "_to_"
            << dtype_name(c.grad) << (c.accumulate ? "_acc" : "_over") << (c.scaled ? "_scaled" : "") << "_"
            << dtype_name(c.id) << (c.column_offset ? "_cols" + std::to_string(c.column_offset) : "");
}

/// A case's name in the test list (gtest's name generator).
inline std::string gradient_case_name(const ::testing::TestParamInfo<GradientCase>& info) {
  std::ostringstream name;
  name << info.param;
  return name.str();
}

/// The problem of a case: about 600 ids over a 97-row table (or the pattern's own).
inline GradientProblem case_problem(const GradientCase& c, std::uint64_t seed = 7) {
  constexpr std::int64_t kRows = 97;
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> ids;
  std::int64_t row_offset = 0, padding_rows = 0, valid = kRows;
  std::optional<std::int64_t> ignored;
  auto uniform = [&](std::int64_t count, std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = 0; i < count; ++i) ids.push_back(lo + static_cast<std::int64_t>(rng() % (hi - lo)));
  };
  switch (c.pattern) {
    case IdPattern::empty: break;
    case IdPattern::one: ids = {41}; break;
    case IdPattern::one_row: ids.assign(1000, 5); break;  // 32 tiles of one row
    case IdPattern::uniform: uniform(600, 0, kRows); break;
    case IdPattern::skewed:
      // Half the positions on 3 rows (runs across many tiles), the rest spread, shuffled.
      for (int i = 0; i < 700; ++i) ids.push_back(i % 2 ? static_cast<std::int64_t>(rng() % kRows) : 10 + (i / 2) % 3);
      std::shuffle(ids.begin(), ids.end(), rng);
      break;
    case IdPattern::shard_edges:
      // This shard holds global rows [300, 397) of 1000: ids around both edges and others' rows.
      row_offset = 300, valid = 1000;
      for (std::int64_t id : {299, 300, 301, 395, 396, 397, 398, 0, 999}) ids.insert(ids.end(), 40, std::int64_t{id});
      uniform(300, 0, 1000);
      std::shuffle(ids.begin(), ids.end(), rng);
      break;
    case IdPattern::bad_ids:
      for (std::int64_t id : std::initializer_list<std::int64_t>{-1, -7, kRows, kRows + 1, std::int64_t{1} << 40}) {
        ids.insert(ids.end(), 30, id);
      }
      uniform(300, 0, kRows);
      std::shuffle(ids.begin(), ids.end(), rng);
      break;
    case IdPattern::ignored:
      ignored = 7;
      ids.assign(200, 7);
      uniform(400, 0, kRows);
      std::shuffle(ids.begin(), ids.end(), rng);
      break;
    case IdPattern::padding:
      padding_rows = 5, valid = kRows + padding_rows;
      uniform(500, 0, kRows + padding_rows + 3);  // padding rows and a few past them
      break;
    case IdPattern::tile_edges: {
      // Rows whose positions end just before, at and after tile and chunk boundaries of the sorted
      // list: row 1 starts at entry 31 and spans four tiles; rows of 8, 9, 16 and 17 chunks meet
      // the edges of the fix-up's look-ahead.
      const std::int64_t counts[] = {31, 70, 1, 32, 33, 63, 64, 65, 256, 288, 1, 512, 544};
      for (std::int64_t row = 0; row < static_cast<std::int64_t>(std::size(counts)); ++row) {
        ids.insert(ids.end(), static_cast<std::size_t>(counts[row]), row);
      }
      std::shuffle(ids.begin(), ids.end(), rng);
      break;
    }
  }
  GradientProblem p = random_gradient_problem(ids, kRows, c.cols, c.grad_out, c.grad, seed * 31 + 1);
  if (c.column_offset > 0) {  // a hidden shard's columns of a wider gradient
    p.grad_out = random_gradient_problem(ids, 1, c.column_offset + c.cols + 8, c.grad_out, c.grad, seed * 31 + 3).grad_out;
    p.column_offset = c.column_offset;
  }
  p.id_dtype = c.id;
  p.row_offset = row_offset;
  p.valid_ids = valid;
  p.ignored_id = ignored;
  p.accumulate = c.accumulate;
  p.padding_rows = padding_rows;
  p.initial_padding = random_gradient_problem({}, padding_rows, c.cols, c.grad_out, c.grad, seed * 31 + 5).initial;
  if (c.scaled) {
    p.scale = random_scales(DType::bf16, kRows, seed + 11);
    if (padding_rows > 0) p.padding_scale = random_scales(DType::bf16, padding_rows, seed + 13);
  }
  return p;
}

/// The matrix: every pattern at a few widths, and every dtype pair, mode, scale and id dtype.
inline std::vector<GradientCase> gradient_cases() {
  std::vector<GradientCase> cases;
  const IdPattern patterns[] = {IdPattern::empty,       IdPattern::one,     IdPattern::one_row,
                                IdPattern::uniform,     IdPattern::skewed,  IdPattern::shard_edges,
                                IdPattern::bad_ids,     IdPattern::ignored, IdPattern::padding,
                                IdPattern::tile_edges};
  for (IdPattern pattern : patterns) {
    for (std::int64_t cols : {1, 3, 7, 64, 127, 733}) {
      cases.push_back({pattern, cols, DType::bf16, DType::f32, false, false});
    }
  }
  for (DType grad_out : {DType::f32, DType::f16, DType::bf16}) {
    for (DType grad : {DType::f32, DType::f16, DType::bf16}) {
      for (bool accumulate : {false, true}) {
        cases.push_back({IdPattern::skewed, 40, grad_out, grad, accumulate, false});
        cases.push_back({IdPattern::padding, 24, grad_out, grad, accumulate, true, DType::i32});
      }
    }
  }
  cases.push_back({IdPattern::uniform, 16, DType::f32, DType::f32, true, true, DType::i32, 8});
  cases.push_back({IdPattern::one_row, 24, DType::bf16, DType::bf16, false, false, DType::i64, 3});
  // Two column slabs of the 8-column path, a hidden shard's columns 16 bytes into each row.
  cases.push_back({IdPattern::tile_edges, 1040, DType::bf16, DType::f32, false, false, DType::i64, 8});
  cases.push_back({IdPattern::skewed, 1040, DType::bf16, DType::bf16, true, true, DType::i32, 8});
  return cases;
}

}  // namespace tpembed::testing
