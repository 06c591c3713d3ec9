// The single-rank test matrix, shared by the CPU and the GPU tests: every (table dtype x id
// dtype x output dtype x scale dtype), V and H over odd sizes, and ids of several shapes.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "reference.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::testing {

struct Case {
  DType table;
  DType id;
  DType out;
  std::optional<DType> scale;
  std::int64_t vocab;
  std::int64_t hidden;
  std::int64_t padding_rows;
  std::vector<std::int64_t> ids_shape;  ///< Leading dims; the last one is filled with ids.
};

inline std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::ostringstream name;
  name << dtype_name(c.table) << "_" << dtype_name(c.id) << "_to_" << dtype_name(c.out) << "_scale_"
       << (c.scale ? dtype_name(*c.scale) : "none") << "_V" << c.vocab << "_H" << c.hidden << "_P"
       << c.padding_rows << "_ids";
  for (auto extent : c.ids_shape) name << "x" << extent;
  name << "_" << info.index;
  return name.str();
}

inline std::vector<Case> dtype_matrix() {
  std::vector<Case> cases;
  const DType tables[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::fp8_e4m3, DType::i4};
  const DType outs[] = {DType::f32, DType::f16, DType::bf16};
  for (DType table : tables) {
    for (DType id : {DType::i32, DType::i64}) {
      for (DType out : outs) {
        std::vector<std::optional<DType>> scales = {DType::f32, DType::f16, DType::bf16};
        if (!is_quantized(table)) scales.push_back(std::nullopt);
        for (auto scale : scales) cases.push_back({table, id, out, scale, 127, 733, 3, {5, 41}});
      }
    }
  }
  return cases;
}

inline std::vector<Case> shape_sweep() {
  std::vector<Case> cases;
  const std::int64_t sizes[] = {1, 3, 7, 127, 733, 4096};
  for (auto vocab : sizes) {
    for (auto hidden : sizes) {
      cases.push_back({DType::bf16, DType::i64, DType::bf16, std::nullopt, vocab, hidden, 0, {67}});
      cases.push_back({DType::i4, DType::i32, DType::f32, DType::bf16, vocab, hidden, 2, {67}});
    }
  }
  return cases;
}

inline std::vector<Case> id_shapes() {
  std::vector<Case> cases;
  for (auto shape : std::vector<std::vector<std::int64_t>>{{0}, {1}, {2, 3, 5}, {0, 4}, {3, 0}}) {
    cases.push_back({DType::f16, DType::i32, DType::f32, std::nullopt, 7, 3, 1, shape});
    cases.push_back({DType::fp8_e4m3, DType::i64, DType::bf16, DType::f16, 7, 3, 1, shape});
  }
  return cases;
}

/// Host views of a whole problem as one rank's shard (views into `problem`, which must outlive them).
inline EmbeddingShard whole_shard(const Problem& problem) {
  EmbeddingShard shard;
  shard.weight = problem.table.view();
  if (problem.scale) shard.scale = problem.scale->view();
  if (problem.padding) shard.padding = problem.padding->view();
  if (problem.padding_scale) shard.padding_scale = problem.padding_scale->view();
  return shard;
}

/// A case's data: the random problem, its ids (the interesting ones, cycled to fill the shape),
/// the reference output, the count of bad ids, and the shard of the whole table (host views).
struct CaseData {
  Problem problem;
  std::vector<std::int64_t> ids;
  std::int64_t count = 0;
  std::uint64_t expected_bad = 0;
  std::vector<std::uint8_t> expected;
  EmbeddingConfig config;

  EmbeddingShard shard() const { return whole_shard(problem); }
};

inline CaseData case_data(const Case& c) {
  CaseData data;
  const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(c.vocab * 31 + c.hidden);
  data.problem = random_problem(c.table, c.vocab, c.hidden, c.scale, c.padding_rows, seed);
  data.count = 1;
  for (auto extent : c.ids_shape) data.count *= extent;
  const auto pool = interesting_ids(c.vocab, c.padding_rows, {c.vocab / 2}, 97, seed);
  data.ids.resize(static_cast<std::size_t>(data.count));
  for (std::size_t i = 0; i < data.ids.size(); ++i) data.ids[i] = pool[i % pool.size()];
  for (auto id : data.ids) data.expected_bad += (id < 0 || id >= c.vocab + c.padding_rows) ? 1 : 0;
  data.expected = reference_lookup(data.problem, data.ids, c.out);
  if (c.out != c.table || is_quantized(c.table)) data.config.out_dtype = c.out;
  return data;
}

/// Widths that divide into 16-byte output vectors, small and large: the GPU's vector paths (narrow
/// and wide loads, rows split over several blocks, warps past the row's end) for every dtype pair.
inline std::vector<Case> vector_widths() {
  std::vector<Case> cases;
  const DType tables[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::fp8_e4m3, DType::i4};
  for (DType table : tables) {
    for (DType out : {DType::f32, DType::f16, DType::bf16}) {
      for (std::int64_t hidden : {64, 1024, 2112}) {
        const std::optional<DType> scale = is_quantized(table) || hidden == 1024 ? std::optional<DType>(DType::f32)
                                                                                 : std::nullopt;
        cases.push_back({table, DType::i64, out, scale, 127, hidden, 2, {3, 29}});
      }
    }
  }
  return cases;
}

}  // namespace tpembed::testing
