// The owned-row exchange of a vocab-parallel lookup: every token's row comes from the one rank that
// owns its id. Planned on the host from the ids, which every rank of the group holds.
#pragma once

#include <cstdint>
#include <vector>

#include "tpembed/parallel_embedding.hpp"

namespace tpembed::op {

/// Who sends which rows, the same on every rank of the group.
struct OwnedRowsPlan {
  std::vector<std::int64_t> row_counts;  ///< Rows each group member contributes, by group rank.
  std::vector<std::int64_t> my_ids;      ///< The ids this member owns, in token order.
  std::vector<std::int64_t> positions;   ///< Per token: its row in the gathered rows, -1 for bad ids.
  std::uint64_t bad_ids = 0;             ///< Tokens whose id is out of range.
};

/// Plans the exchange for `num_ids` host ids of `id_dtype` (i32/i64). `tp_rank_of_member[m]` is the
/// tp rank (shard) of group member m; `my_member` is this rank's group rank.
OwnedRowsPlan plan_owned_rows(const void* ids, DType id_dtype, std::int64_t num_ids, const ShardLayout& layout,
                              const std::vector<int>& tp_rank_of_member, int my_member);

}  // namespace tpembed::op
