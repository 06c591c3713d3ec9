#include "op/owned_rows.hpp"

#include "core/ids.hpp"

#include <algorithm>

namespace tpembed::op {

OwnedRowsPlan plan_owned_rows(const void* ids, DType id_dtype, std::int64_t num_ids, const ShardLayout& layout,
                              const std::vector<int>& tp_rank_of_member, int my_member) {
  const int tp = layout.tp_size;
  std::vector<int> member_of_tp_rank(static_cast<std::size_t>(tp));
  for (int m = 0; m < tp; ++m) member_of_tp_rank[static_cast<std::size_t>(tp_rank_of_member[static_cast<std::size_t>(m)])] = m;

  OwnedRowsPlan plan;
  plan.row_counts.assign(static_cast<std::size_t>(tp), 0);
  plan.positions.resize(static_cast<std::size_t>(num_ids));
  std::vector<std::int64_t> owner(static_cast<std::size_t>(num_ids), -1), index(static_cast<std::size_t>(num_ids), 0);
  for (std::int64_t t = 0; t < num_ids; ++t) {
    const std::int64_t id = id_at(ids, id_dtype, t);
    if (id < 0 || id >= layout.valid_ids()) {
      ++plan.bad_ids;
      continue;
    }
    // Shards are contiguous in tp-rank order: the owner is the last one starting at or before id.
    const auto next = std::upper_bound(layout.offsets.begin(), layout.offsets.end(), id);
    const int tp_rank = static_cast<int>(next - layout.offsets.begin()) - 1;
    const int member = member_of_tp_rank[static_cast<std::size_t>(tp_rank)];
    owner[static_cast<std::size_t>(t)] = member;
    index[static_cast<std::size_t>(t)] = plan.row_counts[static_cast<std::size_t>(member)]++;
    if (member == my_member) plan.my_ids.push_back(id);
  }
  std::vector<std::int64_t> first_row(static_cast<std::size_t>(tp), 0);
  for (int m = 1; m < tp; ++m) {
    first_row[static_cast<std::size_t>(m)] = first_row[static_cast<std::size_t>(m - 1)] + plan.row_counts[static_cast<std::size_t>(m - 1)];
  }
  for (std::int64_t t = 0; t < num_ids; ++t) {
    const std::int64_t member = owner[static_cast<std::size_t>(t)];
    plan.positions[static_cast<std::size_t>(t)] =
        member < 0 ? -1 : first_row[static_cast<std::size_t>(member)] + index[static_cast<std::size_t>(t)];
  }
  return plan;
}

}  // namespace tpembed::op
