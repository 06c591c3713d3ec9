// Which row of the shard (if any) a position's id sends its gradient to: one rule for the CPU and
// CUDA backwards (gradient.hpp, GradientParams), so that both sort the same keys.
#pragma once

#include <cstdint>

#include "tpembed/gradient.hpp"
#include "tpembed/platform.hpp"

namespace tpembed::gradient {

/// What a position is (GradientCounts' fields, in their order).
enum Verdict : int { accumulated = 0, unowned = 1, out_of_range = 2, ignored = 3 };

/// The id rule of a GradientParams, in a form a kernel takes by value.
struct IdRule {
  std::int64_t row_offset;
  std::int64_t rows;
  std::int64_t padding_rows;
  std::int64_t valid_ids;
  std::int64_t ignored_id;
  bool has_ignored_id;

  static IdRule of(const GradientParams& p) {
    return {p.row_offset, p.rows, p.padding_rows, p.valid_ids, p.ignored_id, p.has_ignored_id};
  }
  /// Keys are local rows: [0, rows) the table's, [rows, rows + padding_rows) the padding's.
  TPEMBED_HD std::int64_t key_count() const { return rows + padding_rows; }

  /// The verdict for `id`; for `accumulated`, *key is the local row.
  TPEMBED_HD Verdict classify(std::int64_t id, std::uint32_t* key) const {
    if (has_ignored_id && id == ignored_id) return ignored;
    if (id < 0 || id >= valid_ids) return out_of_range;
    const std::int64_t local = id - row_offset;
    if (local < 0 || local >= rows + padding_rows) return unowned;
    *key = static_cast<std::uint32_t>(local);
    return accumulated;
  }
};

/// The most ids one backward takes (positions are 32-bit in the sort).
inline constexpr std::int64_t kMaxIds = (std::int64_t{1} << 31) - 1;
/// The most rows (table + padding) one backward writes (keys are 32-bit, one value kept apart).
inline constexpr std::int64_t kMaxRows = (std::int64_t{1} << 31) - 1;
/// The most columns of a GPU backward: 65535 blocks of 128 threads, one column each on the
/// narrowest path.
inline constexpr std::int64_t kMaxGpuCols = std::int64_t{65535} * 128;

}  // namespace tpembed::gradient
